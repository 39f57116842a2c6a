"""``POST /inbound/...``: one endpoint per provider, each answering in its provider's terms."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from app.api.body_limit import BodyTooLarge
from app.api.problems import problem_response, responses
from app.config import Settings
from app.inbound import openapi as docs
from app.inbound.errors import MalformedMessage, MessageTooComplex
from app.inbound.model import InboundEmail, storable, storable_text
from app.inbound.multipart import FormTooComplex, MalformedBody, PayloadTooLarge
from app.inbound.providers import mailgun, mime, postmark, sendgrid
from app.inbound.providers.base import MISSING, EndpointDisabled, InvalidCredentials, form_of
from app.inbound.service import DeliveryOutcome, InboundService, InfrastructureFailure
from app.models import DeliveryStatus, RejectionReason

logger = logging.getLogger("mailslot.inbound")

router = APIRouter(prefix="/inbound", tags=["inbound"])

# Refused for good, rate limited: each provider's code (DESIGN.md "Inbound webhooks").
REFUSED = {"mailgun": 406, "sendgrid": 200, "postmark": 403, "mime": 422}
RATE_LIMITED = {"mailgun": 429, "sendgrid": 503, "postmark": 429, "mime": 429}
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


def _context(request: Request) -> tuple[Settings, InboundService]:
    """The settings and the service (read from the app's state: no dependency to solve)."""
    state = request.app.state
    return state.settings, InboundService(state.sessionmaker, state.blobs, state.settings)


def retry_after(settings: Settings, now: float | None = None) -> int:
    """Seconds until the next rate-limit window starts: no retry can be accepted before then."""
    moment = int(time.time() if now is None else now)
    waits = [limit.seconds - moment % limit.seconds for limit in settings.rate_limits]
    return max(1, min(waits, default=DEFAULT_RETRY_AFTER_SECONDS))


def answer(
    provider: str, outcomes: Sequence[DeliveryOutcome], settings: Settings | None = None
) -> JSONResponse:
    """Retryable if any outcome is; else 200 if any was accepted; else the refusal code.

    A rate-limited answer says when to retry (``Retry-After``), whatever its status code.
    """
    statuses = {o.status for o in outcomes}
    reason = next((o.reason for o in outcomes if o.reason), None)
    headers: dict[str, str] | None = None
    if DeliveryStatus.failed in statuses:
        code, status = 500, DeliveryStatus.failed
    elif DeliveryStatus.rate_limited in statuses:
        code, status = RATE_LIMITED[provider], DeliveryStatus.rate_limited
        seconds = retry_after(settings) if settings else DEFAULT_RETRY_AFTER_SECONDS
        headers = {"Retry-After": str(seconds)}
    elif DeliveryStatus.accepted in statuses:
        code, status, reason = 200, DeliveryStatus.accepted, None
    elif DeliveryStatus.duplicate in statuses:
        code, status, reason = 200, DeliveryStatus.duplicate, None
    else:
        status = DeliveryStatus.rejected
        code = 200 if all(o.probe for o in outcomes) else REFUSED[provider]
    body = InboundAnswer(
        status=status,
        reason=reason,
        post_ids=[str(o.post_id) for o in outcomes if o.post_id],
        delivery_ids=[str(o.delivery_id) for o in outcomes if o.delivery_id],
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=code, headers=headers)


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


def _failure(status: int, reason: str) -> JSONResponse:
    body = InboundAnswer(status=DeliveryStatus.failed, reason=reason, post_ids=[], delivery_ids=[])
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


async def receive(
    provider: str,
    service: InboundService,
    settings: Settings,
    read: Callable[[], Awaitable[InboundEmail]],
    envelope: Callable[[], tuple[tuple[str, ...], str | None]] | None = None,
) -> Response:
    """Authenticate and read (``read`` raises for bad input), then deliver and answer."""
    try:
        email = await read()
        if len(email.recipients) > MAX_ENVELOPE_RECIPIENTS:
            raise MessageTooComplex(f"more than {MAX_ENVELOPE_RECIPIENTS} envelope recipients")
    except EndpointDisabled:
        return problem_response(404, detail="This inbound endpoint is not configured.")
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
    except (MalformedBody, MalformedMessage, MessageTooComplex) as exc:
        return await _refuse(provider, service, settings, envelope, exc)
    except InfrastructureFailure:
        return _failure(503, "unavailable")
    except OSError as exc:
        logger.warning("spooling an inbound %s request failed: %s", provider, exc)
        return _failure(503, "unavailable")
    except Exception:  # a bug of ours while reading: the provider keeps the mail and retries
        logger.exception("reading an inbound %s request failed", provider)
        return _failure(500, "internal_error")
    try:
        outcomes = await service.deliver(storable(email))
    except InfrastructureFailure:
        logger.warning("inbound %s delivery could not be stored; answering 503", provider)
        return _failure(503, "unavailable")
    return answer(provider, outcomes, settings)


async def _refuse(
    provider: str,
    service: InboundService,
    settings: Settings,
    envelope: Callable[[], tuple[tuple[str, ...], str | None]] | None,
    exc: Exception,
) -> Response:
    """Record an authenticated payload refused for good, and answer the provider's code."""
    reason = (
        RejectionReason.message_too_complex
        if isinstance(exc, MessageTooComplex | FormTooComplex)
        else RejectionReason.malformed_message
    )
    recipients, sender = envelope() if envelope else ((), None)
    recipients = tuple(storable_text(r) for r in _bounded(recipients, settings))
    sender = None if sender is None else storable_text(sender)
    try:
        outcomes = await service.refuse(
            provider, reason, storable_text(str(exc)), recipients, sender
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


def _status_docs(provider: str, www_authenticate: str) -> dict[int | str, dict[str, Any]]:
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
            + ("; refusals too (see `reason`)." if REFUSED[provider] == 200 else "."),
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
                "schema": {"type": "string", "examples": [www_authenticate]},
            }
        },
    }
    docs[404] = {**docs[404], "description": "The endpoint's secret is not configured."}
    if REFUSED[provider] != 200:
        docs[REFUSED[provider]] = answered(
            "rejected", refused, "Refused for good (see `reason`): not retried."
        )
    limited = RATE_LIMITED[provider]
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


@router.post(
    "/mailgun",
    status_code=200,
    response_model=None,
    responses=_status_docs("mailgun", "Mailgun"),
    openapi_extra=docs.MAILGUN,
)
async def receive_mailgun(request: Request) -> Response:
    """Mailgun route `forward()`, parsed fields (urlencoded, or multipart with attachments).

    Authenticated by the Mailgun signature in the body (see the request body). Routed on
    `recipient`. Refusals answer 406, which stops Mailgun's retries."""
    return await _mailgun(request, mime=False)


@router.post(
    "/mailgun/mime",
    status_code=200,
    response_model=None,
    responses=_status_docs("mailgun", "Mailgun"),
    openapi_extra=docs.MAILGUN_MIME,
)
async def receive_mailgun_mime(request: Request) -> Response:
    """Mailgun route `forward()` to a URL ending in `mime`: the raw message in `body-mime`.

    Authenticated by the Mailgun signature in the body (see the request body). Routed on
    `recipient`. Refusals answer 406, which stops Mailgun's retries."""
    return await _mailgun(request, mime=True)


async def _mailgun(request: Request, *, mime: bool) -> Response:
    settings, service = _context(request)
    try:
        mailgun.check_enabled(settings)
    except EndpointDisabled:
        return problem_response(404, detail="This inbound endpoint is not configured.")
    holder: dict[str, Any] = {}
    # The signature is checked as soon as its fields arrive, before the rest is read.
    gate = mailgun.SignatureGate(settings, mime=mime)

    async def read() -> InboundEmail:
        try:
            async with form_of(request, settings, gate) as form:
                mailgun.verify(form, settings)  # the last values, now that all is read
                holder["verified"] = True
                holder["envelope"] = (mailgun.recipients(form), mailgun.envelope_from(form))
                email = await mailgun.read(request, settings, form, mime=mime)
                return await service.keep_attachments(email)
        except MalformedBody as exc:
            if holder.get("verified"):
                raise
            # Not even a form: nothing here can carry a signature, so nothing is recorded.
            raise InvalidCredentials(
                "The request is not a signed Mailgun form.", "Mailgun"
            ) from exc

    def envelope() -> tuple[tuple[str, ...], str | None]:
        found: tuple[tuple[str, ...], str | None] | None = holder.get("envelope")
        return found if found is not None else gate.recipients_and_sender()

    return await receive("mailgun", service, settings, read, envelope)


@router.post(
    "/sendgrid",
    status_code=200,
    response_model=None,
    responses=_status_docs("sendgrid", "Basic"),
    openapi_extra=docs.SENDGRID,
)
async def receive_sendgrid(request: Request) -> Response:
    """SendGrid Inbound Parse, parsed or raw (`email`) mode, with HTTP basic auth in the URL.

    Routed on `envelope.to`. Refusals answer 200 (SendGrid retries anything else); rate
    limiting answers 503, which SendGrid retries."""
    settings, service = _context(request)
    holder: dict[str, Any] = {}

    async def read() -> InboundEmail:
        sendgrid.check(request, settings)
        async with form_of(request, settings) as form:
            try:
                recipients, sender = sendgrid._envelope(form)
                holder["envelope"] = (recipients, None if sender == MISSING else sender)
            except MalformedMessage:
                holder["envelope"] = ((), None)
            email = await sendgrid.read(request, settings, form)
            return await service.keep_attachments(email)

    return await receive(
        "sendgrid", service, settings, read, lambda: holder.get("envelope", ((), None))
    )


@router.post(
    "/postmark",
    status_code=200,
    response_model=None,
    responses=_status_docs("postmark", "Basic"),
    openapi_extra=docs.POSTMARK,
)
async def receive_postmark(request: Request) -> Response:
    """Postmark inbound JSON, with HTTP basic auth in the webhook URL.

    Routed on `OriginalRecipient`. Refusals answer 403, which stops Postmark's retries; its
    "Check" button (no recipient of ours) is answered 200."""
    settings, service = _context(request)
    holder: dict[str, Any] = {}

    async def read() -> InboundEmail:
        postmark.check(request, settings)
        return await postmark.read(request, settings, holder)

    return await receive(
        "postmark", service, settings, read, lambda: holder.get("envelope", ((), None))
    )


@router.post(
    "/mime",
    status_code=200,
    response_model=None,
    responses=_status_docs("mime", "Basic"),
    openapi_extra=docs.MIME,
)
async def receive_mime(request: Request) -> Response:
    """A raw RFC 5322 message from an MTA (`python -m app relay`), with HTTP basic auth.

    The envelope recipients are required: `recipient` (repeated) or `X-Envelope-To`. Refusals
    answer 422 (the relay command bounces, except for `auto_reply` and `sender_not_allowed`)."""
    settings, service = _context(request)

    async def read() -> InboundEmail:
        mime.check(request, settings)
        return await mime.read(request, settings)

    def envelope() -> tuple[tuple[str, ...], str | None]:
        recipients, sender = mime.envelope(request)
        return recipients, None if sender == MISSING else sender

    return await receive("mime", service, settings, read, envelope)
