from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, UUIDPrimaryKey, utcnow
from app.models.enums import DeliveryStatus


class Delivery(UUIDPrimaryKey, Base):
    """One row per mail and integration (or none, when no integration matched)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.Index("ix_deliveries_platform_received", "platform_id", "received_at", "id"),
        # With the status (PostgreSQL): an integration's counts by status and its last mail
        # (the integrations' stats) are read from this index alone, without an index of their
        # own to keep up on every mail.
        sa.Index(
            "ix_deliveries_integration_received",
            "integration_id",
            "received_at",
            "id",
            postgresql_include=["status"],
        ),
        sa.Index("ix_deliveries_dedupe", "dedupe_key"),
        sa.Index(
            "ix_deliveries_unrouted_received",
            "received_at",
            "id",
            postgresql_where=sa.text("platform_id IS NULL"),
            sqlite_where=sa.text("platform_id IS NULL"),
        ),
    )

    # Its integration's platform, for tenant scoping (NULL with the integration: unrouted mail).
    # No foreign key of its own, as ``Post.platform_id``: the integration's key ties it.
    platform_id: Mapped[str | None] = mapped_column(sa.String(64))
    integration_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("integrations.id"))
    provider: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[DeliveryStatus] = mapped_column(
        sa.Enum(DeliveryStatus, native_enum=False, length=16)
    )
    reason: Mapped[str | None] = mapped_column(sa.String(64))
    envelope_from: Mapped[str | None] = mapped_column(sa.String(998))
    envelope_to: Mapped[str | None] = mapped_column(sa.String(998))
    from_: Mapped[str | None] = mapped_column("from", sa.String(998))
    subject: Mapped[str | None] = mapped_column(sa.Text)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    message_id: Mapped[str | None] = mapped_column(sa.String(998))
    spf: Mapped[str | None] = mapped_column(sa.String(32))
    dkim: Mapped[str | None] = mapped_column(sa.String(200))
    post_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    error: Mapped[str | None] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    dedupe_key: Mapped[str | None] = mapped_column(sa.String(128))
    content_sha256: Mapped[str | None] = mapped_column(sa.String(64))  # kept content (JSON blob)
    # The integration's address the mail came to (its current one, or a previous one).
    address: Mapped[str | None] = mapped_column(sa.String(320))
