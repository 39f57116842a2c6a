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
_KEY_CONTEXT = b"mailslot-attachment-url\0"


def url_signing_key(settings: Settings) -> bytes:
    """A key of its own, derived from the JWT secret (or the operator token)."""
    secret = settings.jwt_secret or settings.operator_token
    if secret is None:
        raise RuntimeError("signing attachment URLs needs JWT_SECRET or OPERATOR_TOKEN")
    return hashlib.sha256(_KEY_CONTEXT + secret.get_secret_value().encode()).digest()


def sign(attachment_id: uuid.UUID | str, expires: int, key: bytes) -> str:
    message = f"{attachment_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(
    attachment_id: uuid.UUID | str,
    expires: int,
    sig: str,
    key: bytes,
    now: float | None = None,
) -> bool:
    """True when ``sig`` signs this attachment and expiry, and the expiry has not passed."""
    if expires < (time.time() if now is None else now):
        return False
    expected = sign(attachment_id, expires, key)
    return hmac.compare_digest(expected.encode(), sig.encode())


def signed_path(
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
        f"?expires={expires}&sig={sign(attachment_id, expires, key)}"
    )
