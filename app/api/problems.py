"""Every error answer is ``application/problem+json`` (RFC 9457) with a stable ``code``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.api.headers import security_headers
from app.errors import AppError
from app.logging import FIELDS
from app.observability.context import SCOPE_KEY

logger = logging.getLogger("mailslot.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"

HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Unauthenticated"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_error", "Validation error"),
    429: ("rate_limited", "Rate limited"),
    500: ("internal_error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


class ProblemCode(StrEnum):
    """The stable codes of problem documents: programs branch on these, never on `title`."""

    bad_request = "bad_request"
    unauthenticated = "unauthenticated"
    forbidden = "forbidden"
    not_found = "not_found"
    method_not_allowed = "method_not_allowed"
    conflict = "conflict"
    plan_limit_reached = "plan_limit_reached"
    not_replayable = "not_replayable"
    content_expired = "content_expired"
    payload_too_large = "payload_too_large"
    unsupported_media_type = "unsupported_media_type"
    validation_error = "validation_error"
    invalid_cursor = "invalid_cursor"
    rate_limited = "rate_limited"
    internal_error = "internal_error"
    unavailable = "unavailable"


# The status of each code (HTTP_CODES gives each status's default code).
CODE_STATUS: dict[str, int] = {code: status for status, (code, _) in HTTP_CODES.items()} | {
    ProblemCode.plan_limit_reached: 409,
    ProblemCode.not_replayable: 409,
    ProblemCode.content_expired: 409,
    ProblemCode.invalid_cursor: 422,
}
# Codes whose problems have a title of their own (app.errors).
CODE_TITLES: dict[str, str] = {
    ProblemCode.plan_limit_reached: "Plan limit reached",
    ProblemCode.not_replayable: "Not replayable",
    ProblemCode.content_expired: "Content expired",
    ProblemCode.invalid_cursor: "Invalid cursor",
}
CODE_MEANINGS: dict[str, str] = {
    ProblemCode.bad_request: "The request cannot be read.",
    ProblemCode.unauthenticated: "No valid credentials.",
    ProblemCode.forbidden: "The caller sees the resource but may not do this.",
    ProblemCode.not_found: "No such resource, or one the caller may not see.",
    ProblemCode.method_not_allowed: "The path does not serve this method (see `Allow`).",
    ProblemCode.conflict: "The resource already exists.",
    ProblemCode.plan_limit_reached: "The platform's plan allows no more integrations.",
    ProblemCode.not_replayable: "Only a `failed` delivery, or a `rejected` one whose mail was read "
    "and routed, is replayed.",
    ProblemCode.content_expired: "The delivery's kept content was purged "
    "(`DELIVERY_RETENTION_DAYS`): it cannot be replayed.",
    ProblemCode.payload_too_large: "The request is over `MAX_REQUEST_BYTES`.",
    ProblemCode.unsupported_media_type: "The body must be `application/json`.",
    ProblemCode.validation_error: "Invalid fields: `errors` names each one.",
    ProblemCode.invalid_cursor: "The `cursor` is not one this list gave.",
    ProblemCode.rate_limited: "Too many requests: retry after `Retry-After` seconds.",
    ProblemCode.internal_error: "A bug of ours; the request had no effect.",
    ProblemCode.unavailable: "The database or the disk failed: retry later.",
}


class FieldError(BaseModel):
    """One failing field of a `validation_error`."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    loc: list[str | int]
    """Where: `body`, `query`, `path` or `header`, then the path to the field."""
    msg: str
    """What is wrong, for people."""
    type: str
    """What is wrong, for programs (pydantic's error type, or `null`, `json_invalid`)."""


class Problem(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`); `code` is stable and meant for
    programs."""

    model_config = ConfigDict(
        extra="allow",
        use_attribute_docstrings=True,
        json_schema_extra={
            "required": ["type", "title", "status", "detail", "code"],
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Plan limit reached",
                    "status": 409,
                    "detail": "The essentials plan allows 3 integrations.",
                    "code": "plan_limit_reached",
                }
            ],
        },
    )

    type: str = "about:blank"
    """Always `about:blank`: `code` says what happened."""
    title: str
    """A short summary of the kind of problem, for people."""
    status: int
    """The HTTP status code."""
    detail: str
    """What happened in this case, for people."""
    code: ProblemCode
    """The stable code."""
    errors: list[FieldError] | SkipJsonSchema[None] = None
    """Only in `validation_error`: the failing fields."""


def problem_response(
    status: int,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    default_code, default_title = HTTP_CODES.get(
        status, ("bad_request", "Bad request") if status < 500 else ("internal_error", "Error")
    )
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or default_title,
        "status": status,
        "detail": detail or title or default_title,
        "code": code or default_code,
        **extra,
    }
    return JSONResponse(
        jsonable_encoder(body), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    exc = cast(AppError, exc)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return problem_response(exc.status, exc.code, exc.title, exc.detail, headers, **exc.extra)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)
    errors = [
        {
            "loc": list(err.get("loc", ())),
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
    return problem_response(
        422, detail=f"Invalid fields: {fields}" if fields else None, errors=errors
    )


# FastAPI's answer to a body it cannot even decode as JSON (bytes that are not UTF-8): a bare 400.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        # An invalid body like malformed JSON, which FastAPI answers 422: one contract for both.
        error = {"loc": ["body"], "msg": "The body is not UTF-8 JSON.", "type": "json_invalid"}
        return problem_response(422, detail="Invalid fields: body", errors=[error])
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if detail in {"Not Found", "Method Not Allowed"}:
        detail = None
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(exc.status_code, detail=detail, headers=headers or None)


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (Starlette names only the first)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):  # included routers' routes too
        if route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return sorted(methods, key=lambda m: (*_METHOD_ORDER, m).index(m))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Answered by the outermost layer, past the middleware that adds these to every answer.
    headers = security_headers(request.url.path)
    record = request.scope.get(SCOPE_KEY)
    request_id = getattr(record, "request_id", None)
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    logger.exception(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={FIELDS: {"request_id": request_id}},
    )
    return problem_response(500, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def responses(*answers: int | str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the problem answers an endpoint may give: a status stands for
    its default code (`404`: `not_found`), a code for itself (`"plan_limit_reached"`: 409)."""
    codes: dict[int, list[str]] = {}
    for answer in answers:
        status, code = (
            (answer, HTTP_CODES[answer][0])
            if isinstance(answer, int)
            else (CODE_STATUS[answer], answer)
        )
        if code not in codes.setdefault(status, []):
            codes[status].append(code)
    return {status: problem_doc(status, listed) for status, listed in codes.items()}


# Response headers of problem answers, by status.
PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with (`Bearer` on `/v1`).",
            "schema": {"type": "string", "examples": ["Bearer"]},
        }
    },
    405: {
        "Allow": {
            "description": "Every method the path serves.",
            "schema": {"type": "string", "examples": ["GET, POST"]},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer", "minimum": 1, "examples": [60]},
        }
    },
}


def problem_doc(status: int, codes: Sequence[str]) -> dict[str, Any]:
    """One problem answer: its codes listed in the schema (so clients can narrow on `code`)."""
    title = HTTP_CODES[status][1]
    schema = {
        "allOf": [{"$ref": "#/components/schemas/Problem"}],
        "type": "object",
        "properties": {"code": {"type": "string", "enum": codes}},
        "required": ["code"],
    }
    example = {
        "type": "about:blank",
        "title": CODE_TITLES.get(codes[0], title),
        "status": status,
        "detail": CODE_MEANINGS[codes[0]],
        "code": codes[0],
    }
    if codes[0] == ProblemCode.validation_error:
        example["detail"] = "Invalid fields: body.title"
        example["errors"] = [
            {
                "loc": ["body", "title"],
                "msg": "Value error, must not be blank",
                "type": "value_error",
            }
        ]
    doc: dict[str, Any] = {
        "description": f"{title}. "
        + " ".join(f"`{code}`: {CODE_MEANINGS[code]}" for code in codes),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": schema, "example": example}},
    }
    if status in PROBLEM_HEADERS:
        doc["headers"] = PROBLEM_HEADERS[status]
    return doc
