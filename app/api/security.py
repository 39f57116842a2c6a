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


def _candidate_keys(header: dict[str, Any], settings: Settings) -> tuple[str, list[str]]:
    """The algorithm and the keys to try: ``alg`` picks the key kind, ``kid`` one named key."""
    alg = header.get("alg")
    if alg == "HS256" and settings.jwt_secret:
        keys = settings.jwt_secret
    elif alg == "RS256" and settings.jwt_public_key:
        keys = settings.jwt_public_key
    else:
        raise Unauthenticated("The token's algorithm is not accepted.")
    kid = header.get("kid")
    if kid is not None:
        named = [k for k in keys if k.kid is not None]
        if named:  # keys with ids: the token's kid names one, or none fits
            keys = [k for k in named if k.kid == kid]
            if not keys:
                raise Unauthenticated("The token's key id is unknown.")
    return alg, [k.secret.get_secret_value() for k in keys]


def decode_user_token(token: str, settings: Settings) -> Principal:
    """Verify the signature, ``exp`` (30 s leeway), ``aud``, ``iss``, ``iat`` and the lifetime,
    then the claims; never trust ``alg`` alone."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthenticated("The token is malformed.") from exc
    alg, keys = _candidate_keys(header, settings)
    claims: dict[str, Any] | None = None
    for key in keys:  # rotation: any configured key of the kind (or the one the kid names)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                leeway=JWT_LEEWAY_SECONDS,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={
                    "require": ["exp", "iat", "sub", "platform", "role"],
                    "verify_aud": settings.jwt_audience is not None,
                    "verify_iss": settings.jwt_issuer is not None,
                },
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The token has expired.") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("The token is not meant for this service (aud).") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("The token's issuer is not accepted (iss).") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthenticated("The token is not valid.") from exc
    if claims is None:
        raise Unauthenticated("The token is not valid.")
    expires, issued = claims["exp"], claims["iat"]  # PyJWT also lets numeric strings through
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (expires, issued)):
        raise Unauthenticated("The token's exp and iat must be numbers.")
    if expires - issued > settings.jwt_max_lifetime_seconds:
        raise Unauthenticated(
            f"The token lives longer than {settings.jwt_max_lifetime_seconds} seconds (exp - iat)."
        )
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
    """Any one of the configured operator tokens (several during a rotation)."""
    valid = False
    for expected in settings.operator_token:  # every one compared: constant time overall
        valid |= hmac.compare_digest(token.encode(), expected.get_secret_value().encode())
    if not valid:
        raise Unauthenticated("The operator token is required.")
