"""Generated addresses: ``<slug>.<token>@<domain>``; pure functions."""

from __future__ import annotations

import re
import secrets
import string
import unicodedata

SLUG_MAX = 32
TOKEN_ALPHABET = string.ascii_lowercase + string.digits
TOKEN_LENGTH = 26  # 26 x log2(36) = 134 bits of randomness


def slugify(title: str) -> str:
    """Fold to ASCII ``[a-z0-9-]``, at most 32 characters; ``mail`` when nothing is left."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")
    slug = slug[:SLUG_MAX].rstrip("-")
    return slug or "mail"


def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def new_address(title: str, domain: str) -> str:
    return f"{slugify(title)}.{new_token()}@{domain}"


def display_address(title: str, address: str) -> str:
    """An RFC 5322 mailbox with the title as a quoted display name (UTF-8 kept, RFC 6532)."""
    quoted = title.replace("\\", "\\\\").replace('"', '\\"')
    # A quoted-pair keeps "=?" from being read as the start of an RFC 2047 encoded-word
    # (Python's parser, among others, decodes those even inside a quoted string).
    quoted = quoted.replace("=?", "=\\?")
    return f'"{quoted}" <{address}>'
