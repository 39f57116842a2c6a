"""A raw RFC 5322 message from an MTA (the relay command), recipients in the query or a header."""

from __future__ import annotations

from inspect import cleandoc

from fastapi import Request

from app.config import Settings
from app.inbound import openapi
from app.inbound.errors import MalformedMessage
from app.inbound.message import parse_mime
from app.inbound.model import InboundEmail
from app.inbound.normalise import MISSING, envelope_sender
from app.inbound.providers.base import BodyProvider, Envelope, with_trusted_results

PROVIDER = "mime"


def read_envelope(request: Request) -> tuple[tuple[str, ...], str | None]:
    """The envelope recipients (``recipient``, repeatable, or ``X-Envelope-To``) and sender
    (``sender`` or ``X-Envelope-From``; MISSING when neither is given: not a null sender)."""
    recipients = list(request.query_params.getlist("recipient"))
    for value in request.headers.getlist("x-envelope-to"):
        recipients.extend(v.strip() for v in value.split(","))
    sender = request.query_params.get("sender", request.headers.get("x-envelope-from"))
    found = tuple(r for r in recipients if r.strip())
    return found, MISSING if sender is None else envelope_sender(sender)


class Mime(BodyProvider):
    name = PROVIDER
    path = "/mime"
    operation_id = "receive_mime"
    openapi = openapi.MIME
    refused_code = 422
    rate_limited_code = 429
    description = cleandoc(
        """A raw RFC 5322 message from an MTA (`python -m app relay`), with HTTP basic auth.

        The envelope recipients are required: `recipient` (repeated) or `X-Envelope-To`. Refusals
        answer 422 (the relay command bounces, except for `auto_reply` and `sender_not_allowed`)."""
    )

    def authenticate(self, request: Request, settings: Settings, envelope: Envelope) -> None:
        """Basic auth; the envelope is in the request's query or headers, known at once."""
        super().authenticate(request, settings, envelope)
        envelope.record(*read_envelope(request))

    def parse(
        self, request: Request, raw: bytes, settings: Settings, envelope: Envelope
    ) -> InboundEmail:
        recipients, sender = read_envelope(request)
        if not recipients:
            raise MalformedMessage(
                "the envelope recipient is required (recipient or X-Envelope-To)"
            )
        email = parse_mime(
            raw,
            provider=PROVIDER,
            recipients=recipients,
            envelope_from=sender,
            max_attachment_bytes=settings.max_attachment_bytes,
        )
        return with_trusted_results(email, settings)
