from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.security import Principal
from app.db.repository import PageResult
from app.errors import Conflict, Forbidden, NotFound
from app.integrations.repository import IntegrationRepository
from app.models import Platform
from app.platforms.repository import PlatformRepository
from app.platforms.schemas import (
    IntegrationUsage,
    PlatformCreate,
    PlatformDetail,
    PlatformSettings,
    PlatformSettingsUpdate,
    PlatformUpdate,
    PlatformUsage,
)


class PlatformService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.platforms = PlatformRepository(session)
        self.integrations = IntegrationRepository(session)

    # operator

    async def create(self, data: PlatformCreate) -> Platform:
        platform_id = data.id or secrets.token_hex(12)
        if await self.platforms.get(platform_id) is not None:
            raise Conflict(f"A platform with id {platform_id!r} already exists.")
        platform = Platform(id=platform_id, name=data.name, plan=data.plan)
        try:
            async with self.session.begin_nested():
                return await self.platforms.add(platform)
        except IntegrityError as exc:
            raise Conflict(f"A platform with id {platform_id!r} already exists.") from exc

    async def list(self, *, limit: int, cursor: str | None) -> PageResult[Platform]:
        return await self.platforms.page(self.platforms.list_stmt(), limit=limit, cursor=cursor)

    async def get(self, platform_id: str) -> Platform:
        platform = await self.platforms.get(platform_id)
        if platform is None:
            raise NotFound("No such platform.")
        return platform

    async def update(self, platform_id: str, data: PlatformUpdate) -> Platform:
        platform = await self.get(platform_id)
        if data.name is not None:
            platform.name = data.name
        if data.plan is not None:
            platform.plan = data.plan
        await self.session.flush()
        return platform

    # tenant

    async def detail(self, user: Principal) -> PlatformDetail:
        platform = await self.get(user.platform_id)
        count = await self.integrations.count_live(platform.id)
        return PlatformDetail(
            id=platform.id,
            name=platform.name,
            plan=platform.plan,
            settings=PlatformSettings.model_validate(platform),
            usage=PlatformUsage(
                integrations=IntegrationUsage(count=count, limit=platform.plan.integration_limit)
            ),
        )

    async def update_settings(
        self, user: Principal, data: PlatformSettingsUpdate
    ) -> PlatformDetail:
        if not user.is_admin:
            raise Forbidden("Only platform admins change platform settings.")
        platform = await self.get(user.platform_id)
        platform.members_can_add_integrations = data.members_can_add_integrations
        await self.session.flush()
        return await self.detail(user)
