from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.api.problems import responses
from app.errors import Unavailable

router = APIRouter(tags=["health"])

READY_TIMEOUT_SECONDS = 3


class Health(BaseModel):
    status: str


@router.get("/healthz", status_code=200)
async def healthz() -> Health:
    """Answers while the process lives."""
    return Health(status="ok")


@router.get("/readyz", status_code=200, responses=responses(503))
async def readyz(request: Request) -> Health:
    """Answers 200 only while the database answers."""
    try:
        async with (
            asyncio.timeout(READY_TIMEOUT_SECONDS),
            request.app.state.engine.connect() as conn,
        ):
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        raise Unavailable("The database does not answer.") from exc
    return Health(status="ok")
