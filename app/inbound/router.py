"""``POST /inbound/...``: one endpoint per provider of the registry (``app.inbound.providers``),
all served by one ``receive``: read and authenticate (the provider), deliver (the service), and
answer in the provider's terms (its column of DESIGN.md's table)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from app.api.body_limit import BodyTooLarge
from app.api.problems import problem_response, responses
from app.config import Settings
from app.inbound.errors import (
    EndpointDisabled,
    FormTooComplex,
    InfrastructureFailure,
    InvalidCredentials,
    MessageTooComplex,
    PayloadTooLarge,
    Refusal,
)
from app.inbound.model import storable, storable_text
from app.inbound.providers import PROVIDERS
from app.inbound.providers.base import Envelope, Provider
from app.inbound.service import DeliveryOutcome, InboundService
from app.models import DeliveryStatus, RejectionReason
from app.observability import context

logger = logging.getLogger("mailslot.inbound")

router = APIRouter(prefix="/inbound", tags=["inbound"])

# Envelope recipients are bounded like To/Cc (app.inbound.limits): each one is looked up, and a
# database bounds the parameters of one query (asyncpg: 32,767). More is message_too_complex.
MAX_ENVELOPE_RECIPIENTS = 500
# Retry-After of a rate-limited answer when no window is configured.
DEFAULT_RETRY_AFTER_SECONDS = 60


ACCEPTED_EXAMPLE: dict[str, Any] = {
    "status": "accepted",
    "reason": None,
    "post_ids": ["3f0c2a9e-8a34-4d5e-9a57-0f1d1c4b2a10"],
    "delivery_ids": ["5a1e7c3b-9d2f-4b6a-8e0c-7f1a2b3c4d5e"],
}


class InboundAnswer(BaseModel):
    """What an authenticated inbound request is answered, whatever the status code."""

    model_config = ConfigDict(
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [ACCEPTED_EXAMPLE]},
    )

    status: DeliveryStatus
    """What became of the mail (the most retryable outcome when it named several addresses)."""
    reason: RejectionReason | Literal["rate_limited", "unavailable", "internal_error"] | None
    """Why it was not posted: a refusal reason, `rate_limited`, or, for our own failures,
    `unavailable` (503) or `internal_error` (500); null when accepted."""
    post_ids: list[str]
    """The posts made (one per integration the mail reached)."""
    delivery_ids: list[str]
    """The delivery log entries written."""


def retry_after(settings: Settings, now: float | None = None) -> int:
    """Seconds until the next rate-limit window starts: no retry can be accepted before then."""
    moment = int(time.time() if now is None else now)
    waits = [limit.seconds - moment % limit.seconds for limit in settings.rate_limits]
    return max(1, min(waits, default=DEFAULT_RETRY_AFTER_SECONDS))


def answer(
    provider: Provider, outcomes: Sequence[DeliveryOutcome], settings: Settings | None = None
) -> Response:
    """Retryable if any outcome is; else 200 if any was accepted; else the refusal code.

    A rate-limited answer says when to retry (``Retry-After``), whatever its status code.
    """
    statuses = {o.status for o in outcomes}
    reason = next((o.reason for o in outcomes if o.reason), None)
    headers: dict[str, str] | None = None
    if DeliveryStatus.failed in statuses:
        code, status = 500, DeliveryStatus.failed
    elif DeliveryStatus.rate_limited in statuses:
        code, status = provider.rate_limited_code, DeliveryStatus.rate_limited
        seconds = retry_after(settings) if settings else DEFAULT_RETRY_AFTER_SECONDS
        headers = {"Retry-After": str(seconds)}
    elif DeliveryStatus.accepted in statuses:
        code, status, reason = 200, DeliveryStatus.accepted, None
    elif DeliveryStatus.duplicate in statuses:
        code, status, reason = 200, DeliveryStatus.duplicate, None
    else:
        status = DeliveryStatus.rejected
        code = 200 if all(o.probe for o in outcomes) else provider.refused_code
    body = InboundAnswer(
        status=status,
        reason=reason,
        post_ids=[str(o.post_id) for o in outcomes if o.post_id],
        delivery_ids=[str(o.delivery_id) for o in outcomes if o.delivery_id],
    )
    return _json(body, code, headers, outcomes)


def _bounded(recipients: Sequence[str], settings: Settings) -> tuple[str, ...]:
    """At most MAX_ENVELOPE_RECIPIENTS of them, those at our domain first: a refusal is recorded
    for the integrations among these."""
    domain = "@" + (settings.inbound_domain or "")
    ours: list[str] = []
    others: list[str] = []
    for recipient in recipients:
        at_ours = recipient.strip().rstrip(">").strip().lower().endswith(domain)
        (ours if at_ours else others).append(recipient)
    return tuple((ours + others)[:MAX_ENVELOPE_RECIPIENTS])


def _failure(status: int, reason: str) -> Response:
    body = InboundAnswer(status=DeliveryStatus.failed, reason=reason, post_ids=[], delivery_ids=[])
    return _json(body, status)


def _json(
    body: InboundAnswer,
    status: int,
    headers: dict[str, str] | None = None,
    outcomes: Sequence[DeliveryOutcome] = (),
) -> Response:
    """The answer as JSON, serialised by pydantic in one step; what it says, and the outcomes it
    folds, are recorded on the request for its log line and metrics (app.observability)."""
    record = context.current()
    if record is not None:
        record.outcome, record.reason, record.outcomes = body.status, body.reason, outcomes
    return Response(
        body.model_dump_json(), status_code=status, headers=headers, media_type="application/json"
    )


async def receive(provider: Provider, request: Request) -> Response:
    """Authenticate and read (the provider raises the errors of app.inbound.errors), then
    deliver and answer."""
    state = request.app.state
    settings: Settings = state.settings
    record = context.current()
    if record is not None:
        record.provider = provider.name
    if not provider.enabled(settings):
        return problem_response(404, detail=EndpointDisabled().detail)
    service = InboundService(state.sessionmaker, state.blobs, settings)
    envelope = Envelope()
    try:
        email = await provider.read(request, settings, envelope, service.keep_attachments)
        if len(email.recipients) > MAX_ENVELOPE_RECIPIENTS:
            raise MessageTooComplex(f"more than {MAX_ENVELOPE_RECIPIENTS} envelope recipients")
    except EndpointDisabled as exc:
        return problem_response(404, detail=exc.detail)
    except InvalidCredentials as exc:
        return problem_response(401, detail=exc.detail, headers={"WWW-Authenticate": exc.scheme})
    except (PayloadTooLarge, BodyTooLarge):  # the reader's count, or BodyLimit's
        return problem_response(
            413, detail=f"The request is over {settings.max_request_bytes} bytes."
        )
    except FormTooComplex as exc:
        if not exc.authenticated:  # an anonymous body beyond the form's bounds: 413, no record
            return problem_response(413, detail=f"The request was refused: {exc.detail}.")
        return await _refuse(provider, service, settings, envelope, exc)
    except Refusal as exc:
        return await _refuse(provider, service, settings, envelope, exc)
    except InfrastructureFailure:
        return _failure(503, "unavailable")
    except OSError as exc:
        logger.warning("spooling an inbound %s request failed: %s", provider.name, exc)
        return _failure(503, "unavailable")
    except Exception:  # a bug of ours while reading: the provider keeps the mail and retries
        logger.exception("reading an inbound %s request failed", provider.name)
        return _failure(500, "internal_error")
    try:
        outcomes = await service.deliver(storable(email))
    except InfrastructureFailure:
        logger.warning("inbound %s delivery could not be stored; answering 503", provider.name)
        return _failure(503, "unavailable")
    return answer(provider, outcomes, settings)


async def _refuse(
    provider: Provider,
    service: InboundService,
    settings: Settings,
    envelope: Envelope,
    exc: Refusal,
) -> Response:
    """Record an authenticated payload refused for good, and answer the provider's code."""
    recipients = tuple(storable_text(r) for r in _bounded(envelope.recipients, settings))
    sender = None if envelope.sender is None else storable_text(envelope.sender)
    try:
        outcomes = await service.refuse(
            provider.name,
            RejectionReason(exc.reason),
            storable_text(str(exc)),
            recipients,
            sender,
        )
    except InfrastructureFailure:
        return _failure(503, "unavailable")
    return answer(provider, outcomes, settings)


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds until the next rate-limit window starts (when rate limited).",
        "schema": {"type": "integer", "minimum": 1, "examples": [60]},
    }
}


def _status_docs(provider: Provider) -> dict[int | str, dict[str, Any]]:
    """Every answer of one provider's endpoint (its column of the status table)."""

    def answered(status: str, reason: str | None, description: str) -> dict[str, Any]:
        example: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "post_ids": [],
            "delivery_ids": [],
        }
        if status == "accepted":
            example = ACCEPTED_EXAMPLE
        elif status != "failed" or reason == "internal_error":
            example["delivery_ids"] = ["5a1e7c3b-9d2f-4b6a-8e0c-7f1a2b3c4d5e"]
        return {
            "model": InboundAnswer,
            "description": description,
            "content": {"application/json": {"example": example}},
        }

    refused = "attachment_too_large"
    docs: dict[int | str, dict[str, Any]] = {
        200: answered(
            "accepted",
            None,
            "Accepted or a duplicate"
            + ("; refusals too (see `reason`)." if provider.refused_code == 200 else "."),
        ),
        **responses(401, 404, 413),
        500: answered("failed", "internal_error", "A bug of ours (`failed`, replayable): retried."),
        503: answered("failed", "unavailable", "Database or disk down (`unavailable`): retried."),
    }
    docs[401] = {
        **docs[401],
        "headers": {
            "WWW-Authenticate": {
                "description": "The scheme expected.",
                "schema": {"type": "string", "examples": [provider.scheme]},
            }
        },
    }
    docs[404] = {**docs[404], "description": "The endpoint's secret is not configured."}
    if provider.refused_code != 200:
        docs[provider.refused_code] = answered(
            "rejected", refused, "Refused for good (see `reason`): not retried."
        )
    limited = provider.rate_limited_code
    docs[limited] = {
        **answered(
            "rate_limited",
            "rate_limited",
            "Rate limited (`rate_limited`), with `Retry-After`"
            + ("; also our own failure (`unavailable`)." if limited == 503 else "."),
        ),
        "headers": _RETRY_AFTER,
    }
    return docs


def _endpoint(provider: Provider) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await receive(provider, request)

    return endpoint


for _provider in PROVIDERS:
    router.add_api_route(
        _provider.path,
        _endpoint(_provider),
        methods=["POST"],
        name=_provider.operation_id,
        description=_provider.description,
        status_code=200,
        response_model=None,
        responses=_status_docs(_provider),
        openapi_extra=_provider.openapi,
    )
