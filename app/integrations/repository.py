from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from app.db.repository import Repository
from app.models import (
    Delivery,
    DeliveryStatus,
    GroupMember,
    GroupRole,
    Integration,
    IntegrationAddress,
    Service,
)


class IntegrationRepository(Repository[Integration]):
    model = Integration

    def _live(self, platform_id: str) -> sa.Select[Integration]:
        return sa.select(Integration).where(
            Integration.platform_id == platform_id, Integration.deleted_at.is_(None)
        )

    async def get(self, platform_id: str, integration_id: uuid.UUID) -> Integration | None:
        stmt = self._live(platform_id).where(Integration.id == integration_id)
        return (await self.session.scalars(stmt)).first()

    async def count_live(self, platform_id: str) -> int:
        stmt = (
            sa.select(sa.func.count())
            .select_from(Integration)
            .where(Integration.platform_id == platform_id, Integration.deleted_at.is_(None))
        )
        return int(await self.session.scalar(stmt) or 0)

    def visible_stmt(
        self,
        platform_id: str,
        *,
        user_id: str | None,
        group_id: uuid.UUID | None = None,
        service: Service | None = None,
        q: str | None = None,
        enabled: bool | None = None,
    ) -> sa.Select[Integration]:
        """Live integrations; a non-admin ``user_id`` sees its managed groups' and its own.
        ``q``: the title or the address contains it, case-insensitively (``%`` and ``_`` are
        plain characters); ``enabled``: only enabled, or only disabled, ones."""
        stmt = self._live(platform_id)
        if user_id is not None:
            managed = sa.select(GroupMember.group_id).where(
                GroupMember.platform_id == platform_id,
                GroupMember.user_id == user_id,
                GroupMember.role == GroupRole.manager,
            )
            stmt = stmt.where(
                sa.or_(Integration.group_id.in_(managed), Integration.created_by == user_id)
            )
        if group_id is not None:
            stmt = stmt.where(Integration.group_id == group_id)
        if service is not None:
            stmt = stmt.where(Integration.service == service)
        if q:
            stmt = stmt.where(
                sa.or_(
                    Integration.title.icontains(q, autoescape=True),
                    Integration.address.icontains(q, autoescape=True),
                )
            )
        if enabled is not None:
            stmt = stmt.where(Integration.enabled.is_(enabled))
        return stmt

    async def get_for_update(
        self, platform_id: str, integration_id: uuid.UUID
    ) -> Integration | None:
        """Lock the live integration's row (PostgreSQL); SQLite writers are already serialised."""
        stmt = self._live(platform_id).where(Integration.id == integration_id).with_for_update()
        return (await self.session.scalars(stmt.execution_options(populate_existing=True))).first()

    async def previous_addresses(
        self, integration_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[IntegrationAddress]]:
        """The previous addresses of each integration, newest first."""
        if not integration_ids:
            return {}
        stmt = (
            sa.select(IntegrationAddress)
            .where(IntegrationAddress.integration_id.in_(integration_ids))
            .order_by(IntegrationAddress.created_at.desc(), IntegrationAddress.address)
        )
        found: dict[uuid.UUID, list[IntegrationAddress]] = {}
        for row in await self.session.scalars(stmt):
            found.setdefault(row.integration_id, []).append(row)
        return found

    async def stats(
        self, integration_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[int, int, datetime | None]]:
        """``(accepted, refused, last_received_at)`` per integration, from the delivery log."""
        if not integration_ids:
            return {}
        stmt = (
            sa.select(
                Delivery.integration_id,
                sa.func.count().filter(Delivery.status == DeliveryStatus.accepted),
                sa.func.count().filter(Delivery.status == DeliveryStatus.rejected),
                sa.func.max(Delivery.received_at),
            )
            .where(Delivery.integration_id.in_(integration_ids))
            .group_by(Delivery.integration_id)
        )
        rows = (await self.session.execute(stmt)).all()
        return {row[0]: (int(row[1]), int(row[2]), _aware(row[3])) for row in rows if row[0]}


def _aware(value: datetime | str | None) -> datetime | None:
    from app.db.base import UTCDateTime

    if isinstance(value, str):  # SQLite returns an aggregate's timestamp as text
        value = datetime.fromisoformat(value)
    return UTCDateTime().process_result_value(value, None)
