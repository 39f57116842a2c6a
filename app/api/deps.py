"""Short ``Annotated`` aliases for what endpoints depend on."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.security import Principal, check_operator_token, decode_user_token
from app.config import Settings
from app.db.session import get_session
from app.errors import Unauthenticated, UnsupportedMediaType
from app.models import Platform


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

user_bearer = HTTPBearer(
    scheme_name="UserToken",
    bearerFormat="JWT",
    auto_error=False,
    description="A platform user's JWT (HS256, or RS256 when a public key is configured).",
)
operator_bearer = HTTPBearer(
    scheme_name="OperatorToken", auto_error=False, description="The operator token."
)
UserCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(user_bearer)]
OperatorCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(operator_bearer)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials.strip():
        raise Unauthenticated("A Bearer token is required.")
    return credentials.credentials.strip()


async def current_user(
    credentials: UserCredentials, settings: SettingsDep, session: SessionDep
) -> Principal:
    principal = decode_user_token(_token(credentials), settings)
    if await session.get(Platform, principal.platform_id) is None:
        raise Unauthenticated("The token names a platform that does not exist.")
    return principal


async def operator(credentials: OperatorCredentials, settings: SettingsDep) -> None:
    check_operator_token(_token(credentials), settings)


CurrentUser = Annotated[Principal, Depends(current_user)]
Operator = Depends(operator)


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def json_body_only(request: Request) -> None:
    """An endpoint that reads a JSON body refuses a body of another type (415), or of no declared
    type, before validating anything; an empty body without a type is left to validation."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return
    content_type = request.headers.get("content-type")
    if content_type is None:
        if await request.body():  # already read by FastAPI: no second read of the stream
            raise UnsupportedMediaType("The body must be sent as application/json.")
    elif not _is_json(content_type):
        media_type = content_type.split(";", 1)[0].strip()
        raise UnsupportedMediaType(f"This endpoint reads application/json, not {media_type!r}.")


JsonBodyOnly = Depends(json_body_only)
