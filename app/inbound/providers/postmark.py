"""Postmark inbound JSON (base64 attachments)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from inspect import cleandoc
from typing import Any

from fastapi import Request

from app.config import Settings
from app.inbound import openapi
from app.inbound.errors import MalformedMessage
from app.inbound.message import parse_from
from app.inbound.model import InboundAttachment, InboundEmail
from app.inbound.names import safe_filename
from app.inbound.normalise import MISSING, normalise
from app.inbound.providers.base import (
    BodyProvider,
    Envelope,
    bare_content_type,
    first_header,
    load_json,
)

PROVIDER = "postmark"


def _text(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value != "" else None


def _attachment(item: Any, index: int, limit: int) -> InboundAttachment:
    if not isinstance(item, dict):
        raise MalformedMessage("an attachment is not an object")
    encoded = item.get("Content", item.get("Data", ""))
    if not isinstance(encoded, str):
        raise MalformedMessage("an attachment's Content is not base64 text")
    try:
        data = base64.b64decode(encoded, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessage("an attachment's Content is not base64") from exc
    kind = bare_content_type(
        item.get("ContentType") if isinstance(item.get("ContentType"), str) else None
    )
    content_id = item.get("ContentID") if isinstance(item.get("ContentID"), str) else None
    name = item.get("Name") if isinstance(item.get("Name"), str) else None
    kept = len(data) <= limit
    return InboundAttachment(
        filename=safe_filename(name, f"attachment-{index}.bin"),
        content_type=kind,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest() if kept else None,
        content_id=content_id.strip("<> ") or None if content_id else None,
        inline=bool(content_id),
        data=data if kept else None,
        kept=kept,
    )


def parse_document(
    raw: bytes, size: int, settings: Settings, envelope: Envelope | None = None
) -> InboundEmail:
    """The document as a mail. ``envelope`` receives its recipients and sender as soon as they
    are read, so that a mail refused after that is logged for its integration."""
    doc = load_json(raw, "the body")
    if not isinstance(doc, dict):
        raise MalformedMessage("the body is not a JSON object")
    headers: list[tuple[str, str]] = []
    items = doc.get("Headers") or []
    if not isinstance(items, list):
        raise MalformedMessage("Headers is not a list")
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("Name"), str):
            headers.append((item["Name"].lower(), str(item.get("Value", ""))))
    found = doc.get("FromFull")
    full: dict[str, Any] = found if isinstance(found, dict) else {}
    from_address, from_name = parse_from(_text(doc, "From"))
    if isinstance(full.get("Email"), str) and full["Email"]:
        from_address, _ = parse_from(full["Email"])
    if isinstance(full.get("Name"), str) and full["Name"]:
        from_name = full["Name"]
    recipient = _text(doc, "OriginalRecipient")
    # Postmark's own Return-Path is the first header; a later one was written by the sender.
    # An explicit "<>" is a null sender; no Return-Path at all is not (see normalise).
    return_path = first_header(headers, "return-path")
    sender = MISSING if return_path is None else return_path
    if envelope is not None:
        envelope.record((recipient,) if recipient else (), sender)
    attachments = doc.get("Attachments") or []
    if not isinstance(attachments, list):
        raise MalformedMessage("Attachments is not a list")
    message_id = _text(doc, "MessageID")
    spf = (first_header(headers, "received-spf") or "").split(" ", 1)[0].lower() or None
    return normalise(
        provider=PROVIDER,
        recipients=(recipient,) if recipient else (),
        envelope_from=sender,
        from_address=from_address,
        from_name=from_name,
        subject=_text(doc, "Subject"),
        text=_text(doc, "TextBody"),
        html=_text(doc, "HtmlBody"),
        message_id_header=first_header(headers, "message-id"),
        headers=headers,
        attachments=[
            _attachment(item, i, settings.max_attachment_bytes)
            for i, item in enumerate(attachments, start=1)
        ],
        content_type_header=first_header(headers, "content-type"),
        size_bytes=size,
        spf=spf,
        event_id=message_id,
    )


class Postmark(BodyProvider):
    name = PROVIDER
    path = "/postmark"
    operation_id = "receive_postmark"
    openapi = openapi.POSTMARK
    refused_code = 403
    rate_limited_code = 429
    description = cleandoc(
        """Postmark inbound JSON, with HTTP basic auth in the webhook URL.

        Routed on `OriginalRecipient`. Refusals answer 403, which stops Postmark's retries; its
        "Check" button (no recipient of ours) is answered 200."""
    )

    def parse(
        self, request: Request, raw: bytes, settings: Settings, envelope: Envelope
    ) -> InboundEmail:
        return parse_document(raw, len(raw), settings, envelope)
