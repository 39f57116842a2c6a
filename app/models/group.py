from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAt, UUIDPrimaryKey


class Group(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "groups"
    __table_args__ = (sa.Index("ix_groups_platform_created", "platform_id", "created_at", "id"),)

    platform_id: Mapped[str] = mapped_column(sa.ForeignKey("platforms.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str | None] = mapped_column(sa.String(2000))
    members_can_add_integrations: Mapped[bool] = mapped_column(default=False)
    created_by: Mapped[str] = mapped_column(sa.String(200))
