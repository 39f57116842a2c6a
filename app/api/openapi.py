"""The OpenAPI document: FastAPI's, plus what FastAPI cannot infer (servers, tags, the `Problem`
component, the problem answers every operation shares, examples) so that clients generated
from it type-check the real flows."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.problems import PROBLEM_MEDIA_TYPE, Problem, ProblemCode, problem_doc
from app.events.openapi import SECURITY_SCHEME as EVENT_SECURITY_SCHEME
from app.events.openapi import schemas as event_schemas
from app.inbound.openapi import TAG_DESCRIPTION as INBOUND_TAG_DESCRIPTION

SCHEMAS = "#/components/schemas/"

SERVERS = [
    {"url": "/", "description": "Where this spec is served from (any mailslot deployment)."},
    {"url": "http://127.0.0.1:8000", "description": "`make run` (development)."},
]

TAGS = [
    {"name": "health", "description": "Liveness and readiness probes; no credentials."},
    {"name": "inbound", "description": INBOUND_TAG_DESCRIPTION},
    {
        "name": "operator",
        "description": "Platforms (tenants) and mail that matched no integration: the operator "
        "token only. It reads no tenant content.",
    },
    {"name": "platform", "description": "The caller's platform: its plan, usage and settings."},
    {
        "name": "groups",
        "description": "Groups and their members. Admins see every group, others the groups "
        "they belong to; managers change their groups.",
    },
    {
        "name": "integrations",
        "description": "Integrations: a generated address bound to a group. Every mail to it "
        "becomes a post in that group. The plan caps how many a platform has.",
    },
    {
        "name": "posts",
        "description": "A group's feed: posts made from mail, newest first.",
    },
    {
        "name": "attachments",
        "description": "Attachment downloads, with a Bearer token or a signed URL.",
    },
    {
        "name": "deliveries",
        "description": "The delivery log: one entry per mail and integration, whatever became "
        "of it; failed deliveries can be replayed.",
    },
    {
        "name": "events",
        "description": "Events out (operator token): endpoints of the host platform that "
        "receive signed events (Standard Webhooks; the catalogue is under `webhooks`), their "
        "attempts, redelivery, and the events pulled in order.",
    },
]

SECURITY_SCHEMES = {
    "InboundBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "The inbound endpoints other than Mailgun's: user `INBOUND_USERNAME`, "
        "password any one of `INBOUND_PASSWORD` (comma-separated, for rotation). Put them in "
        "the webhook URL (`https://user:password@host/inbound/sendgrid`).",
    }
}

REQUEST_ID_HEADER = {
    "description": "The request's id: the proxy's `X-Request-ID` when it is 1 to 128 letters, "
    "digits and `._~:+/=-`, else one made for it. Every log line of the request names it.",
    "schema": {"type": "string", "examples": ["3f2b9c1d0a8e4f6b9d7c5a3e1f0b2d4c"]},
}

# The answers FastAPI's own validation adds: documented as the problems they are.
_FASTAPI_422 = {"HTTPValidationError", "ValidationError"}


def install(app: FastAPI) -> None:
    """Serve (and cache) the customised document as the app's OpenAPI spec."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        webhooks=app.webhooks.routes,
        servers=SERVERS,
        tags=TAGS,
        separate_input_output_schemas=app.separate_input_output_schemas,
    )
    spec = _name_pages(spec)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _add_problem(schemas)
    for name, schema in event_schemas().items():  # the bodies of the webhooks
        schemas.setdefault(name, schema)
    for schema in schemas.values():
        for example in schema.get("examples", []):
            restore_nulls(example, schema, schemas)
        _unwrap_descriptions(schema)
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    components["securitySchemes"].update(EVENT_SECURITY_SCHEME)
    components.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID_HEADER
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            _describe_path_parameters(operation)
            _problems(path, operation)
            _examples(operation, schemas)
            _request_id(operation)
    for item in spec.get("webhooks", {}).values():
        for operation in item.values():
            operation["responses"].pop("422", None)  # what the receiver answers is its own
    for name in _FASTAPI_422:
        schemas.pop(name, None)
    return spec


_GENERIC_PAGE = re.compile(r"^Page_(\w+?)(?:Read)?_$")


def _name_pages(spec: dict[str, Any]) -> dict[str, Any]:
    """`Page[PostRead]` is `PostPage` (pydantic names it `Page_PostRead_`)."""
    names = {
        name: _GENERIC_PAGE.sub(r"\1Page", name)
        for name in spec.get("components", {}).get("schemas", {})
        if _GENERIC_PAGE.match(name)
    }
    text = json.dumps(spec)
    for old, new in names.items():
        text = text.replace(f'"{SCHEMAS}{old}"', f'"{SCHEMAS}{new}"')
    renamed: dict[str, Any] = json.loads(text)
    schemas = renamed["components"]["schemas"]
    for old, new in names.items():
        schemas[new] = schemas.pop(old)
        schemas[new]["title"] = new
    return renamed


_LINE_BREAK = re.compile(r"(?<!\n)\n(?!\n)")


def _unwrap_descriptions(schema: dict[str, Any]) -> None:
    """Docstrings wrapped at 100 columns read as one line each in generated code."""
    for node in [schema, *schema.get("properties", {}).values()]:
        if isinstance(node.get("description"), str):
            node["description"] = _LINE_BREAK.sub(" ", node["description"])


PATH_PARAMETERS = {
    "platform_id": "The platform's id.",
    "group_id": "The group's id.",
    "user_id": "The member's user id (the `sub` of their tokens).",
    "integration_id": "The integration's id.",
    "post_id": "The post's id.",
    "attachment_id": "The attachment's id.",
    "delivery_id": "The delivery's id.",
    "endpoint_id": "The event endpoint's id.",
    "event_id": "The event's id (`evt_...`).",
}


def _describe_path_parameters(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path" and "description" not in parameter:
            parameter["description"] = PATH_PARAMETERS[parameter["name"]]


def _add_problem(schemas: dict[str, Any]) -> None:
    problem = Problem.model_json_schema(ref_template=SCHEMAS + "{model}", mode="serialization")
    for name, sub in problem.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    problem["properties"]["errors"].pop("default", None)  # present only when there are errors
    schemas["Problem"] = problem


def _problems(path: str, operation: dict[str, Any]) -> None:
    """The answers every operation of its kind gives, each listing its codes."""
    answers: dict[str, Any] = operation["responses"]
    if "422" in answers:
        codes = [ProblemCode.validation_error]
        if any(p.get("name") == "cursor" for p in operation.get("parameters", [])):
            codes.append(ProblemCode.invalid_cursor)
        answers["422"] = problem_doc(422, codes) if _is_problem(answers["422"]) else answers["422"]
    if path.startswith("/v1/"):
        body = operation.get("requestBody", {}).get("content", {})
        if "application/json" in body:
            answers["415"] = problem_doc(415, [ProblemCode.unsupported_media_type])
        if body:  # the body cap (MAX_API_BODY_BYTES), before anything else is read
            answers.setdefault("413", problem_doc(413, [ProblemCode.payload_too_large]))
        answers.setdefault("500", problem_doc(500, [ProblemCode.internal_error]))
        answers.setdefault("503", problem_doc(503, [ProblemCode.unavailable]))


def _request_id(operation: dict[str, Any]) -> None:
    """Every answer carries ``X-Request-ID`` (app.api.request_id)."""
    reference = {"$ref": "#/components/headers/X-Request-ID"}
    for status, response in operation["responses"].items():
        operation["responses"][status] = {
            **response,
            "headers": {**response.get("headers", {}), "X-Request-ID": reference},
        }


def _is_problem(response: dict[str, Any]) -> bool:
    """A problem answer, ours or FastAPI's default 422 (which the server answers as a problem)."""
    content = response.get("content", {})
    if PROBLEM_MEDIA_TYPE in content:
        return True
    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    return ref.removeprefix(SCHEMAS) in _FASTAPI_422


def _examples(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """At least one example per request and response body, from the schemas' own examples."""
    bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
    for body in bodies:
        for media in body.get("content", {}).values():
            if "example" in media and "schema" in media:
                restore_nulls(media["example"], media["schema"], schemas)
            elif "examples" not in media and "schema" in media:
                media["example"] = example_of(media["schema"], schemas)


_FORMAT_EXAMPLES = {
    "uuid": "911a1c35-9e0d-4ca7-91e0-dbae774dd041",
    "date-time": "2026-11-28T19:05:58Z",
    "binary": "...",
}
_TYPE_EXAMPLES: dict[str, Any] = {
    "string": "string",
    "integer": 0,
    "number": 0,
    "boolean": True,
    "null": None,
}


def example_of(schema: dict[str, Any], schemas: dict[str, Any]) -> Any:
    """An example value of a schema: its own examples first, else one built from its parts."""
    if "$ref" in schema:
        return example_of(schemas[schema["$ref"].removeprefix(SCHEMAS)], schemas)
    for key in ("examples", "enum"):
        if schema.get(key):
            return copy.deepcopy(schema[key][0])
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema or "oneOf" in schema:
        variants = schema.get("anyOf") or schema.get("oneOf") or []
        real = [v for v in variants if v.get("type") != "null"] or variants
        return example_of(real[0], schemas)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(example_of(part, schemas))
        return merged
    if schema.get("type") == "array":
        return [example_of(schema.get("items", {}), schemas)]
    if "properties" in schema:
        return {name: example_of(sub, schemas) for name, sub in schema["properties"].items()}
    if schema.get("format") in _FORMAT_EXAMPLES:
        return _FORMAT_EXAMPLES[schema["format"]]
    return _TYPE_EXAMPLES.get(schema.get("type", "string"), "string")


def restore_nulls(example: Any, schema: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Put back the `null` members of an example (FastAPI drops every None of the document)."""
    if "$ref" in schema:
        restore_nulls(example, schemas[schema["$ref"].removeprefix(SCHEMAS)], schemas)
        return
    variants = [v for v in schema.get("anyOf", []) if v.get("type") != "null"]
    if variants:
        for variant in variants:
            restore_nulls(example, variant, schemas)
        return
    if isinstance(example, list) and "items" in schema:
        for item in example:
            restore_nulls(item, schema["items"], schemas)
    elif isinstance(example, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name in example:
                restore_nulls(example[name], sub, schemas)
            elif name in schema.get("required", []):
                example[name] = None
