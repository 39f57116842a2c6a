from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAt
from app.models.enums import GroupRole


class GroupMember(CreatedAt, Base):
    """A user's membership of a group. Users are known by the host platform's ids."""

    __tablename__ = "group_members"
    __table_args__ = (sa.Index("ix_group_members_user", "platform_id", "user_id"),)

    group_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    platform_id: Mapped[str] = mapped_column(sa.ForeignKey("platforms.id", ondelete="CASCADE"))
    role: Mapped[GroupRole] = mapped_column(sa.Enum(GroupRole, native_enum=False, length=16))
