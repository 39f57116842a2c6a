from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAt, UTCDateTime, utcnow
from app.models.enums import Plan


class Platform(CreatedAt, Base):
    """A tenant. Its id may be the host platform's own id."""

    __tablename__ = "platforms"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    plan: Mapped[Plan] = mapped_column(sa.Enum(Plan, native_enum=False, length=32))
    members_can_add_integrations: Mapped[bool] = mapped_column(default=False)


class PlatformDeletion(Base):
    """The operator's removal of a platform and its progress (``DELETE /v1/platforms/{id}``).
    Not a row of the platform: it names the platform's id only, with counts, and outlives it
    (the cleanup command forgets it after ``DELIVERY_RETENTION_DAYS``)."""

    __tablename__ = "platform_deletions"

    platform_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16))  # running, done, failed
    removed: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
