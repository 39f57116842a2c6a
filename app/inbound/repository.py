"""SQL of the inbound path. Dialect differences (ON CONFLICT) live here only."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Delivery, DeliveryStatus, Integration, Post, ProviderToken, RateCounter

# The tables, for Core statements on the hot path (no ORM bulk-insert machinery).
POSTS = cast(sa.Table, Post.__table__)
TOKENS = cast(sa.Table, ProviderToken.__table__)

FINAL_STATUSES = (DeliveryStatus.accepted, DeliveryStatus.duplicate, DeliveryStatus.rejected)


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


class InboundRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def integrations_by_address(self, addresses: Sequence[str]) -> list[Integration]:
        if not addresses:
            return []
        stmt = (
            sa.select(Integration)
            .where(Integration.address.in_(addresses), Integration.deleted_at.is_(None))
            .order_by(Integration.created_at, Integration.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def final_delivery(self, integration_id: uuid.UUID, dedupe_key: str) -> Delivery | None:
        """The first delivery of this mail to this integration that ended for good."""
        stmt = (
            sa.select(Delivery)
            .where(
                Delivery.integration_id == integration_id,
                Delivery.dedupe_key == dedupe_key,
                Delivery.status.in_(FINAL_STATUSES),
            )
            .order_by(Delivery.received_at, Delivery.id)
            .limit(1)
        )
        return (await self.session.scalars(stmt)).first()

    async def claim_token(self, provider: str, token: str) -> bool:
        """Insert the token; False when it was seen before (a concurrent one waits for commit)."""
        # Core on the table, values as parameters: one cached statement, no ORM bulk path.
        table = TOKENS
        stmt = (
            _insert(self.session, table)
            .on_conflict_do_nothing(index_elements=["provider", "token"])
            .returning(table.c.token)
        )
        inserted = await self.session.execute(
            stmt, {"provider": provider, "token": token, "delivery_id": None}
        )
        return inserted.first() is not None

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

    async def point_token(self, provider: str, token: str, delivery_id: uuid.UUID) -> None:
        table = TOKENS
        await self.session.execute(
            sa.update(table)
            .where(table.c.provider == provider, table.c.token == token)
            .values(delivery_id=delivery_id)
        )

    async def add_post_once(self, values: dict[str, Any]) -> uuid.UUID | None:
        """Insert the post unless this integration already has one with the same dedupe key."""
        table = POSTS
        stmt = (
            _insert(self.session, table)
            .on_conflict_do_nothing(index_elements=["integration_id", "dedupe_key"])
            .returning(table.c.id)
        )
        post_id: uuid.UUID | None = (await self.session.execute(stmt, values)).scalar_one_or_none()
        return post_id

    async def post_id_for(self, integration_id: uuid.UUID, dedupe_key: str) -> uuid.UUID | None:
        stmt = sa.select(Post.id).where(
            Post.integration_id == integration_id, Post.dedupe_key == dedupe_key
        )
        return await self.session.scalar(stmt)

    async def count_in_windows(
        self, integration_id: uuid.UUID, windows: Sequence[tuple[int, int]]
    ) -> list[int]:
        """Add one to each ``(seconds, start)`` window of the integration; return the new counts."""
        counts = []
        for seconds, start in windows:
            stmt = (
                _insert(self.session, RateCounter)
                .values(
                    integration_id=integration_id,
                    window_seconds=seconds,
                    window_start=start,
                    count=1,
                )
                .on_conflict_do_update(
                    index_elements=["integration_id", "window_seconds", "window_start"],
                    set_={"count": RateCounter.count + 1},
                )
                .returning(RateCounter.count)
            )
            counts.append(int((await self.session.execute(stmt)).scalar_one()))
        return counts
