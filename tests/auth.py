"""Tokens for tests."""

from __future__ import annotations

import time
from typing import Any

import jwt

JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
OPERATOR_TOKEN = "test-operator-token-0123456789abcdef"
URL_SIGNING_KEY = "test-url-signing-key-0123456789abcdef0123"
JWT_AUDIENCE = "mailslot-test"
JWT_ISSUER = "https://host.example"


def token(
    user_id: str | None = "alice",
    platform: str | None = "p1",
    role: str | None = "admin",
    *,
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    expires_in: int | None = 3600,
    kid: str | None = None,
    **claims: Any,
) -> str:
    """A token as the host platform mints it; a claim given as None is left out."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": user_id,
        "platform": platform,
        "role": role,
        "iat": now,
        "exp": None if expires_in is None else now + expires_in,
        "aud": JWT_AUDIENCE,
        "iss": JWT_ISSUER,
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None},
        secret,
        algorithm=algorithm,
        headers=None if kid is None else {"kid": kid},
    )


def bearer(
    user_id: str = "alice", platform: str = "p1", role: str = "admin", **kw: Any
) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user_id, platform, role, **kw)}"}


OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
