"""SQL of the inbound path. Dialect differences (ON CONFLICT) live here only."""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.db.base import utcnow
from app.models import (
    Attachment,
    Delivery,
    DeliveryStatus,
    Integration,
    OversizePolicy,
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
        .where(INTEGRATIONS.c.address.in_(sa.bindparam("addresses", expanding=True)))
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

    async def routes(self, addresses: Sequence[str]) -> list[Route]:
        """The integrations at these addresses (deleted ones too: their mail is refused, and
        logged for their platform), oldest first."""
        if not addresses:
            return []
        result = await self.session.execute(
            self.sql["integrations"], {"addresses": list(addresses)}
        )
        return [_route(row._mapping) for row in result]

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
        """Add one to each ``(seconds, start)`` window of the integration (a window named twice,
        once); return the new counts, in the order given."""
        counts: dict[tuple[int, int], int] = {}
        for seconds, start in sorted(set(windows)):
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
            counts[(seconds, start)] = int((await self.session.execute(stmt)).scalar_one())
        return [counts[window] for window in windows]


# --- a provider event seen for the first time --------------------------------------------------


@dataclass(frozen=True)
class Route:
    """What routing and the rules need of an integration, read without the ORM."""

    id: uuid.UUID
    platform_id: str
    group_id: uuid.UUID | None
    enabled: bool
    allowed_senders: list[str]
    oversize_attachments: OversizePolicy
    deleted_at: datetime | None


def _route(row: Any) -> Route:
    """From a row read by name (an asyncpg record, or a SQLAlchemy row's mapping)."""
    return Route(
        id=row["id"],
        platform_id=row["platform_id"],
        group_id=row["group_id"],
        enabled=bool(row["enabled"]),
        allowed_senders=list(row["allowed_senders"] or []),
        oversize_attachments=OversizePolicy(row["oversize_attachments"]),
        deleted_at=row["deleted_at"],
    )


class FreshEvent(ABC):
    """One connection for a provider event never seen before. Statements run in a transaction
    that ``commit()`` ends (the next statement starts another); left uncommitted, rolled back."""

    @abstractmethod
    async def claim_and_route(
        self, provider: str, token: str, delivery_id: uuid.UUID, addresses: Sequence[str]
    ) -> list[Route]:
        """Claim the token (pointing at ``delivery_id``) and read the integrations at these
        addresses (deleted ones too); [] when the token was claimed before or no integration is
        there."""

    @abstractmethod
    async def count_in_windows(
        self, integration_id: uuid.UUID, windows: Sequence[tuple[int, int]]
    ) -> list[int]:
        """Add one to each ``(seconds, start)`` window of the integration; the new counts."""

    @abstractmethod
    async def write(
        self,
        post: dict[str, Any] | None,
        attachments: Sequence[dict[str, Any]],
        delivery: dict[str, Any],
    ) -> bool:
        """Insert the post (if any) with its attachments, then the delivery. False (nothing
        written) when the integration has a post with this dedupe key already."""

    @abstractmethod
    async def begin(self) -> None:
        """Make what follows one transaction (until ``commit()``)."""

    async def post_at_once(
        self,
        addresses: Sequence[str],
        token: tuple[str, str],
        post: Mapping[str, Any],
        delivery: Mapping[str, Any],
        attachments: Sequence[Mapping[str, Any]] = (),
    ) -> Route | None:
        """The common case in one statement, outside any transaction: when exactly one
        integration is at these addresses, live, enabled, with a group and no sender restriction,
        claim the token and write the post, its attachments and its ``accepted`` delivery
        (platform, group and integration taken from that row). The integration when done; None
        when nothing was written (the token was seen, or the integration is another case):
        decide as usual. Not every database does this in one statement: by default, None."""
        return None

    @abstractmethod
    async def commit(self) -> None: ...

    def connection_lost(self) -> bool:
        """Whether the connection is known to be closed (after an error)."""
        return False

    @abstractmethod
    async def rollback(self) -> None: ...


class _CoreFreshEvent(FreshEvent):
    """Any database, through SQLAlchemy Core (SQLite, the embedded default)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.repo = InboundRepository(conn)

    async def claim_and_route(
        self, provider: str, token: str, delivery_id: uuid.UUID, addresses: Sequence[str]
    ) -> list[Route]:
        if not await self.repo.claim_token(provider, token, delivery_id):
            return []
        return await self.repo.routes(addresses)

    async def count_in_windows(
        self, integration_id: uuid.UUID, windows: Sequence[tuple[int, int]]
    ) -> list[int]:
        return await self.repo.count_in_windows(integration_id, windows)

    async def write(
        self,
        post: dict[str, Any] | None,
        attachments: Sequence[dict[str, Any]],
        delivery: dict[str, Any],
    ) -> bool:
        if post is not None:
            if await self.repo.add_post_once(post) is None:
                return False
            await self.repo.add_attachments(attachments)
        await self.repo.add_delivery(delivery)
        return True

    async def begin(self) -> None:
        """Nothing to do: the connection began one with its first statement."""

    async def commit(self) -> None:
        await self.conn.commit()

    async def rollback(self) -> None:
        await self.conn.rollback()


# PostgreSQL: the same work on the driver's connection (asyncpg), each step one statement that
# commits by itself unless a transaction was begun. JSON columns take JSON text (the codec
# SQLAlchemy's dialect installs on each connection). Attachments go in as arrays (unnest).
_ROUTE_COLUMNS = (
    "id, platform_id, group_id, enabled, allowed_senders, oversize_attachments, deleted_at"
)
_AT = "address = ANY($1::varchar[])"  # deleted integrations too (see InboundRepository.routes)
_PG_CLAIM_AND_ROUTE = f"""
WITH claim AS (
    INSERT INTO provider_tokens (provider, token, delivery_id, created_at)
    SELECT $2, $3, $4, $5 WHERE EXISTS (SELECT FROM integrations WHERE {_AT})
    ON CONFLICT (provider, token) DO NOTHING
    RETURNING 1
)
SELECT {_ROUTE_COLUMNS} FROM integrations
WHERE {_AT} AND EXISTS (SELECT FROM claim)
ORDER BY created_at, id
"""  # noqa: S608 - module constants only
_PG_COUNT = """
INSERT INTO rate_counters (integration_id, window_seconds, window_start, count)
SELECT $1, seconds, start, 1 FROM unnest($2::integer[], $3::bigint[]) AS w(seconds, start)
ON CONFLICT (integration_id, window_seconds, window_start)
DO UPDATE SET count = rate_counters.count + 1
RETURNING window_seconds, window_start, count
"""
# The post's own values; its platform, group and integration come from elsewhere ($1-$3 in
# _PG_POST, the integration's row in _PG_POST_AT_ONCE).
_POST_VALUES = [
    *("id", "dedupe_key", "source", "author_email", "author_name", "author_verified"),
    *("subject", "text", "html", "omitted_attachments", "received_at", "created_at"),
]
_DELIVERY_VALUES = [
    *("id", "provider", "status", "reason", "envelope_from", "envelope_to", "from", "subject"),
    *("size_bytes", "message_id", "spf", "dkim", "error", "received_at", "dedupe_key"),
    "content_sha256",
]
_ATTACHMENT_VALUES = [
    *("id", "position", "filename", "content_type", "size", "sha256", "inline", "content_id"),
]
_ATTACHMENT_TYPES = [
    *("uuid[]", "integer[]", "varchar[]", "varchar[]", "bigint[]", "varchar[]", "boolean[]"),
    "varchar[]",
]


def _params(names: Sequence[str], start: int) -> dict[str, str]:
    return {name: f"${start + i}" for i, name in enumerate(names)}


def _write_sql(route: str, first: int) -> str:
    """Post (if its id is not NULL), attachments and delivery from ``route`` (a FROM clause
    giving platform_id, group_id and integration_id), parameters from ``$first`` on."""
    p = _params(_POST_VALUES, first)
    d = _params(_DELIVERY_VALUES, first + len(_POST_VALUES))
    a = _params(_ATTACHMENT_VALUES, first + len(_POST_VALUES) + len(_DELIVERY_VALUES))
    arrays = ", ".join(
        f"{a[name]}::{kind}"
        for name, kind in zip(_ATTACHMENT_VALUES, _ATTACHMENT_TYPES, strict=True)
    )
    return f"""
post AS (
    INSERT INTO posts (id, platform_id, group_id, integration_id, dedupe_key, source,
                       author_email, author_name, author_verified, subject, text, html,
                       omitted_attachments, received_at, created_at)
    SELECT {p["id"]}, platform_id, group_id, integration_id, {p["dedupe_key"]}, {p["source"]},
           {p["author_email"]}, {p["author_name"]}, {p["author_verified"]}, {p["subject"]},
           {p["text"]}, {p["html"]}, {p["omitted_attachments"]}, {p["received_at"]},
           {p["created_at"]}
    FROM {route} WHERE {p["id"]}::uuid IS NOT NULL
    ON CONFLICT (integration_id, dedupe_key) DO NOTHING
    RETURNING id, platform_id
),
attachment AS (
    INSERT INTO attachments (id, post_id, platform_id, position, filename, content_type, size,
                             sha256, inline, content_id)
    SELECT a.id, post.id, post.platform_id, a.position, a.filename, a.content_type, a.size,
           a.sha256, a.inline, a.content_id
    FROM post, unnest({arrays})
         AS a(id, position, filename, content_type, size, sha256, inline, content_id)
),
delivery AS (
    INSERT INTO deliveries (id, platform_id, integration_id, provider, status, reason,
                            envelope_from, envelope_to, "from", subject, size_bytes, message_id,
                            spf, dkim, post_id, error, received_at, dedupe_key, content_sha256)
    SELECT {d["id"]}, platform_id, integration_id, {d["provider"]}, {d["status"]},
           {d["reason"]}, {d["envelope_from"]}, {d["envelope_to"]}, {d["from"]},
           {d["subject"]}, {d["size_bytes"]}, {d["message_id"]}, {d["spf"]}, {d["dkim"]},
           (SELECT id FROM post), {d["error"]}, {d["received_at"]}, {d["dedupe_key"]},
           {d["content_sha256"]}
    FROM {route} WHERE {p["id"]}::uuid IS NULL OR EXISTS (SELECT FROM post)
    RETURNING 1
)"""  # noqa: S608 - module constants only


_PG_WRITE = (
    "WITH route AS (SELECT $1::varchar AS platform_id, $2::uuid AS group_id,"  # noqa: S608
    " $3::uuid AS integration_id)," + _write_sql("route", 4) + "\nSELECT count(*) FROM delivery"
)
_PG_POST_AT_ONCE = f"""
WITH route AS (
    SELECT id, platform_id, group_id, enabled, allowed_senders::text AS senders,
           oversize_attachments, deleted_at
    FROM integrations WHERE {_AT}
),
target AS (
    SELECT id AS integration_id, platform_id, group_id, oversize_attachments FROM route
    WHERE deleted_at IS NULL AND enabled AND group_id IS NOT NULL AND senders = '[]'
      AND (SELECT count(*) FROM route) = 1
),
claim AS (
    INSERT INTO provider_tokens (provider, token, delivery_id, created_at)
    SELECT $2, $3, $4, $5 FROM target
    ON CONFLICT (provider, token) DO NOTHING
    RETURNING 1
),
claimed AS (SELECT * FROM target WHERE EXISTS (SELECT FROM claim)),
{_write_sql("claimed", 6)}
SELECT integration_id AS id, platform_id, group_id, TRUE AS enabled, oversize_attachments,
       '[]'::json AS allowed_senders, NULL::timestamptz AS deleted_at
FROM target WHERE EXISTS (SELECT FROM delivery)
"""  # noqa: S608 - module constants only


def _pg_value(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


def _pg_args(
    post: Mapping[str, Any] | None,
    delivery: Mapping[str, Any],
    attachments: Sequence[Mapping[str, Any]],
) -> list[Any]:
    """The values of ``_write_sql``, in order (``post`` None: a delivery alone)."""
    values = [_pg_value(post[n]) if post else None for n in _POST_VALUES]
    values += [_pg_value(delivery[n]) for n in _DELIVERY_VALUES]
    values += [[a[n] for a in attachments] for n in _ATTACHMENT_VALUES]
    return values


class _AsyncpgFreshEvent(FreshEvent):
    """PostgreSQL, on the pooled connection's asyncpg driver connection."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.transaction: Any = None

    def connection_lost(self) -> bool:
        return bool(self.driver.is_closed())

    async def begin(self) -> None:
        if self.transaction is None:
            self.transaction = self.driver.transaction()
            await self.transaction.start()

    async def claim_and_route(
        self, provider: str, token: str, delivery_id: uuid.UUID, addresses: Sequence[str]
    ) -> list[Route]:
        rows = await self.driver.fetch(
            _PG_CLAIM_AND_ROUTE, list(addresses), provider, token, delivery_id, utcnow()
        )
        return [_route(row) for row in rows]

    async def post_at_once(
        self,
        addresses: Sequence[str],
        token: tuple[str, str],
        post: Mapping[str, Any],
        delivery: Mapping[str, Any],
        attachments: Sequence[Mapping[str, Any]] = (),
    ) -> Route | None:
        if self.transaction is not None:  # one statement, committed by itself
            return None
        row = await self.driver.fetchrow(
            _PG_POST_AT_ONCE,
            list(addresses),
            *token,
            delivery["id"],
            utcnow(),
            *_pg_args(post, delivery, attachments),
        )
        return None if row is None else _route(row)

    async def count_in_windows(
        self, integration_id: uuid.UUID, windows: Sequence[tuple[int, int]]
    ) -> list[int]:
        distinct = sorted(set(windows))  # a window named twice is counted once
        rows = await self.driver.fetch(
            _PG_COUNT, integration_id, [w[0] for w in distinct], [w[1] for w in distinct]
        )
        counts = {(r["window_seconds"], r["window_start"]): int(r["count"]) for r in rows}
        return [counts[window] for window in windows]

    async def write(
        self,
        post: dict[str, Any] | None,
        attachments: Sequence[dict[str, Any]],
        delivery: dict[str, Any],
    ) -> bool:
        source = post if post is not None else delivery
        written = await self.driver.fetchval(
            _PG_WRITE,
            source["platform_id"],
            post["group_id"] if post is not None else None,
            source["integration_id"],
            *_pg_args(post, delivery, attachments),
        )
        return bool(written)

    async def commit(self) -> None:
        if self.transaction is not None:
            transaction, self.transaction = self.transaction, None
            await transaction.commit()

    async def rollback(self) -> None:
        if self.transaction is not None:
            transaction, self.transaction = self.transaction, None
            await transaction.rollback()


@asynccontextmanager
async def fresh_event(engine: AsyncEngine) -> AsyncIterator[FreshEvent]:
    """A connection for a fresh provider event; what is not committed is rolled back."""
    async with engine.connect() as conn:
        event: FreshEvent
        if conn.dialect.name == "postgresql":
            raw = await conn.get_raw_connection()
            event = _AsyncpgFreshEvent(raw.driver_connection)
        else:
            event = _CoreFreshEvent(conn)
        try:
            yield event
        except BaseException as exc:
            lost = event.connection_lost()
            if not lost:
                try:
                    await event.rollback()
                except Exception:  # broken after all
                    lost = True
            if lost:  # not put back in the pool
                await conn.invalidate()
            if lost and isinstance(exc, Exception):
                # asyncpg says "connection is closed" as an InterfaceError, like a misuse: the
                # closed connection tells it apart (the database failed, not our code).
                raise ConnectionError("the database connection was lost") from exc
            raise
        await event.rollback()
