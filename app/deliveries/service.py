from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.api.security import Principal
from app.config import Settings
from app.db.repository import PageResult
from app.deliveries.repository import DeliveryRepository
from app.errors import Forbidden, NotFound
from app.integrations.service import IntegrationService
from app.models import Delivery, DeliveryStatus


class DeliveryService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.deliveries = DeliveryRepository(session)
        self.integrations = IntegrationService(session, settings)

    async def for_integration(
        self, user: Principal, integration_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> PageResult[Delivery]:
        integration = await self.integrations.get(user, integration_id)  # 404 if not visible
        stmt = self.deliveries.platform_stmt(user.platform_id, integration_id=integration.id)
        return await self.deliveries.page(
            stmt, limit=limit, cursor=cursor, created=Delivery.received_at
        )

    async def for_platform(
        self,
        user: Principal,
        *,
        status: DeliveryStatus | None,
        reason: str | None,
        limit: int,
        cursor: str | None,
    ) -> PageResult[Delivery]:
        if not user.is_admin:
            raise Forbidden("Only platform admins see the platform's deliveries.")
        stmt = self.deliveries.platform_stmt(user.platform_id, status=status, reason=reason)
        return await self.deliveries.page(
            stmt, limit=limit, cursor=cursor, created=Delivery.received_at
        )

    async def unrouted(
        self, *, status: DeliveryStatus | None, reason: str | None, limit: int, cursor: str | None
    ) -> PageResult[Delivery]:
        stmt = self.deliveries.platform_stmt(None, status=status, reason=reason)
        return await self.deliveries.page(
            stmt, limit=limit, cursor=cursor, created=Delivery.received_at
        )

    async def get(self, user: Principal, delivery_id: uuid.UUID) -> Delivery:
        delivery = await self.deliveries.get(user.platform_id, delivery_id)
        if delivery is None:
            raise NotFound("No such delivery.")
        if user.is_admin:
            return delivery
        if delivery.integration_id is not None:
            try:
                await self.integrations.get(user, delivery.integration_id)
                return delivery
            except NotFound:
                pass
        raise NotFound("No such delivery.")

    async def replayable(self, user: Principal, delivery_id: uuid.UUID) -> Delivery:
        delivery = await self.get(user, delivery_id)
        if not user.is_admin:
            raise Forbidden("Only platform admins replay deliveries.")
        return delivery
