from __future__ import annotations

import sqlalchemy as sa

from app.db.repository import Repository
from app.models import Platform


class PlatformRepository(Repository[Platform]):
    model = Platform

    async def get(self, platform_id: str) -> Platform | None:
        return await self.session.get(Platform, platform_id)

    async def get_for_update(self, platform_id: str) -> Platform | None:
        """Lock the platform row (PostgreSQL); SQLite writers are already serialised."""
        stmt = sa.select(Platform).where(Platform.id == platform_id).with_for_update()
        return (await self.session.scalars(stmt.execution_options(populate_existing=True))).first()

    def list_stmt(self) -> sa.Select[Platform]:
        return sa.select(Platform)
