"""Tokens for tests."""

from __future__ import annotations

import time
from typing import Any

import jwt

JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
OPERATOR_TOKEN = "test-operator-token-0123456789abcdef"


def token(
    user_id: str | None = "alice",
    platform: str | None = "p1",
    role: str | None = "admin",
    *,
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    expires_in: int | None = 3600,
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {
        "sub": user_id,
        "platform": platform,
        "role": role,
        "exp": None if expires_in is None else int(time.time()) + expires_in,
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None}, secret, algorithm=algorithm
    )


def bearer(
    user_id: str = "alice", platform: str = "p1", role: str = "admin", **kw: Any
) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user_id, platform, role, **kw)}"}


OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
