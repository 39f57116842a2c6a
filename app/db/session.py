"""One transaction per request."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Committed when the endpoint returns (before the answer is sent), rolled back if it raises."""
    async with request.app.state.sessionmaker.begin() as session:
        yield session
