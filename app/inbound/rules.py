"""Product rules on a normalised mail: automatic mail, allowed senders, recipient addresses."""

from __future__ import annotations

import re

from app.inbound.message import parse_from
from app.inbound.model import InboundEmail

MAX_AUTHOR_CHARS = 320  # posts.author_email


def author_address(email: InboundEmail) -> str | None:
    """Who the post shows as its author: the From address, or, for a mail without a readable
    From, its envelope sender (None when neither is an address). Allowed senders and the
    ``verified`` mark are judged on this same address."""
    if email.from_address:
        return email.from_address
    if email.envelope_from is None or len(email.envelope_from) > MAX_AUTHOR_CHARS:
        return None
    address, _ = parse_from(email.envelope_from)
    return address if address and len(address) <= MAX_AUTHOR_CHARS else None


# Precedence ``bulk`` and ``list`` (newsletters, mailing lists) mark no automatic mail: they are
# posted normally, forwarding a newsletter into a group being a main use of the product.
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"\\]+@[^\s@<>()\[\],;:\"\\]+")


def _first_word(value: str) -> str:
    """The value before any parameter or comment, lower-case (``auto-replied; owner=x`` → ...)."""
    return re.split(r"[;(]", value, maxsplit=1)[0].strip().lower()


# Auto-Submitted values of notifications a program sends on its own (RFC 3834 "auto-generated",
# RFC 5436 "auto-notified"): alerts, CI, calendars. Any other value but "no" ("auto-replied",
# or one we do not know) is treated as a reply.
_GENERATED_SUBMITTED = frozenset({"auto-generated", "auto-notified"})

GENERATED = "generated"
REPLY = "reply"


def automatic_kind(email: InboundEmail) -> str | None:
    """What kind of automatic mail this is: ``REPLY`` (a vacation or other automatic reply, a
    bounce or delivery report: never posted, so that no mail loop can form), ``GENERATED`` (a
    notification a program sent on its own: posted when the integration accepts automatic
    mail), or None (a person's mail).

    Replies: a null envelope sender, a delivery report (``multipart/report``),
    ``Auto-Submitted: auto-replied`` (or any value but ``no`` and the generated ones),
    ``X-Autoreply``, ``X-Autorespond``, ``Precedence: auto_reply``. Generated:
    ``Auto-Submitted: auto-generated`` or ``auto-notified``, ``Precedence: junk``. A reply marker
    wins over a generated one. ``X-Auto-Response-Suppress`` is a request to *us* not to answer,
    not a marker of automatic mail: it changes nothing.
    """
    if is_null_sender(email.envelope_from):
        return REPLY
    if email.content_type.strip().lower() == "multipart/report":
        return REPLY
    kind = None
    for name, value in email.headers:
        if name == "auto-submitted":
            word = _first_word(value)
            if word in _GENERATED_SUBMITTED:
                kind = GENERATED
            elif word != "no":
                return REPLY
        elif name in {"x-autoreply", "x-autorespond"}:
            return REPLY
        elif name == "precedence":
            word = _first_word(value)
            if word == "auto_reply":
                return REPLY
            if word == "junk":
                kind = GENERATED
    return kind


def is_auto_reply(email: InboundEmail) -> bool:
    """True for automatic mail of any kind (``automatic_kind``): what an integration refuses
    unless it accepts automatic mail, and then only replies."""
    return automatic_kind(email) is not None


def is_null_sender(envelope_from: str | None) -> bool:
    """A bounce or other notification: the envelope sender is empty (``<>``)."""
    if envelope_from is None:
        return True
    return not envelope_from.strip().strip("<>").strip()


def sender_allowed(from_address: str | None, allowed: list[str]) -> bool:
    """Whether a From address passes an integration's allow-list.

    An empty list allows everyone. Entries are ``user@domain`` (that address) or ``@domain``
    (any address at exactly that domain, not its subdomains); case does not matter. A mail
    without a readable From address passes only an empty list.
    """
    if not allowed:
        return True
    if not from_address:
        return False
    address = from_address.strip().lower()
    domain = address.rpartition("@")[2]
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry.startswith("@"):
            if domain and domain == entry[1:]:
                return True
        elif address == entry:
            return True
    return False


def normalise_recipient(address: str) -> str | None:
    """The routing form of an envelope recipient: bare, lower-case, without a ``+tag``.

    ``"Group" <News+Tag@In.Example.com>`` → ``news@in.example.com``. None when the value is not
    an address.
    """
    value = address.strip()
    if "<" in value:
        inner = value[value.rfind("<") + 1 :]
        end = inner.find(">")
        value = inner[:end] if end >= 0 else inner
    value = value.strip().strip("<>").strip().lower()
    if not _ADDRESS.fullmatch(value):
        return None
    local, _, domain = value.rpartition("@")
    local = local.split("+", 1)[0]
    domain = domain.rstrip(".")
    if not local or not domain:
        return None
    return f"{local}@{domain}"
