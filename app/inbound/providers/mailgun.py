"""Mailgun routes' ``forward()``: parsed fields, or the raw message in ``body-mime``."""

from __future__ import annotations

import hashlib
import hmac
import time
from functools import partial

from fastapi import Request

from app.config import Settings
from app.inbound.charsets import decode_bytes
from app.inbound.errors import MalformedMessage
from app.inbound.html import html_to_text
from app.inbound.message import parse_from
from app.inbound.model import InboundEmail, OmittedPart
from app.inbound.multipart import Form, FormPart
from app.inbound.names import plain_text, safe_filename
from app.inbound.providers.base import (
    EndpointDisabled,
    InvalidCredentials,
    NotJson,
    attachment_from_part,
    field,
    first_field,
    first_header,
    json_field,
    load_json,
    parse_raw,
    read_bytes,
    run_parser,
    with_stand_in_sender,
    with_trusted_results,
)

PROVIDER = "mailgun"
MAX_AGE_SECONDS = 9 * 3600  # Mailgun retries re-send the original signature for 8 hours
MAX_SKEW_SECONDS = 5 * 60


def enabled(settings: Settings) -> bool:
    return bool(settings.mailgun_signing_key)


def check_enabled(settings: Settings) -> None:
    if not enabled(settings):
        raise EndpointDisabled()


def check_signature(
    timestamp: str | None,
    token: str | None,
    signature: str | None,
    settings: Settings,
    now: float | None = None,
) -> str:
    """Check the HMAC of timestamp+token with any configured key and the time window; the token."""
    if not (timestamp and token and signature):
        raise InvalidCredentials("timestamp, token and signature are required.", "Mailgun")
    try:
        moment = int(timestamp)
    except ValueError as exc:
        raise InvalidCredentials("The timestamp is not a number.", "Mailgun") from exc
    now = time.time() if now is None else now
    if not (now - MAX_AGE_SECONDS <= moment <= now + MAX_SKEW_SECONDS):
        raise InvalidCredentials("The timestamp is outside the accepted window.", "Mailgun")
    message = f"{timestamp}{token}".encode()
    valid = False
    for key in settings.mailgun_signing_key:
        expected = hmac.new(key.get_secret_value().encode(), message, hashlib.sha256).hexdigest()
        valid |= hmac.compare_digest(expected.encode(), signature.strip().lower().encode())
    if not valid:
        raise InvalidCredentials("The signature does not match.", "Mailgun")
    return token


def verify(form: Form, settings: Settings, now: float | None = None) -> str:
    """The signature of the whole form: the last timestamp, token and signature (anymail's rule
    for conflicting merged variables); the token."""
    timestamp, token, signature = (field(form, n) for n in SIGNATURE_FIELDS)
    return check_signature(timestamp, token, signature, settings, now)


class SignatureGate:
    """Checks the signature while the form is read, as soon as ``timestamp``, ``token`` and
    ``signature`` have all arrived: a mismatch stops the read with a 401 (InvalidCredentials),
    and until then :data:`app.inbound.multipart.MAX_UNAUTHENTICATED_BYTES` bounds the fields.
    The form is verified again once read (``verify``), on the last values.

    It also keeps ``recipient`` and ``sender``, so that a payload refused after the signature
    checked out (beyond the form's bounds) is logged for its recipient.
    """

    def __init__(self, settings: Settings, *, mime: bool) -> None:
        self.settings = settings
        # The raw message of the MIME variant is the mail's content, like attachments.
        self.content_fields = frozenset({"body-mime"}) if mime else frozenset()
        self.authenticated = False
        self.values: dict[str, str] = {}
        self.envelope: dict[str, str] = {}

    def field(self, part: FormPart) -> None:
        if part.name in ENVELOPE_FIELDS:
            self.envelope[part.name] = _small_value(part)
        if self.authenticated or part.name not in SIGNATURE_FIELDS:
            return
        self.values[part.name] = _small_value(part)
        if len(self.values) == len(SIGNATURE_FIELDS):
            timestamp, token, signature = (self.values[n] for n in SIGNATURE_FIELDS)
            check_signature(timestamp, token, signature, self.settings)
            self.authenticated = True

    def recipients_and_sender(self) -> tuple[tuple[str, ...], str | None]:
        return (
            _recipients(self.envelope.get("recipient")),
            _sender(self.envelope.get("sender")),
        )


SIGNATURE_FIELDS = ("timestamp", "token", "signature")
ENVELOPE_FIELDS = frozenset({"recipient", "sender"})


def _small_value(part: FormPart) -> str:
    """A field's value when it was held in memory; "" for one spooled or dropped (no signature
    field is that large)."""
    return "" if part.data is None else decode_bytes(part.data, "utf-8")


def recipients(form: Form) -> tuple[str, ...]:
    return _recipients(field(form, "recipient"))


def envelope_from(form: Form) -> str | None:
    return _sender(field(form, "sender"))


def sender_missing(form: Form) -> bool:
    """No ``sender`` field at all: not a null sender (an empty one is)."""
    return form.get("sender") is None


def _recipients(value: str | None) -> tuple[str, ...]:
    return tuple(r.strip() for r in (value or "").split(",") if r.strip())


def _sender(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if value in {"", "<>"} else value


async def parse_mime_form(form: Form, token: str, settings: Settings) -> InboundEmail:
    part = form.get("body-mime")
    if part is None:
        raise MalformedMessage("body-mime is missing")
    raw = await read_bytes(part)
    email = await parse_raw(
        raw,
        provider=PROVIDER,
        recipients=recipients(form),
        envelope_from=envelope_from(form),
        max_attachment_bytes=settings.max_attachment_bytes,
        # Mailgun documents no verdict fields for this variant; were it to send them, they
        # would win over the headers, as SendGrid's do.
        spf=first_field(form, "X-Mailgun-Spf"),
        dkim=first_field(form, "X-Mailgun-Dkim-Check-Result"),
        event_id=token,
    )
    email = with_stand_in_sender(email, missing=sender_missing(form))
    return with_trusted_results(email, settings)


def _cid_map(form: Form) -> dict[str, str]:
    """``attachment-N`` → content id, from ``content-id-map`` (which may repeat or blank keys)."""
    value = field(form, "content-id-map")
    if not value:
        return {}
    try:
        pairs = load_json(value, "field 'content-id-map'", object_pairs_hook=list)
    except NotJson:  # a broken map (anymail#275): the images stay attachments
        return {}
    if not isinstance(pairs, list):
        return {}
    return {
        str(pair[1]): str(pair[0]).strip("<> ")
        for pair in pairs
        if isinstance(pair, list | tuple)
        and len(pair) == 2
        and pair[0]
        and isinstance(pair[1], str)
    }


def _stored_files(form: Form) -> tuple[OmittedPart, ...]:
    """The ``attachments`` JSON of a ``store(notify=…)`` post: files Mailgun keeps and gives by
    download URL. They are never fetched (a URL is no proof of where it leads); each is listed
    as omitted with reason ``not_fetched``."""
    files = json_field(form, "attachments")
    if files is None:
        return ()
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise MalformedMessage("attachments is not a list of files")
    omitted = []
    for index, item in enumerate(files, start=1):
        name = item.get("name") if isinstance(item.get("name"), str) else None
        size = item.get("size")
        omitted.append(
            OmittedPart(
                filename=safe_filename(name, f"attachment-{index}.bin"),
                size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                reason="not_fetched",
            )
        )
    return tuple(omitted)


def parse_fields(form: Form, token: str, settings: Settings) -> InboundEmail:
    headers: list[tuple[str, str]] = []
    raw_headers = json_field(form, "message-headers") or []
    if not isinstance(raw_headers, list):
        raise MalformedMessage("message-headers is not a list")
    for item in raw_headers:
        if isinstance(item, list) and len(item) == 2:
            headers.append((str(item[0]).lower(), str(item[1])))
    from_address, from_name = parse_from(field(form, "from") or first_header(headers, "from"))
    html = field(form, "body-html")
    text = field(form, "body-plain")
    if text is None and html:
        text = html_to_text(html)
    cids = _cid_map(form)
    attachments = tuple(
        attachment_from_part(part, i, content_id=cids.get(part.name))
        for i, part in enumerate(form.files(), start=1)
    )
    size = sum(p.size for p in form.parts)

    def topmost(name: str) -> str | None:
        """A header Mailgun adds at the top (its verdicts): the first one in message-headers,
        else the first field of that name; never a later copy, which the sender wrote."""
        return first_header(headers, name) or first_field(form, name)

    message_id = topmost("Message-Id") or ""
    email = InboundEmail(
        provider=PROVIDER,
        recipients=recipients(form),
        envelope_from=envelope_from(form),
        from_address=from_address,
        from_name=from_name,
        subject=plain_text(field(form, "subject") or first_header(headers, "subject") or "", 998),
        text=text,
        html=html,
        message_id=message_id.strip("<> ") or None,
        headers=tuple(headers),
        attachments=attachments,
        content_type=(topmost("Content-Type") or "text/plain").split(";")[0].strip().lower(),
        size_bytes=size,
        spf=topmost("X-Mailgun-Spf"),
        dkim=topmost("X-Mailgun-Dkim-Check-Result"),
        event_id=token,
        omitted=_stored_files(form),
    )
    return with_stand_in_sender(email, missing=sender_missing(form))


async def read(request: Request, settings: Settings, form: Form, *, mime: bool) -> InboundEmail:
    token = verify(form, settings)
    if mime:
        return await parse_mime_form(form, token, settings)
    return await run_parser(form, partial(parse_fields, form, token, settings))
