"""The provider contract (``Provider``, and its two shapes ``FormProvider`` and ``BodyProvider``)
and what every adapter shares: credentials, size caps, spooling and field decoding.

A provider is one object in ``app.inbound.providers.PROVIDERS``: its endpoint, its column of
DESIGN.md's answer table, how it authenticates, and how its payload becomes an ``InboundEmail``
(through ``app.inbound.normalise``). The router knows nothing else about it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import mimetypes
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request

from app.config import Settings
from app.inbound import authresults
from app.inbound.charsets import decode_bytes
from app.inbound.errors import (
    EndpointDisabled,
    InvalidCredentials,
    MalformedBody,
    MalformedMessage,
    NotJson,
)
from app.inbound.message import parse_mime
from app.inbound.model import InboundAttachment, InboundEmail
from app.inbound.multipart import FieldGate, Form, FormPart, read_form, spool_body
from app.inbound.names import safe_filename
from app.inbound.normalise import MISSING, envelope_sender

# At most this many raw messages (or large forms) are parsed in memory at once in one worker.
PARSE_SLOTS = asyncio.Semaphore(4)
INLINE_FIELD_BYTES = 64 * 1024
"""A form whose plain fields hold at most this many bytes is parsed on the event loop (well
under a millisecond: most mail); a larger one in a worker thread, under PARSE_SLOTS."""


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


# --- the contract -------------------------------------------------------------------------------


@dataclass
class Envelope:
    """The envelope of one request as far as it is known: the provider records it as soon as
    it reads it, so that a payload refused after that (malformed, too complex) is still logged
    for its recipients. ``sender`` is None for a null sender or one not (yet) known."""

    recipients: tuple[str, ...] = ()
    sender: str | None = None

    def record(self, recipients: Iterable[str], sender: str | None) -> None:
        self.recipients = tuple(recipients)
        found = envelope_sender(sender)
        self.sender = None if found == MISSING else found


Keep = Callable[[InboundEmail], Awaitable[InboundEmail]]
"""Takes a form's spooled attachments over before the form's folder is removed
(``InboundService.keep_attachments``)."""


class Provider(Protocol):
    """One inbound endpoint: what the router needs to know of a provider.

    ``read`` authenticates the request (raising ``InvalidCredentials``), reads its body and
    returns the mail; it raises the errors of ``app.inbound.errors`` for the router to answer,
    recording the envelope in ``envelope`` as soon as it is known. ``FormProvider`` and
    ``BodyProvider`` implement it for the two shapes of payload.
    """

    name: str
    """The provider recorded on deliveries; keys the answer codes."""
    path: str
    """The endpoint's path under ``/inbound``."""
    operation_id: str
    description: str
    """The endpoint's OpenAPI description; ``openapi`` its request body."""
    openapi: dict[str, Any]
    refused_code: int
    """The answer to a refusal (DESIGN.md's table: a code that stops the provider's retries)."""
    rate_limited_code: int
    """The answer when rate limited (a code the provider retries)."""
    scheme: str
    """``WWW-Authenticate`` of a 401."""

    def enabled(self, settings: Settings) -> bool:
        """Whether the endpoint's secret is configured (otherwise it answers 404)."""
        ...

    async def read(
        self, request: Request, settings: Settings, envelope: Envelope, keep: Keep
    ) -> InboundEmail: ...


class _Endpoint:
    """What both shapes share: the endpoint's attributes, and basic auth by default."""

    name: str
    path: str
    operation_id: str
    description: str
    openapi: dict[str, Any]
    refused_code: int
    rate_limited_code: int
    scheme: str = "Basic"

    def enabled(self, settings: Settings) -> bool:
        return basic_auth_enabled(settings)

    def authenticate(self, request: Request, settings: Settings, envelope: Envelope) -> None:
        """Before the body is read: HTTP basic auth (``InvalidCredentials``; ``EndpointDisabled``
        when unset)."""
        check_basic_auth(request, settings)


class FormProvider(_Endpoint):
    """A provider that posts a form (multipart or urlencoded), spooled as it arrives."""

    def gate(self, settings: Settings, envelope: Envelope) -> FieldGate | None:
        """What authenticates the request from its own fields while the form streams (Mailgun's
        signature); None when ``authenticate`` did it before."""
        return None

    async def parse(self, form: Form, settings: Settings, envelope: Envelope) -> InboundEmail:
        """The mail of a form read whole (small forms on the event loop: ``run_parser``)."""
        raise NotImplementedError

    async def read(
        self, request: Request, settings: Settings, envelope: Envelope, keep: Keep
    ) -> InboundEmail:
        self.authenticate(request, settings, envelope)
        gate = self.gate(settings, envelope)
        try:
            async with form_of(request, settings, gate) as form:
                return await keep(await self.parse(form, settings, envelope))
        except MalformedBody as exc:
            if gate is None:
                raise
            # Not even a form: nothing here can carry a signature, so nothing is recorded.
            raise InvalidCredentials(
                f"The request is not a signed {self.scheme} form.", self.scheme
            ) from exc


class BodyProvider(_Endpoint):
    """A provider that posts one document (Postmark's JSON, a raw message): spooled, then
    read and parsed in a worker thread, at most PARSE_SLOTS at once in one worker."""

    def parse(
        self, request: Request, raw: bytes, settings: Settings, envelope: Envelope
    ) -> InboundEmail:
        """The mail of the whole body (called in a worker thread)."""
        raise NotImplementedError

    async def read(
        self, request: Request, settings: Settings, envelope: Envelope, keep: Keep
    ) -> InboundEmail:
        self.authenticate(request, settings, envelope)
        path, _, _ = await spool_body(
            request.stream(), spool_root=settings.blob_dir, max_total=settings.max_request_bytes
        )
        async with PARSE_SLOTS:
            raw = await asyncio.to_thread(_take, path)
            return await asyncio.to_thread(self.parse, request, raw, settings, envelope)


def _take(path: Path) -> bytes:
    """The spooled body's bytes, its folder removed."""
    try:
        return path.read_bytes()
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
