from __future__ import annotations

import asyncio
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from app.api.problems import responses
from app.errors import Unavailable

router = APIRouter(tags=["health"])

READY_TIMEOUT_SECONDS = 3


class Health(BaseModel):
    """The process (`/healthz`), or the process, its database and its blob store (`/readyz`),
    answer."""

    model_config = ConfigDict(
        use_attribute_docstrings=True, json_schema_extra={"examples": [{"status": "ok"}]}
    )

    status: Literal["ok"]
    """Always `ok` (a failure is a 503 problem)."""


@router.get("/healthz", status_code=200, openapi_extra={"security": []})
async def healthz() -> Health:
    """Answers 200 while the process lives (a liveness probe); needs no credentials."""
    return Health(status="ok")


@router.get("/readyz", status_code=200, responses=responses(503), openapi_extra={"security": []})
async def readyz(request: Request) -> Health:
    """Answers 200 only while the database and the blob store answer (a readiness probe), else
    503 within 3 seconds each; needs no credentials."""
    try:
        async with (
            asyncio.timeout(READY_TIMEOUT_SECONDS),
            request.app.state.engine.connect() as conn,
        ):
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        raise Unavailable("The database does not answer.") from exc
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await request.app.state.blobs.check()
    except Exception as exc:
        raise Unavailable("The blob store does not answer.") from exc
    return Health(status="ok")
