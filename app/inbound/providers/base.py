"""What every provider adapter shares: credentials, size caps, spooling and field decoding."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import mimetypes
import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import Request

from app.config import Settings
from app.inbound import authresults
from app.inbound.charsets import decode_bytes
from app.inbound.errors import MalformedMessage
from app.inbound.message import parse_mime
from app.inbound.model import InboundAttachment, InboundEmail
from app.inbound.multipart import FieldGate, Form, FormPart, read_form
from app.inbound.names import safe_filename

# At most this many raw messages (or large forms) are parsed in memory at once in one worker.
PARSE_SLOTS = asyncio.Semaphore(4)
INLINE_FIELD_BYTES = 64 * 1024
"""A form whose plain fields hold at most this many bytes is parsed on the event loop (well
under a millisecond: most mail); a larger one in a worker thread, under PARSE_SLOTS."""


class EndpointDisabled(Exception):
    """The endpoint's secret is not configured: it answers 404."""


class InvalidCredentials(Exception):
    """Bad signature or credentials: 401, and nothing is recorded."""

    def __init__(self, detail: str, scheme: str = "Basic") -> None:
        super().__init__(detail)
        self.detail, self.scheme = detail, scheme


def basic_auth_enabled(settings: Settings) -> bool:
    """The basic-auth endpoints (SendGrid, Postmark, raw MIME) are on once both are set."""
    return bool(settings.inbound_username and settings.inbound_password)


def check_basic_auth(request: Request, settings: Settings) -> None:
    expected_username = settings.inbound_username
    if expected_username is None or not basic_auth_enabled(settings):
        raise EndpointDisabled()
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise InvalidCredentials("Basic credentials are required.")
    try:
        username, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCredentials("Malformed Basic credentials.") from exc
    user_ok = hmac.compare_digest(username.encode(), expected_username.encode())
    password_ok = False
    for candidate in settings.inbound_password:  # every one is compared: constant time overall
        password_ok |= hmac.compare_digest(password.encode(), candidate.get_secret_value().encode())
    if not (sep and user_ok and password_ok):
        raise InvalidCredentials("Wrong username or password.")


@asynccontextmanager
async def form_of(
    request: Request, settings: Settings, gate: FieldGate | None = None
) -> AsyncIterator[Form]:
    """The request's form, spooled under ``BLOB_DIR/tmp`` and removed afterwards; within the
    bounds of FormLimits (the module constants of app.inbound.multipart), every provider alike.
    ``gate`` authenticates a request from its own fields (Mailgun)."""
    form = await read_form(
        request.stream(),
        request.headers.get("content-type", ""),
        spool_root=settings.blob_dir,
        max_total=settings.max_request_bytes,
        max_file=settings.max_attachment_bytes,
        max_field=settings.max_request_bytes,
        gate=gate,
    )
    try:
        yield form
    finally:
        if not form.remove_if_empty():  # most often empty: the attachments were taken over
            await asyncio.to_thread(form.cleanup)


MISSING = "\0missing"
"""An envelope sender that the payload does not give at all (not a null sender, ``<>``)."""


def first_header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The value of the first (topmost) ``name`` header; ``headers`` has lower-case names.

    Providers and MTAs add their trace and verdict headers at the top of a message: a copy
    further down was written by the sender, and is never read in their place."""
    name = name.lower()
    return next((value for key, value in headers if key == name), None)


def field(form: Form, name: str, charset: str | None = "utf-8") -> str | None:
    """The last value of a field (anymail's rule for conflicting merged variables)."""
    return _value(form, name, -1, charset)


def first_field(form: Form, name: str) -> str | None:
    """The first value of a field that repeats a message header (Mailgun posts every header as
    a field): the topmost header's, like ``first_header``."""
    return _value(form, name, 0, "utf-8")


def _value(form: Form, name: str, index: int, charset: str | None) -> str | None:
    parts = form.getall(name)
    if not parts:
        return None
    part = parts[index]
    if part.truncated:
        raise MalformedMessage(f"field {name!r} is too large")
    return decode_bytes(part.read(), charset or part.charset or "utf-8")


MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects in any JSON a provider sends (a Postmark document, a
SendGrid or Mailgun JSON field). Postmark's documents nest 3 levels, the JSON fields 2; deeper
input is refused as ``malformed_message`` (the parser and ``str()`` of the values recurse)."""


class NotJson(MalformedMessage):
    """The text is not JSON at all (as opposed to JSON nested too deeply)."""


def load_json(data: str | bytes, what: str, **options: Any) -> Any:
    """The one way provider JSON is parsed: ``json.loads`` with a depth bound.

    Raises :class:`NotJson` for text that is not JSON, and :class:`MalformedMessage` for JSON
    nested deeper than MAX_JSON_DEPTH (also when the parser itself runs out of recursion).
    """
    try:
        value = json.loads(data, **options)
    except RecursionError:
        raise MalformedMessage(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotJson(f"{what} is not JSON") from exc
    if _nested_deeper_than(value, MAX_JSON_DEPTH):
        raise MalformedMessage(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list | tuple) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list | tuple))
    return False


def json_field(form: Form, name: str) -> Any:
    value = field(form, name)
    if value is None or not value.strip():
        return None
    return load_json(value, f"field {name!r}")


# type/subtype of RFC 6838 (as in app.inbound.message); anything else is stored as octet-stream.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def bare_content_type(value: str | None) -> str:
    if not value:
        return "application/octet-stream"
    kind = value.split(";", 1)[0].strip().lower()
    return kind if _MEDIA_TYPE.fullmatch(kind) else "application/octet-stream"


def attachment_from_part(
    part: FormPart, index: int, *, content_id: str | None, content_type: str | None = None
) -> InboundAttachment:
    kind = bare_content_type(content_type or part.content_type)
    fallback = f"attachment-{index}{mimetypes.guess_extension(kind) or '.bin'}"
    return InboundAttachment(
        filename=safe_filename(part.filename, fallback),
        content_type=kind,
        size=part.size,
        sha256=None if part.truncated else part.sha256,
        content_id=content_id.strip("<> ") if content_id else None,
        inline=bool(content_id),
        data=part.data if not part.truncated else None,
        path=part.path if not part.truncated else None,
        kept=not part.truncated,
    )


async def run_parser(form: Form, parse: Callable[[], InboundEmail]) -> InboundEmail:
    """``parse()`` (which reads ``form``'s fields): on the event loop for a small form, else in a
    worker thread under PARSE_SLOTS, so that decoding and HTML work on large bodies never
    holds the loop."""
    if form.field_bytes() <= INLINE_FIELD_BYTES:
        return parse()
    async with PARSE_SLOTS:
        return await asyncio.to_thread(parse)


async def parse_raw(raw: bytes, **kwargs: Any) -> InboundEmail:
    """Parse a raw message in a thread, with a per-worker bound on how many at once."""

    async with PARSE_SLOTS:
        return await asyncio.to_thread(parse_mime, raw, **kwargs)


async def read_bytes(part: FormPart) -> bytes:
    if part.truncated:
        raise MalformedMessage(f"field {part.name!r} is too large")
    if part.data is not None:
        return part.data
    assert part.path is not None  # noqa: S101
    return await asyncio.to_thread(Path(part.path).read_bytes)


def with_stand_in_sender(email: InboundEmail, *, missing: bool) -> InboundEmail:
    """The mail as read when the payload gave an envelope sender (``email.envelope_from``, None
    for a null sender, ``<>``); ``missing``: it gave none at all, which is not a null sender.

    Then the From address stands in; a mail with neither has no sender to show, and is refused
    as malformed. (A mail without From but with an envelope sender is posted with that sender as
    its author: ``app.inbound.rules.author_address``.)"""
    if not missing:
        return email
    if email.from_address is None:
        raise MalformedMessage("the mail has neither a From address nor an envelope sender")
    return replace(email, envelope_from=email.from_address)


def with_trusted_results(email: InboundEmail, settings: Settings) -> InboundEmail:
    """A raw message's verdicts from the ``Authentication-Results`` of trusted hosts
    (``TRUSTED_AUTHSERV_IDS``; see app.inbound.authresults). A verdict the provider itself
    reported (SendGrid's ``SPF`` and ``dkim`` fields) wins over the headers; no other header
    (another host's ``Authentication-Results``, ``Received-SPF``, ``X-*-Spf``) is read."""
    found = authresults.verdicts(email.headers, settings.trusted_authserv_ids, email.envelope_from)
    return replace(
        email,
        spf=email.spf or found.spf,
        dkim=email.dkim or found.dkim,
        dmarc=email.dmarc or found.dmarc,
    )
