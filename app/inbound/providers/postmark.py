"""Postmark inbound JSON (base64 attachments)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import shutil
from typing import Any

from fastapi import Request

from app.config import Settings
from app.inbound.errors import MalformedMessage
from app.inbound.html import html_to_text
from app.inbound.message import parse_from
from app.inbound.model import InboundAttachment, InboundEmail
from app.inbound.multipart import spool_body
from app.inbound.names import plain_text, safe_filename
from app.inbound.providers.base import (
    PARSE_SLOTS,
    bare_content_type,
    check_basic_auth,
    first_header,
    load_json,
    with_stand_in_sender,
)

PROVIDER = "postmark"


def check(request: Request, settings: Settings) -> None:
    check_basic_auth(request, settings)


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
    raw: bytes, size: int, settings: Settings, envelope: dict[str, Any] | None = None
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
        from_name = plain_text(full["Name"], 400) or None
    recipient = _text(doc, "OriginalRecipient")
    # Postmark's own Return-Path is the first header; a later one was written by the sender.
    # An explicit "<>" is a null sender; no Return-Path at all is not (with_stand_in_sender).
    return_path = first_header(headers, "return-path")
    sender = None if return_path is None else return_path.strip().strip("<>").strip() or None
    if envelope is not None:
        envelope["envelope"] = ((recipient,) if recipient else (), sender)
    html = _text(doc, "HtmlBody")
    text = _text(doc, "TextBody")
    if text is None and html:
        text = html_to_text(html)
    attachments = doc.get("Attachments") or []
    if not isinstance(attachments, list):
        raise MalformedMessage("Attachments is not a list")
    message_id = _text(doc, "MessageID")
    spf = (first_header(headers, "received-spf") or "").split(" ", 1)[0].lower() or None
    content_type = first_header(headers, "content-type") or "text/plain"
    email = InboundEmail(
        provider=PROVIDER,
        recipients=(recipient,) if recipient else (),
        envelope_from=sender,
        from_address=from_address,
        from_name=from_name,
        subject=plain_text(_text(doc, "Subject") or "", 998),
        text=text,
        html=html,
        message_id=(first_header(headers, "message-id") or "").strip().strip("<>") or None,
        headers=tuple(headers),
        attachments=tuple(
            _attachment(item, i, settings.max_attachment_bytes)
            for i, item in enumerate(attachments, start=1)
        ),
        content_type=content_type.split(";")[0].strip().lower(),
        size_bytes=size,
        spf=spf,
        event_id=message_id,
    )
    return with_stand_in_sender(email, missing=return_path is None)


async def read(
    request: Request, settings: Settings, envelope: dict[str, Any] | None = None
) -> InboundEmail:
    path, size, _ = await spool_body(
        request.stream(), spool_root=settings.blob_dir, max_total=settings.max_request_bytes
    )
    try:
        async with PARSE_SLOTS:
            raw = await asyncio.to_thread(path.read_bytes)
            return await asyncio.to_thread(parse_document, raw, size, settings, envelope)
    finally:
        await asyncio.to_thread(shutil.rmtree, path.parent, True)
