"""The one normalised message every provider adapter produces."""

from __future__ import annotations

from dataclasses import dataclass, field
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

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None
