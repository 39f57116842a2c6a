from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAt, UTCDateTime, UUIDPrimaryKey
from app.models.enums import AutomaticMail, OversizePolicy, Service


class Integration(UUIDPrimaryKey, CreatedAt, Base):
    """An address bound to a group. Deleting keeps the row (``deleted_at``): posts still name it."""

    __tablename__ = "integrations"
    __table_args__ = (
        sa.Index(
            "ix_integrations_live_platform",
            "platform_id",
            "created_at",
            "id",
            postgresql_where=sa.text("deleted_at IS NULL"),
            sqlite_where=sa.text("deleted_at IS NULL"),
        ),
        sa.Index("ix_integrations_group", "group_id"),
    )

    platform_id: Mapped[str] = mapped_column(sa.ForeignKey("platforms.id", ondelete="CASCADE"))
    group_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("groups.id", ondelete="SET NULL")
    )
    service: Mapped[Service] = mapped_column(sa.Enum(Service, native_enum=False, length=32))
    title: Mapped[str] = mapped_column(sa.String(400))
    address: Mapped[str] = mapped_column(sa.String(320), unique=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    allowed_senders: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    oversize_attachments: Mapped[OversizePolicy] = mapped_column(
        sa.Enum(OversizePolicy, native_enum=False, length=16), default=OversizePolicy.reject
    )
    automatic_mail: Mapped[AutomaticMail] = mapped_column(
        sa.Enum(AutomaticMail, native_enum=False, length=16),
        default=AutomaticMail.refuse,
        server_default=AutomaticMail.refuse.value,
    )
    allowed_senders_verified_only: Mapped[bool] = mapped_column(
        default=False, server_default=sa.false()
    )
    created_by: Mapped[str] = mapped_column(sa.String(200))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IntegrationAddress(CreatedAt, Base):
    """A previous address of an integration (``rotate-address``): it still routes to the
    integration, whose mail is refused as ``unknown_recipient`` from ``valid_until`` on."""

    __tablename__ = "integration_addresses"
    __table_args__ = (sa.Index("ix_integration_addresses_integration", "integration_id"),)

    address: Mapped[str] = mapped_column(sa.String(320), primary_key=True)
    integration_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE")
    )
    platform_id: Mapped[str] = mapped_column(sa.ForeignKey("platforms.id", ondelete="CASCADE"))
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
