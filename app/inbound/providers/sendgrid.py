"""SendGrid Inbound Parse, both the parsed fields and the raw (``email``) mode."""

from __future__ import annotations

from contextlib import suppress
from functools import partial
from inspect import cleandoc
from typing import Any

from app.config import Settings
from app.inbound import openapi
from app.inbound.errors import MalformedMessage
from app.inbound.message import header_items, parse_from
from app.inbound.model import InboundEmail
from app.inbound.multipart import Form
from app.inbound.normalise import MISSING, envelope_sender, normalise
from app.inbound.providers.base import (
    Envelope,
    FormProvider,
    attachment_from_part,
    field,
    first_header,
    json_field,
    parse_raw,
    read_bytes,
    run_parser,
    with_trusted_results,
)

PROVIDER = "sendgrid"


def _envelope(form: Form) -> tuple[tuple[str, ...], str | None]:
    envelope = json_field(form, "envelope")
    if not isinstance(envelope, dict):
        raise MalformedMessage("envelope is missing or not a JSON object")
    to = envelope.get("to") or []
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list):
        raise MalformedMessage("envelope.to is not a list")
    sender = envelope.get("from")
    if not isinstance(sender, str):
        # No envelope sender given at all is not a null sender ("<>"): see normalise.
        return tuple(str(t) for t in to if t), MISSING
    return tuple(str(t) for t in to if t), envelope_sender(sender)


def parse_fields(form: Form, settings: Settings) -> InboundEmail:
    recipients, sender = _envelope(form)
    charsets = json_field(form, "charsets") or {}
    if not isinstance(charsets, dict):
        charsets = {}

    def text_field(name: str) -> str | None:
        charset = charsets.get(name)
        return field(form, name, charset if isinstance(charset, str) else "utf-8")

    block = text_field("headers")
    headers = header_items(block) if block else ()
    from_address, from_name = parse_from(text_field("from"))
    info = json_field(form, "attachment-info") or {}
    info = info if isinstance(info, dict) else {}
    cids = json_field(form, "content-ids") or {}
    cid_of = {str(v): str(k) for k, v in cids.items()} if isinstance(cids, dict) else {}
    attachments = []
    for index, part in enumerate(form.files(), start=1):
        found = info.get(part.name)
        meta: dict[str, Any] = found if isinstance(found, dict) else {}
        content_id = cid_of.get(part.name) or meta.get("content-id") or None
        attachments.append(
            attachment_from_part(
                part, index, content_id=content_id, content_type=meta.get("type") or None
            )
        )
    return normalise(
        provider=PROVIDER,
        recipients=recipients,
        envelope_from=sender,
        from_address=from_address,
        from_name=from_name,
        subject=text_field("subject"),
        text=text_field("text"),
        html=text_field("html"),
        message_id_header=first_header(headers, "message-id"),
        headers=headers,
        attachments=attachments,
        content_type_header=first_header(headers, "content-type"),
        size_bytes=sum(p.size for p in form.parts),
        spf=field(form, "SPF"),
        dkim=field(form, "dkim"),
    )


async def parse_raw_form(form: Form, settings: Settings) -> InboundEmail:
    """Raw mode: the message in ``email``."""
    raw = form.get("email")
    assert raw is not None  # noqa: S101
    recipients, sender = _envelope(form)
    email = await parse_raw(
        await read_bytes(raw),
        provider=PROVIDER,
        recipients=recipients,
        envelope_from=sender,
        max_attachment_bytes=settings.max_attachment_bytes,
        spf=field(form, "SPF"),
        dkim=field(form, "dkim"),
    )
    # SendGrid's own SPF and dkim fields win; trusted Authentication-Results fill the rest.
    return with_trusted_results(email, settings)


class SendGrid(FormProvider):
    name = PROVIDER
    path = "/sendgrid"
    operation_id = "receive_sendgrid"
    openapi = openapi.SENDGRID
    refused_code = 200
    rate_limited_code = 503
    description = cleandoc(
        """SendGrid Inbound Parse, parsed or raw (`email`) mode, with HTTP basic auth in the URL.

        Routed on `envelope.to`. Refusals answer 200 (SendGrid retries anything else); rate
        limiting answers 503, which SendGrid retries."""
    )

    async def parse(self, form: Form, settings: Settings, envelope: Envelope) -> InboundEmail:
        with suppress(MalformedMessage):  # refused while parsing, for want of a recipient
            envelope.record(*_envelope(form))
        if form.get("email") is None:
            return await run_parser(form, partial(parse_fields, form, settings))
        return await parse_raw_form(form, settings)
