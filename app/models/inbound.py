from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class ProviderToken(Base):
    """A provider's one-time event token (Mailgun ``token``), pointing at the delivery it made."""

    __tablename__ = "provider_tokens"

    provider: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    token: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class RateCounter(Base):
    """Deliveries counted per integration and fixed time window."""

    __tablename__ = "rate_counters"

    integration_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("integrations.id", ondelete="CASCADE"), primary_key=True
    )
    window_seconds: Mapped[int] = mapped_column(primary_key=True)
    window_start: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
