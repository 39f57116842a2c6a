"""Short-lived signed attachment URLs, usable without the Bearer header (``<img>``, links)."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

from app.config import Settings

DEFAULT_TTL_SECONDS = 900
# Expiries are rounded up to this step, so reading a post twice within it gives the same URLs
# and a browser's cache can serve them.
EXPIRY_STEP_SECONDS = 60


def url_signing_keys(settings: Settings) -> list[bytes]:
    """``URL_SIGNING_KEYS``: the first signs, every one verifies (a rotation keeps old URLs)."""
    if not settings.url_signing_keys:
        raise RuntimeError("signing attachment URLs needs URL_SIGNING_KEYS")
    return [key.get_secret_value().encode() for key in settings.url_signing_keys]


def sign(platform_id: str, attachment_id: uuid.UUID | str, expires: int, key: bytes) -> str:
    """The MAC names the tenant too: a URL is valid for one platform's attachment only."""
    message = f"{len(platform_id)}:{platform_id}:{attachment_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(
    platform_id: str,
    attachment_id: uuid.UUID | str,
    expires: int,
    sig: str,
    keys: list[bytes],
    now: float | None = None,
) -> bool:
    """True when ``sig`` signs this platform's attachment and expiry with any of ``keys``, and
    the expiry has not passed."""
    if expires < (time.time() if now is None else now):
        return False
    valid = False
    for key in keys:  # every key compared: constant time overall
        expected = sign(platform_id, attachment_id, expires, key)
        valid |= hmac.compare_digest(expected.encode(), sig.encode())
    return valid


def signed_path(
    platform_id: str,
    attachment_id: uuid.UUID | str,
    key: bytes,
    ttl: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
) -> str:
    """``/v1/attachments/{id}/content?expires=…&sig=…``, valid for at least ``ttl`` seconds."""
    moment = int(time.time() if now is None else now) + ttl
    expires = -(-moment // EXPIRY_STEP_SECONDS) * EXPIRY_STEP_SECONDS
    return (
        f"/v1/attachments/{attachment_id}/content"
        f"?expires={expires}&sig={sign(platform_id, attachment_id, expires, key)}"
    )
