"""SQL of the inbound path. Dialect differences (ON CONFLICT) live here only."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.models import (
    Attachment,
    Delivery,
    DeliveryStatus,
    Integration,
    Post,
    ProviderToken,
    RateCounter,
)

# The tables, for Core statements on the hot path (no ORM unit of work, no bulk-insert machinery).
POSTS = cast(sa.Table, Post.__table__)
TOKENS = cast(sa.Table, ProviderToken.__table__)
DELIVERIES = cast(sa.Table, Delivery.__table__)
ATTACHMENTS = cast(sa.Table, Attachment.__table__)
INTEGRATIONS = cast(sa.Table, Integration.__table__)

FINAL_STATUSES = (DeliveryStatus.accepted, DeliveryStatus.duplicate, DeliveryStatus.rejected)


def _insert(dialect: str, table: Any) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _statements(dialect: str) -> dict[str, Any]:
    """The hot path's statements, built once per dialect (values are bound per execution)."""
    return {
        "claim": _insert(dialect, TOKENS)
        .on_conflict_do_nothing(index_elements=["provider", "token"])
        .returning(TOKENS.c.token),
        "post": _insert(dialect, POSTS)
        .on_conflict_do_nothing(index_elements=["integration_id", "dedupe_key"])
        .returning(POSTS.c.id),
        "integrations": sa.select(INTEGRATIONS)
        .where(
            INTEGRATIONS.c.address.in_(sa.bindparam("addresses", expanding=True)),
            INTEGRATIONS.c.deleted_at.is_(None),
        )
        .order_by(INTEGRATIONS.c.created_at, INTEGRATIONS.c.id),
        "delivery": sa.insert(DELIVERIES),
        "attachment": sa.insert(ATTACHMENTS),
    }


STATEMENTS = {name: _statements(name) for name in ("postgresql", "sqlite")}


class InboundRepository:
    """On an ORM session, or (the hot path) directly on a connection with Core statements."""

    def __init__(self, session: AsyncSession | AsyncConnection) -> None:
        self.session = session
        if isinstance(session, AsyncConnection):
            dialect = session.dialect.name
        else:
            dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
        self.dialect = dialect
        self.sql = STATEMENTS[dialect]

    async def integration_rows(self, addresses: Sequence[str]) -> Sequence[Row[Any]]:
        """The live integrations at these addresses, as rows (attribute names of Integration)."""
        if not addresses:
            return []
        result = await self.session.execute(
            self.sql["integrations"], {"addresses": list(addresses)}
        )
        return result.all()

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

    async def claim_token(
        self, provider: str, token: str, delivery_id: uuid.UUID | None = None
    ) -> bool:
        """Insert the token; False when it was seen before (a concurrent one waits for commit)."""
        inserted = await self.session.execute(
            self.sql["claim"],
            {"provider": provider, "token": token, "delivery_id": delivery_id},
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
        result = await self.session.execute(self.sql["post"], values)
        post_id: uuid.UUID | None = result.scalar_one_or_none()
        return post_id

    async def add_attachments(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(self.sql["attachment"], list(rows))

    async def add_delivery(self, values: dict[str, Any]) -> None:
        await self.session.execute(self.sql["delivery"], values)

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
                _insert(self.dialect, RateCounter)
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
