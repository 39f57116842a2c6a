"""The SQL of events: the event insert and its fan-out (shared by the inbound writer's one
statement and by ``emit``), the dispatcher's claim, the pull order, and the endpoints' reads.

Dialect differences live here: which endpoints a JSON list selects, the transaction id that
orders the pull API on PostgreSQL, and ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.base import Base, utcnow
from app.db.repository import Repository
from app.models import Event, EventAttempt, EventEndpoint, EventMessage, EventType, MessageStatus

EVENTS: sa.Table = Event.__table__  # type: ignore[assignment]
ENDPOINTS: sa.Table = EventEndpoint.__table__  # type: ignore[assignment]
MESSAGES: sa.Table = EventMessage.__table__  # type: ignore[assignment]
ATTEMPTS: sa.Table = EventAttempt.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class EventRow:
    """An event as written (the inbound writer's rows carry it the same way)."""

    model: ClassVar[type[Base]] = Event

    id: str
    type: EventType
    platform_id: str | None
    post_id: uuid.UUID | None = None
    delivery_id: uuid.UUID | None = None
    integration_id: uuid.UUID | None = None
    payload: dict[str, Any] | None = None
    created_at: datetime = field(default_factory=utcnow)


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def txid(dialect: str) -> Any:
    """PostgreSQL: the writing transaction's id (a 64-bit, epoch-extended xid8, as a bigint);
    None elsewhere (SQLite has one writer at a time: ``seq`` is commit order)."""
    if dialect != "postgresql":
        return None
    return sa.cast(sa.cast(sa.func.pg_current_xact_id(), sa.Text), sa.BigInteger)


def horizon(dialect: str) -> Any:
    """PostgreSQL: every transaction with a lower id has ended (committed or not)."""
    return sa.cast(
        sa.cast(sa.func.pg_snapshot_xmin(sa.func.pg_current_snapshot()), sa.Text), sa.BigInteger
    )


def _listed(dialect: str, column: Any, value: Any) -> Any:
    """The JSON list ``column`` holds the text ``value``."""
    if dialect == "postgresql":
        return sa.cast(column, postgresql.JSONB).contains(
            sa.func.jsonb_build_array(sa.cast(value, sa.Text))
        )
    items = sa.func.json_each(column).table_valued("value")
    return sa.exists(sa.select(sa.literal(1)).select_from(items).where(items.c.value == value))


def subscribed(dialect: str, event_type: Any, platform_id: Any) -> Any:
    """The endpoints that take an event of this type and platform: enabled, and each list
    empty (everything) or naming it. The one home of that rule."""
    return sa.and_(
        ENDPOINTS.c.enabled.is_(True),
        sa.or_(
            sa.func.json_array_length(ENDPOINTS.c.event_types) == 0,
            _listed(dialect, ENDPOINTS.c.event_types, event_type),
        ),
        sa.or_(
            sa.func.json_array_length(ENDPOINTS.c.platform_ids) == 0,
            _listed(dialect, ENDPOINTS.c.platform_ids, platform_id),
        ),
    )


def insert(dialect: str, target: sa.Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(target)


EVENT_KEYS: tuple[str, ...] = tuple(f.name for f in fields(EventRow))


def event_binds(prefix: str) -> dict[str, Any]:
    """A bound parameter per column of an ``EventRow`` (``prefix`` + key), typed as the column."""
    return {key: sa.bindparam(prefix + key, type_=EVENTS.c[key].type) for key in EVENT_KEYS}


def event_values(row: EventRow, prefix: str) -> dict[str, Any]:
    return {prefix + key: getattr(row, key) for key in EVENT_KEYS}


def event_insert(dialect: str, *, when: Any = None) -> Any:
    """Insert the event of ``e_`` parameters (``when``: only if it holds); its ``seq``."""
    binds = event_binds("e_")
    chosen = sa.select(*binds.values(), txid(dialect)).where(sa.true() if when is None else when)
    return insert(dialect, EVENTS).from_select([*binds, "txid"], chosen).returning(EVENTS.c.seq)


def fanout(dialect: str, seq: Any, source: Any = None) -> Any:
    """One pending message per endpoint subscribed to the event of ``e_type``/``e_platform_id``
    whose ``seq`` is given (``source``: the selectable it comes from, a CTE)."""
    event_type = sa.bindparam("e_type", type_=EVENTS.c.type.type)
    platform_id = sa.bindparam("e_platform_id", type_=EVENTS.c.platform_id.type)
    now = sa.bindparam("e_created_at", type_=EVENTS.c.created_at.type)
    chosen = sa.select(
        seq,
        ENDPOINTS.c.id,
        sa.literal(MessageStatus.pending.value, MESSAGES.c.status.type),
        sa.literal(0, MESSAGES.c.attempts.type),
        now,
        now,
    ).where(subscribed(dialect, event_type, platform_id))
    if source is not None:
        chosen = chosen.select_from(source).join(ENDPOINTS, sa.true())
    return insert(dialect, MESSAGES).from_select(
        ["event_seq", "endpoint_id", "status", "attempts", "next_attempt_at", "created_at"],
        chosen,
    )


async def emit_rows(conn: AsyncConnection | AsyncSession, rows: list[EventRow]) -> None:
    """Write the events and their messages in the caller's transaction."""
    bind = conn.bind if isinstance(conn, AsyncSession) else conn
    dialect = bind.dialect.name if bind is not None else "postgresql"
    for row in rows:
        values = event_values(row, "e_")
        seq = (await conn.execute(event_insert(dialect), values)).scalar_one()
        statement = fanout(dialect, sa.literal(seq, MESSAGES.c.event_seq.type))
        await conn.execute(statement, values)


# --- the dispatcher ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    message_id: int
    event_seq: int
    endpoint_id: uuid.UUID
    attempts: int


async def claim(
    conn: AsyncConnection, *, now: datetime, lease_until: datetime, limit: int
) -> list[Claimed]:
    """Lease up to ``limit`` due messages: no other dispatcher takes them until the lease ends
    (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two never take the same one; SQLite: one writer)."""
    due = (
        sa.select(MESSAGES.c.id)
        .where(MESSAGES.c.status == MessageStatus.pending, MESSAGES.c.next_attempt_at <= now)
        .order_by(MESSAGES.c.next_attempt_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    statement = (
        sa.update(MESSAGES)
        .where(MESSAGES.c.id.in_(due.scalar_subquery()))
        .values(leased_until=lease_until, next_attempt_at=lease_until)
        .returning(MESSAGES.c.id, MESSAGES.c.event_seq, MESSAGES.c.endpoint_id, MESSAGES.c.attempts)
    )
    rows = (await conn.execute(statement)).all()
    return [Claimed(r[0], r[1], r[2], r[3]) for r in rows]


def pull_order(dialect: str) -> tuple[Any, ...]:
    if dialect == "postgresql":
        return (EVENTS.c.txid, EVENTS.c.seq)
    return (EVENTS.c.seq,)


class EventEndpointRepository(Repository[EventEndpoint]):
    model = EventEndpoint
