from __future__ import annotations

import uuid

import sqlalchemy as sa

from app.db.repository import Repository
from app.models import Delivery, DeliveryStatus


class DeliveryRepository(Repository[Delivery]):
    model = Delivery

    def platform_stmt(
        self,
        platform_id: str | None,
        *,
        integration_id: uuid.UUID | None = None,
        status: DeliveryStatus | None = None,
        reason: str | None = None,
    ) -> sa.Select[Delivery]:
        stmt = sa.select(Delivery).where(
            Delivery.platform_id.is_(None)
            if platform_id is None
            else Delivery.platform_id == platform_id
        )
        if integration_id is not None:
            stmt = stmt.where(Delivery.integration_id == integration_id)
        if status is not None:
            stmt = stmt.where(Delivery.status == status)
        if reason is not None:
            stmt = stmt.where(Delivery.reason == reason)
        return stmt

    async def get(self, platform_id: str, delivery_id: uuid.UUID) -> Delivery | None:
        stmt = self.platform_stmt(platform_id).where(Delivery.id == delivery_id)
        return (await self.session.scalars(stmt)).first()
