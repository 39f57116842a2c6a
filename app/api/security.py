"""Who is calling: a platform user's JWT, or the operator token."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import jwt

from app.config import Settings
from app.errors import Unauthenticated
from app.models.enums import Role

JWT_LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class Principal:
    user_id: str
    platform_id: str
    role: Role
    email: str | None = None
    name: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin


def decode_user_token(token: str, settings: Settings) -> Principal:
    """Verify the signature, ``exp`` (30 s leeway) and the claims; never trust ``alg`` alone."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthenticated("The token is malformed.") from exc
    alg = header.get("alg")
    key: Any
    if alg == "HS256" and settings.jwt_secret is not None:
        key = settings.jwt_secret.get_secret_value()
    elif alg == "RS256" and settings.jwt_public_key is not None:
        key = settings.jwt_public_key.get_secret_value()
    else:
        raise Unauthenticated("The token's algorithm is not accepted.")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            leeway=JWT_LEEWAY_SECONDS,
            options={"require": ["exp", "sub", "platform", "role"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("The token has expired.") from exc
    except (jwt.PyJWTError, ValueError) as exc:
        raise Unauthenticated("The token is not valid.") from exc
    sub, platform, role = claims.get("sub"), claims.get("platform"), claims.get("role")
    if not isinstance(sub, str) or not sub or not isinstance(platform, str) or not platform:
        raise Unauthenticated("The token's sub and platform must be strings.")
    if role not in {r.value for r in Role}:
        raise Unauthenticated("The token's role is unknown.")
    email, name = claims.get("email"), claims.get("name")
    return Principal(
        user_id=sub,
        platform_id=platform,
        role=Role(role),
        email=email if isinstance(email, str) else None,
        name=name if isinstance(name, str) else None,
    )


def check_operator_token(token: str, settings: Settings) -> None:
    expected = settings.operator_token
    if expected is None or not hmac.compare_digest(
        token.encode(), expected.get_secret_value().encode()
    ):
        raise Unauthenticated("The operator token is required.")
