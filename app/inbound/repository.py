"""What the inbound path reads through the ORM: earlier deliveries of a mail, and the post a
duplicate points at. Everything it writes goes through ``app.inbound.writer``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.inbound.decide import Route
from app.inbound.writer import Writer
from app.models import Delivery, DeliveryStatus, Integration, Post

FINAL_STATUSES = (DeliveryStatus.accepted, DeliveryStatus.duplicate, DeliveryStatus.rejected)

__all__ = ["FINAL_STATUSES", "InboundRepository", "Route"]


class InboundRepository:
    def __init__(self, session: AsyncSession | AsyncConnection) -> None:
        self.session = session

    async def routes(self, addresses: Sequence[str]) -> list[Route]:
        """The integrations at these addresses (deleted ones too: their mail is refused, and
        logged for their platform), oldest first."""
        return await Writer(self.session).routes(addresses)

    async def route(self, integration_id: uuid.UUID) -> Route | None:
        row = (
            await self.session.execute(
                sa.select(Integration.__table__).where(Integration.id == integration_id)
            )
        ).first()
        return None if row is None else Route.of(row._mapping)

    async def final_delivery(
        self,
        integration_id: uuid.UUID,
        dedupe_key: str,
        statuses: Sequence[DeliveryStatus] = FINAL_STATUSES,
        *,
        other_than: uuid.UUID | None = None,
    ) -> Delivery | None:
        """The first delivery of this mail to this integration that ended for good (with one of
        ``statuses``; ``other_than``: not that delivery)."""
        stmt = (
            sa.select(Delivery)
            .where(
                Delivery.integration_id == integration_id,
                Delivery.dedupe_key == dedupe_key,
                Delivery.status.in_(statuses),
                *([] if other_than is None else [Delivery.id != other_than]),
            )
            .order_by(Delivery.received_at, Delivery.id)
            .limit(1)
        )
        return (await self.session.scalars(stmt)).first()

    async def deliveries_by_key(
        self, dedupe_key: str, statuses: Sequence[DeliveryStatus] = FINAL_STATUSES
    ) -> list[Delivery]:
        """Deliveries of one provider event (all its integrations), by default those that ended."""
        stmt = (
            sa.select(Delivery)
            .where(Delivery.dedupe_key == dedupe_key, Delivery.status.in_(statuses))
            .order_by(Delivery.received_at, Delivery.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def post_id_for(self, integration_id: uuid.UUID, dedupe_key: str) -> uuid.UUID | None:
        stmt = sa.select(Post.id).where(
            Post.integration_id == integration_id, Post.dedupe_key == dedupe_key
        )
        return await self.session.scalar(stmt)
