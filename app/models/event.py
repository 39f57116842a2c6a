"""Events out: the endpoints that receive them, the events, and each event's messages and tries."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAt, UTCDateTime, UUIDPrimaryKey, utcnow

# SQLite gives a row id (its autoincrement) only to an INTEGER PRIMARY KEY.
SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class EventType(StrEnum):
    """What happened (the event catalogue)."""

    post_created = "post.created"
    post_deleted = "post.deleted"
    delivery_rejected = "delivery.rejected"
    delivery_failed = "delivery.failed"
    integration_created = "integration.created"
    integration_deleted = "integration.deleted"
    ping = "ping"


class MessageStatus(StrEnum):
    """Where one event stands for one endpoint."""

    pending = "pending"
    delivered = "delivered"
    failed = "failed"


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


class EventEndpoint(UUIDPrimaryKey, CreatedAt, Base):
    """A URL of the host platform that receives events, signed with its secret."""

    __tablename__ = "event_endpoints"

    url: Mapped[str] = mapped_column(sa.String(2048))
    description: Mapped[str] = mapped_column(sa.String(400), default="")
    event_types: Mapped[list[str]] = mapped_column(sa.JSON, default=list)  # empty: every type
    platform_ids: Mapped[list[str]] = mapped_column(sa.JSON, default=list)  # empty: every platform
    enabled: Mapped[bool] = mapped_column(default=True)
    secret: Mapped[str] = mapped_column(sa.String(128))
    previous_secret: Mapped[str | None] = mapped_column(sa.String(128))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Event(Base):
    """Something that happened, written in the same transaction as what it reports.

    ``seq`` orders the events of one writer; on PostgreSQL ``txid`` (the writing transaction's
    id) orders them across concurrent writers for the pull API. A ``post.created`` event's
    ``payload`` is rendered from its post when first needed (sent, pulled, or before the post is
    deleted); the other types carry theirs from the start. A ``post.created`` event's ``id`` is
    ``evt_`` and its post's id (hex): it is found by its post through the unique ``id``, with no
    index of its own on ``post_id`` to keep up on every mail."""

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_txid_seq", "txid", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SEQUENCE, sa.Identity(), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(40), unique=True)
    type: Mapped[EventType] = mapped_column(
        sa.Enum(EventType, native_enum=False, length=32, values_callable=_values)
    )
    platform_id: Mapped[str | None] = mapped_column(sa.String(64))
    post_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    integration_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    payload: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    txid: Mapped[int | None] = mapped_column(sa.BigInteger)  # PostgreSQL only


class EventMessage(Base):
    """One event for one endpoint: pending until delivered, or failed after the last retry."""

    __tablename__ = "event_messages"
    __table_args__ = (
        sa.UniqueConstraint("event_seq", "endpoint_id"),
        sa.Index(
            "ix_event_messages_due",
            "next_attempt_at",
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        ),
        sa.Index("ix_event_messages_endpoint", "endpoint_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(SEQUENCE, sa.Identity(), primary_key=True)
    event_seq: Mapped[int] = mapped_column(
        SEQUENCE, sa.ForeignKey("events.seq", ondelete="CASCADE")
    )
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("event_endpoints.id", ondelete="CASCADE")
    )
    status: Mapped[MessageStatus] = mapped_column(
        sa.Enum(MessageStatus, native_enum=False, length=16), default=MessageStatus.pending
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventAttempt(Base):
    """One try of a message: when, what the endpoint answered, how long it took."""

    __tablename__ = "event_attempts"
    __table_args__ = (
        sa.Index("ix_event_attempts_endpoint_at", "endpoint_id", "at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(SEQUENCE, sa.Identity(), primary_key=True)
    message_id: Mapped[int] = mapped_column(
        SEQUENCE, sa.ForeignKey("event_messages.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("event_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(sa.String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column()
    duration_ms: Mapped[float] = mapped_column(sa.Float, default=0.0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
