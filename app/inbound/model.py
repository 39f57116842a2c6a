"""The one normalised message every provider adapter produces."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class InboundAttachment:
    """One attachment. Its bytes are in ``data`` (parsed in memory) or in ``path`` (spooled).

    ``kept`` is False when the part passed the attachment limit: only its name and full size
    are known then (``data`` and ``path`` are None, ``sha256`` is None).
    """

    filename: str  # display name only, already made safe (no path, control or bidi characters)
    content_type: (
        str  # lower-case type/subtype, e.g. "image/png"; "application/octet-stream" when unknown
    )
    size: int  # the decoded size in bytes, counted even when not kept
    sha256: str | None  # hex digest of the decoded bytes, when kept
    content_id: str | None = None  # without angle brackets
    inline: bool = False
    data: bytes | None = None
    path: Path | None = None
    kept: bool = True


@dataclass(frozen=True)
class OmittedPart:
    """A file the mail names but the service does not store, and why: ``external_body`` (a
    ``message/external-body`` reference) or ``not_fetched`` (a provider's download URL). Nothing
    is ever fetched. ``size`` is what the mail declares, None when it does not say."""

    filename: str  # display name, already made safe
    size: int | None
    reason: str


@dataclass(frozen=True)
class InboundEmail:
    provider: str  # "mailgun", "sendgrid", "postmark", "mime"
    recipients: tuple[str, ...]  # envelope recipients, as the provider gave them
    envelope_from: str | None  # None for a null sender ("<>")
    from_address: str | None  # addr-spec of the From header, lower-cased domain
    from_name: str | None  # display name of From, plain text
    subject: str  # plain text, control characters removed ("" when absent)
    text: str | None
    html: str | None  # as received: NOT yet sanitised
    message_id: str | None  # without angle brackets
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, decoded value), in order
    attachments: tuple[InboundAttachment, ...] = ()
    content_type: str = (
        "text/plain"  # top-level MIME type, lower-case ("multipart/report" → delivery report)
    )
    size_bytes: int = 0
    spf: str | None = None  # provider's SPF verdict, e.g. "pass", "fail", "softfail", "none"
    dkim: str | None = (
        None  # provider's DKIM verdict as text, e.g. "pass" or "{@example.com : pass}"
    )
    event_id: str | None = (
        None  # provider event id used for dedupe (Mailgun token, Postmark MessageID)
    )
    extra: dict[str, str] = field(default_factory=dict)
    omitted: tuple[OmittedPart, ...] = ()  # named in the mail, not stored (see OmittedPart)
    # DMARC verdict of a trusted host, "{@example.com : pass}" (header.from domain); last, with
    # a default, so that kept documents written before it still load.
    dmarc: str | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


# NUL (PostgreSQL text refuses it) and lone surrogates (not encodable as UTF-8): what a provider's
# fields may carry (a JSON "\u0000" or "\ud83d", a form field in a "charset" of the sender's
# choosing) and no database column can hold.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> str:
    """``value`` without NUL characters, lone surrogates replaced by U+FFFD."""
    if value.isascii():  # known without a scan: only a NUL can be there
        return value.replace("\x00", "") if "\x00" in value else value
    if _UNSTORABLE.search(value) is None:
        return value
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", value)


def _optional(value: str | None) -> str | None:
    return None if value is None else storable_text(value)


def storable(email: InboundEmail) -> InboundEmail:
    """The message with every text field storable as it is (see ``storable_text``)."""
    attachments = tuple(
        replace(
            a,
            filename=storable_text(a.filename),
            content_type=storable_text(a.content_type),
            content_id=_optional(a.content_id),
        )
        for a in email.attachments
    )
    return replace(
        email,
        recipients=tuple(storable_text(r) for r in email.recipients),
        envelope_from=_optional(email.envelope_from),
        from_address=_optional(email.from_address),
        from_name=_optional(email.from_name),
        subject=storable_text(email.subject),
        text=_optional(email.text),
        html=_optional(email.html),
        message_id=_optional(email.message_id),
        headers=tuple((storable_text(k), storable_text(v)) for k, v in email.headers),
        attachments=attachments,
        content_type=storable_text(email.content_type),
        spf=_optional(email.spf),
        dkim=_optional(email.dkim),
        dmarc=_optional(email.dmarc),
        event_id=_optional(email.event_id),
        extra={storable_text(k): storable_text(v) for k, v in email.extra.items()},
        omitted=tuple(replace(o, filename=storable_text(o.filename)) for o in email.omitted),
    )
