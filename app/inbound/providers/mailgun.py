"""Mailgun routes' ``forward()``: parsed fields, or the raw message in ``body-mime``."""

from __future__ import annotations

import hashlib
import hmac
import time
from functools import partial
from inspect import cleandoc

from fastapi import Request

from app.config import Settings
from app.inbound import openapi
from app.inbound.charsets import decode_bytes
from app.inbound.errors import InvalidCredentials, MalformedMessage, NotJson
from app.inbound.message import parse_from
from app.inbound.model import InboundEmail, OmittedPart
from app.inbound.multipart import Form, FormPart
from app.inbound.names import safe_filename
from app.inbound.normalise import MISSING, envelope_sender, normalise
from app.inbound.providers.base import (
    Envelope,
    FormProvider,
    attachment_from_part,
    field,
    first_field,
    first_header,
    json_field,
    load_json,
    parse_raw,
    read_bytes,
    run_parser,
    with_trusted_results,
)

PROVIDER = "mailgun"
MAX_AGE_SECONDS = 9 * 3600  # Mailgun retries re-send the original signature for 8 hours
MAX_SKEW_SECONDS = 5 * 60


def enabled(settings: Settings) -> bool:
    return bool(settings.mailgun_signing_key)


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

    It also records ``recipient`` and ``sender`` in ``envelope``, so that a payload refused
    after the signature checked out (beyond the form's bounds) is logged for its recipient.
    """

    def __init__(self, settings: Settings, *, mime: bool, envelope: Envelope | None = None) -> None:
        self.settings = settings
        # The raw message of the MIME variant is the mail's content, like attachments.
        self.content_fields = frozenset({"body-mime"}) if mime else frozenset()
        self.authenticated = False
        self.values: dict[str, str] = {}
        self.envelope: dict[str, str] = {}
        self.recorded = Envelope() if envelope is None else envelope

    def field(self, part: FormPart) -> None:
        if part.name in ENVELOPE_FIELDS:
            self.envelope[part.name] = _small_value(part)
            self.recorded.record(*self.recipients_and_sender())
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
    """The ``sender`` field; MISSING when there is none at all (not a null sender: an empty
    one is)."""
    return MISSING if form.get("sender") is None else _sender(field(form, "sender"))


def _recipients(value: str | None) -> tuple[str, ...]:
    return tuple(r.strip() for r in (value or "").split(",") if r.strip())


def _sender(value: str | None) -> str | None:
    return envelope_sender(value or "")


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

    return normalise(
        provider=PROVIDER,
        recipients=recipients(form),
        envelope_from=envelope_from(form),
        from_address=from_address,
        from_name=from_name,
        subject=field(form, "subject") or first_header(headers, "subject"),
        text=field(form, "body-plain"),
        html=field(form, "body-html"),
        message_id_header=topmost("Message-Id"),
        headers=headers,
        attachments=attachments,
        content_type_header=topmost("Content-Type"),
        size_bytes=size,
        spf=topmost("X-Mailgun-Spf"),
        dkim=topmost("X-Mailgun-Dkim-Check-Result"),
        event_id=token,
        omitted=_stored_files(form),
    )


class Mailgun(FormProvider):
    """``POST /inbound/mailgun``: the parsed fields. Authenticated by the signature fields of
    the form itself, checked as soon as they arrive (``SignatureGate``) and again on the whole
    form."""

    name = PROVIDER
    refused_code = 406
    rate_limited_code = 429
    scheme = "Mailgun"

    path = "/mailgun"
    operation_id = "receive_mailgun"
    openapi = openapi.MAILGUN
    description = cleandoc(
        """Mailgun route `forward()`, parsed fields (urlencoded, or multipart with attachments).

        Authenticated by the Mailgun signature in the body (see the request body). Routed on
        `recipient`. Refusals answer 406, which stops Mailgun's retries."""
    )
    mime = False

    def enabled(self, settings: Settings) -> bool:
        return enabled(settings)

    def authenticate(self, request: Request, settings: Settings, envelope: Envelope) -> None:
        """Nothing before the body: the signature is in the form (``gate``)."""

    def gate(self, settings: Settings, envelope: Envelope) -> SignatureGate:
        return SignatureGate(settings, mime=self.mime, envelope=envelope)

    async def parse(self, form: Form, settings: Settings, envelope: Envelope) -> InboundEmail:
        token = verify(form, settings)  # the last values, now that all is read
        envelope.record(recipients(form), envelope_from(form))
        if self.mime:
            return await parse_mime_form(form, token, settings)
        return await run_parser(form, partial(parse_fields, form, token, settings))


class MailgunMime(Mailgun):
    """``POST /inbound/mailgun/mime``: the raw message in ``body-mime``."""

    path = "/mailgun/mime"
    operation_id = "receive_mailgun_mime"
    openapi = openapi.MAILGUN_MIME
    description = cleandoc(
        """Mailgun route `forward()` to a URL ending in `mime`: the raw message in `body-mime`.

        Authenticated by the Mailgun signature in the body (see the request body). Routed on
        `recipient`. Refusals answer 406, which stops Mailgun's retries."""
    )
    mime = True
