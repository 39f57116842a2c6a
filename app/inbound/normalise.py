"""The one normalisation step: every provider adapter, and the raw-MIME parser, build their
``InboundEmail`` through :func:`normalise`, so that each rule about what a stored mail looks like
(subject, content type, Message-Id, the text rendering of an HTML-only mail, the envelope sender
and its stand-in) exists once.

Each rule is idempotent: a value already normalised (the MIME parser's content type, say) comes
out unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from app.inbound.errors import MalformedMessage
from app.inbound.html import html_to_text
from app.inbound.model import InboundAttachment, InboundEmail, OmittedPart
from app.inbound.names import plain_text

MAX_SUBJECT_CHARS = 998
"""A subject (and a Message-Id) is cut to a header line's length (RFC 5322 2.1.1)."""
MAX_NAME_CHARS = 400
"""A display name is cut to this many characters."""

MISSING = "\0missing"
"""An envelope sender that the payload does not give at all (not a null sender, ``<>``): the
From address stands in for it (see :func:`normalise`)."""

_MESSAGE_ID = re.compile(r"<([^<>]*)>")
_SPACE = re.compile(r"\s+")


def envelope_sender(value: str | None) -> str | None:
    """An envelope sender as given (``<a@b>``, `` a@b ``), without its angle brackets; None for
    a null sender (``<>``, empty). :data:`MISSING` stays as it is."""
    if value is None or value == MISSING:
        return value
    return value.strip().strip("<>").strip() or None


def message_id(value: str | None) -> str | None:
    """The Message-Id without angle brackets, white space or control characters (the first
    ``<…>`` of the value when there is one), cut to MAX_SUBJECT_CHARS; None when empty."""
    if not value:
        return None
    match = _MESSAGE_ID.search(value)
    inner = match.group(1) if match else value
    inner = _SPACE.sub("", plain_text(inner))
    return inner[:MAX_SUBJECT_CHARS] or None


def content_type(value: str | None) -> str:
    """The top-level ``type/subtype`` of a Content-Type value, lower case; ``text/plain`` when
    the mail has none."""
    return (value or "text/plain").split(";")[0].strip().lower()


def normalise(
    *,
    provider: str,
    recipients: Iterable[str],
    envelope_from: str | None,
    from_address: str | None,
    from_name: str | None,
    subject: str | None,
    text: str | None,
    html: str | None,
    message_id_header: str | None,
    headers: Iterable[tuple[str, str]] = (),
    attachments: Iterable[InboundAttachment] = (),
    omitted: Iterable[OmittedPart] = (),
    content_type_header: str | None = None,
    size_bytes: int = 0,
    spf: str | None = None,
    dkim: str | None = None,
    event_id: str | None = None,
) -> InboundEmail:
    """The mail as every later step sees it, from what a provider's payload gives.

    - ``subject``: plain text, at most MAX_SUBJECT_CHARS; ``from_name`` plain text, at most
      MAX_NAME_CHARS (None when empty);
    - ``text``: when the mail has HTML only, its text rendering (``html_to_text``);
    - ``message_id_header`` and ``content_type_header``: raw header values, read by
      :func:`message_id` and :func:`content_type`;
    - ``envelope_from``: :func:`envelope_sender`; :data:`MISSING` when the payload gave none at
      all, which is not a null sender: the From address stands in, and a mail with neither has
      no sender to show and is refused (MalformedMessage). A mail without From but with an
      envelope sender is posted as its sender's (``app.inbound.rules.author_address``).
    """
    sender = envelope_sender(envelope_from)
    if sender == MISSING:
        if from_address is None:
            raise MalformedMessage("the mail has neither a From address nor an envelope sender")
        sender = from_address
    if text is None and html:
        text = html_to_text(html)
    return InboundEmail(
        provider=provider,
        recipients=tuple(recipients),
        envelope_from=sender,
        from_address=from_address,
        from_name=plain_text(from_name, MAX_NAME_CHARS) or None if from_name else None,
        subject=plain_text(subject or "", MAX_SUBJECT_CHARS),
        text=text,
        html=html,
        message_id=message_id(message_id_header),
        headers=tuple(headers),
        attachments=tuple(attachments),
        omitted=tuple(omitted),
        content_type=content_type(content_type_header),
        size_bytes=size_bytes,
        spf=spf,
        dkim=dkim,
        event_id=event_id,
    )
