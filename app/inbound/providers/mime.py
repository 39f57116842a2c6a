"""A raw RFC 5322 message from an MTA (the relay command), recipients in the query or a header."""

from __future__ import annotations

import asyncio
import shutil

from fastapi import Request

from app.config import Settings
from app.inbound.errors import MalformedMessage
from app.inbound.model import InboundEmail
from app.inbound.multipart import spool_body
from app.inbound.providers.base import (
    MISSING,
    check_basic_auth,
    parse_raw,
    with_stand_in_sender,
    with_trusted_results,
)

PROVIDER = "mime"


def check(request: Request, settings: Settings) -> None:
    check_basic_auth(request, settings)


def envelope(request: Request) -> tuple[tuple[str, ...], str | None]:
    recipients = list(request.query_params.getlist("recipient"))
    for value in request.headers.getlist("x-envelope-to"):
        recipients.extend(v.strip() for v in value.split(","))
    sender = request.query_params.get("sender", request.headers.get("x-envelope-from"))
    if sender is None:  # not given at all (not a null sender): see with_stand_in_sender
        return tuple(r for r in recipients if r.strip()), MISSING
    sender = sender.strip().strip("<>").strip()
    return tuple(r for r in recipients if r.strip()), sender or None


async def read(request: Request, settings: Settings) -> InboundEmail:
    recipients, sender = envelope(request)
    path, _, _ = await spool_body(
        request.stream(), spool_root=settings.blob_dir, max_total=settings.max_request_bytes
    )
    try:
        if not recipients:
            raise MalformedMessage(
                "the envelope recipient is required (recipient or X-Envelope-To)"
            )
        raw = await asyncio.to_thread(path.read_bytes)
    finally:
        await asyncio.to_thread(shutil.rmtree, path.parent, True)
    email = await parse_raw(
        raw,
        provider=PROVIDER,
        recipients=recipients,
        envelope_from=None if sender == MISSING else sender,
        max_attachment_bytes=settings.max_attachment_bytes,
    )
    email = with_stand_in_sender(email, missing=sender == MISSING)
    return with_trusted_results(email, settings)
