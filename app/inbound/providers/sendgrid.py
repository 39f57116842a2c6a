"""SendGrid Inbound Parse, both the parsed fields and the raw (``email``) mode."""

from __future__ import annotations

from email.parser import HeaderParser
from email.policy import default as default_policy
from functools import partial
from typing import Any

from fastapi import Request

from app.config import Settings
from app.inbound.errors import MalformedMessage
from app.inbound.html import html_to_text
from app.inbound.message import parse_from
from app.inbound.model import InboundEmail
from app.inbound.multipart import Form
from app.inbound.names import plain_text
from app.inbound.providers.base import (
    MISSING,
    attachment_from_part,
    check_basic_auth,
    field,
    first_header,
    json_field,
    parse_raw,
    read_bytes,
    run_parser,
    with_stand_in_sender,
    with_trusted_results,
)

PROVIDER = "sendgrid"


def check(request: Request, settings: Settings) -> None:
    check_basic_auth(request, settings)


def _envelope(form: Form) -> tuple[tuple[str, ...], str | None]:
    envelope = json_field(form, "envelope")
    if not isinstance(envelope, dict):
        raise MalformedMessage("envelope is missing or not a JSON object")
    to = envelope.get("to") or []
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list):
        raise MalformedMessage("envelope.to is not a list")
    sender = envelope.get("from", MISSING)
    if sender is MISSING or not isinstance(sender, str):
        # No envelope sender given at all is not a null sender ("<>"): with_stand_in_sender.
        return tuple(str(t) for t in to if t), MISSING
    sender = sender.strip().strip("<>").strip()
    return tuple(str(t) for t in to if t), sender or None


def _headers(block: str | None) -> list[tuple[str, str]]:
    if not block:
        return []
    try:
        message = HeaderParser(policy=default_policy).parsestr(block, headersonly=True)
        items = []
        for name, _ in message.raw_items():
            try:
                value = str(message.get(name, ""))
            except Exception:  # a malformed header: keep it undecoded
                value = ""
            items.append((name.lower(), value))
        return items
    except Exception:
        return []


def parse_fields(form: Form, settings: Settings) -> InboundEmail:
    recipients, sender = _envelope(form)
    charsets = json_field(form, "charsets") or {}
    if not isinstance(charsets, dict):
        charsets = {}

    def text_field(name: str) -> str | None:
        charset = charsets.get(name)
        return field(form, name, charset if isinstance(charset, str) else "utf-8")

    headers = _headers(text_field("headers"))
    from_address, from_name = parse_from(text_field("from"))
    html = text_field("html")
    text = text_field("text")
    if text is None and html:
        text = html_to_text(html)
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
    content_type = first_header(headers, "content-type") or "text/plain"
    email = InboundEmail(
        provider=PROVIDER,
        recipients=recipients,
        envelope_from=None if sender == MISSING else sender,
        from_address=from_address,
        from_name=from_name,
        subject=plain_text(text_field("subject") or "", 998),
        text=text,
        html=html,
        message_id=(first_header(headers, "message-id") or "").strip().strip("<>") or None,
        headers=tuple(headers),
        attachments=tuple(attachments),
        content_type=content_type.split(";")[0].strip().lower(),
        size_bytes=sum(p.size for p in form.parts),
        spf=field(form, "SPF"),
        dkim=field(form, "dkim"),
    )
    return with_stand_in_sender(email, missing=sender == MISSING)


async def read(request: Request, settings: Settings, form: Form) -> InboundEmail:
    raw = form.get("email")
    if raw is None:
        return await run_parser(form, partial(parse_fields, form, settings))
    recipients, sender = _envelope(form)
    email = await parse_raw(
        await read_bytes(raw),
        provider=PROVIDER,
        recipients=recipients,
        envelope_from=None if sender == MISSING else sender,
        max_attachment_bytes=settings.max_attachment_bytes,
        spf=field(form, "SPF"),
        dkim=field(form, "dkim"),
    )
    email = with_stand_in_sender(email, missing=sender == MISSING)
    # SendGrid's own SPF and dkim fields win; trusted Authentication-Results fill the rest.
    return with_trusted_results(email, settings)
