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


# Precedence values that mark automatic mail. ``bulk`` and ``list`` (newsletters, mailing lists)
# are posted normally: forwarding a newsletter into a group is a main use of the product.
_AUTOMATIC_PRECEDENCE = frozenset({"auto_reply", "junk"})
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"\\]+@[^\s@<>()\[\],;:\"\\]+")


def _first_word(value: str) -> str:
    """The value before any parameter or comment, lower-case (``auto-replied; owner=x`` → ...)."""
    return re.split(r"[;(]", value, maxsplit=1)[0].strip().lower()


def is_auto_reply(email: InboundEmail) -> bool:
    """True for automatic mail, which is never posted (so that no mail loop can form).

    Automatic: ``Auto-Submitted`` other than ``no`` (RFC 3834), ``X-Autoreply`` or
    ``X-Autorespond`` present, ``Precedence: auto_reply`` or ``junk``, a delivery report
    (``multipart/report``), or a null envelope sender. ``X-Auto-Response-Suppress`` is a request
    to *us* not to answer, not a marker of automatic mail: it changes nothing.
    """
    if is_null_sender(email.envelope_from):
        return True
    if email.content_type.strip().lower() == "multipart/report":
        return True
    for name, value in email.headers:
        if name == "auto-submitted" and _first_word(value) != "no":
            return True
        if name in {"x-autoreply", "x-autorespond"}:
            return True
        if name == "precedence" and _first_word(value) in _AUTOMATIC_PRECEDENCE:
            return True
    return False


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
