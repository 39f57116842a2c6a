"""The one writer of the inbound path: posts, attachments, deliveries, provider tokens and rate
counters are inserted here, and only here, by statements built from the models' own tables.

Each table has one insert (``_insert(dialect, TABLE)``); the values come from the typed rows of
``app.inbound.rows``, so a new column with a default needs no change here. On PostgreSQL the
hot path's steps are each one statement (data-modifying CTEs composed from those same inserts):
claiming a token with routing, and a post with its attachments and delivery. The writer decides
nothing: it receives rows built from a ``Decision``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.events.emit import delivery_event, emit, post_created
from app.events.repository import event_insert, event_values, fanout
from app.inbound.decide import Route
from app.inbound.rows import (
    AttachmentRow,
    CounterRow,
    DeliveryRow,
    PostRow,
    TokenRow,
    column_keys,
    columns,
    table,
)
from app.models import DeliveryStatus, Integration, IntegrationAddress
from app.observability.metrics import database_time

POSTS = table(PostRow)
ATTACHMENTS = table(AttachmentRow)
DELIVERIES = table(DeliveryRow)
TOKENS = table(TokenRow)
COUNTERS = table(CounterRow)
INTEGRATIONS: sa.Table = Integration.__table__  # type: ignore[assignment]
PREVIOUS: sa.Table = IntegrationAddress.__table__  # type: ignore[assignment]


def _insert(dialect: str, target: sa.Table) -> Any:
    """An insert into ``target`` in the dialect that knows ``ON CONFLICT``."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(target)


def _keys(row_type: type[Any]) -> list[str]:
    return [key for _, key in column_keys(row_type)]


def _binds(row_type: type[Any], prefix: str, *, array: bool = False) -> dict[str, Any]:
    """A bound parameter per column of the row type, named ``prefix`` + column key, typed as
    the column (``array``: an array of them, PostgreSQL)."""
    target = table(row_type)
    return {
        key: sa.bindparam(
            prefix + key,
            type_=postgresql.ARRAY(target.c[key].type) if array else target.c[key].type,
        )
        for key in _keys(row_type)
    }


def _prefixed(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {prefix + key: value for key, value in values.items()}


# --- the statements, one insert per table -----------------------------------------------------


def _match(column: Any, dialect: str, *, one: bool) -> Any:
    """``column`` is among the ``addresses`` (``one``: is the ``address``)."""
    if one:  # PostgreSQL plans this once (a generic plan); "= ANY" is planned at every call
        return column == sa.bindparam("address", type_=sa.String())
    if dialect == "postgresql":  # one parameter, however many addresses: one cached statement
        return column == sa.any_(sa.bindparam("addresses", type_=postgresql.ARRAY(sa.String())))
    return column.in_(sa.bindparam("addresses", expanding=True))


def _routed(dialect: str, *, one: bool = False, where: Any = None) -> sa.CompoundSelect[Any]:
    """The integrations at the addresses (deleted ones too: their mail is refused, and logged
    for their platform), each with the address it was found by (``routed_address``) and, for a
    previous address, when it stopped routing (``routed_until``; NULL for a current address).

    Two branches: the current addresses (the lookup of every mail, as it was before previous
    addresses existed) and the previous ones, whose index probe finds nothing for a current
    address. ``where``: a further condition on both."""
    extra = () if where is None else (where,)
    until = PREVIOUS.c.valid_until
    current = sa.select(
        INTEGRATIONS,
        INTEGRATIONS.c.address.label("routed_address"),
        sa.cast(sa.null(), until.type).label("routed_until"),
    ).where(_match(INTEGRATIONS.c.address, dialect, one=one), *extra)
    previous = (
        sa.select(
            INTEGRATIONS,
            PREVIOUS.c.address.label("routed_address"),
            until.label("routed_until"),
        )
        .join_from(PREVIOUS, INTEGRATIONS, INTEGRATIONS.c.id == PREVIOUS.c.integration_id)
        .where(_match(PREVIOUS.c.address, dialect, one=one), *extra)
    )
    return sa.union_all(current, previous)


def _routes(routed: sa.Subquery | sa.CTE) -> sa.Select[Any]:
    """The routed integrations, oldest first."""
    return sa.select(routed).order_by(routed.c.created_at, routed.c.id)


def _token_claim(dialect: str, *, when_routed: bool, one: bool = False) -> Any:
    """The token, unless claimed before (``when_routed``: only if an integration is at the
    ``addresses``: an unrouted mail claims it with its own delivery)."""
    binds = _binds(TokenRow, "t_")
    chosen = sa.select(*binds.values())
    if when_routed:  # the previous addresses are looked up only when no current one matches
        chosen = chosen.where(
            sa.or_(
                sa.exists().where(_match(INTEGRATIONS.c.address, dialect, one=one)),
                sa.exists().where(_match(PREVIOUS.c.address, dialect, one=one)),
            )
        )
    else:
        chosen = chosen.where(sa.true())  # INSERT ... SELECT ... ON CONFLICT needs a WHERE
    return (
        _insert(dialect, TOKENS)
        .from_select(list(binds), chosen)
        .on_conflict_do_nothing(index_elements=["provider", "token"])
        .returning(TOKENS.c.token)
    )


def _post_insert(dialect: str, *, bound: bool) -> Any:
    """The post unless the integration has one with its dedupe key (``bound``: its values as
    ``p_`` parameters, for a CTE)."""
    insert = _insert(dialect, POSTS)
    if bound:
        insert = insert.values(_binds(PostRow, "p_"))
    return insert.on_conflict_do_nothing(index_elements=["integration_id", "dedupe_key"]).returning(
        POSTS.c.id
    )


def _attachment_insert(dialect: str, post: sa.CTE | None) -> Any:
    """Attachment rows (``post``: from ``a_`` arrays, only when that CTE inserted the post)."""
    insert = _insert(dialect, ATTACHMENTS)
    if post is None:
        return insert
    arrays = _binds(AttachmentRow, "a_", array=True)
    unnested = sa.func.unnest(*arrays.values()).table_valued(*arrays).render_derived()
    chosen = sa.select(*unnested.c).where(sa.exists(sa.select(post.c.id)))
    return insert.from_select(list(arrays), chosen)


def _delivery_insert(dialect: str, post: sa.CTE | None) -> Any:
    """A delivery row (``post``: from ``d_`` parameters, when the post CTE inserted its post or
    when it has none: ``d_post_id`` NULL)."""
    insert = _insert(dialect, DELIVERIES)
    if post is None:
        return insert
    binds = _binds(DeliveryRow, "d_")
    chosen = sa.select(*binds.values()).where(
        sa.or_(binds["post_id"].is_(None), sa.exists(sa.select(post.c.id)))
    )
    return insert.from_select(list(binds), chosen).returning(DELIVERIES.c.id)


def _counting(insert: Any) -> Any:
    """Add one to each window counter the insert names (a new counter starts at one); their
    integrations, windows and new counts."""
    return insert.on_conflict_do_update(
        index_elements=["integration_id", "window_seconds", "window_start"],
        set_={"count": COUNTERS.c["count"] + 1},
    ).returning(
        COUNTERS.c.integration_id,
        COUNTERS.c.window_seconds,
        COUNTERS.c.window_start,
        COUNTERS.c["count"],
    )


@cache
def _counter_upsert(dialect: str, count: int) -> Any:
    """Add one to ``count`` windows of an integration; their new counts."""
    rows = [_binds(CounterRow, f"c{i}_") for i in range(count)]
    return _counting(_insert(dialect, COUNTERS).values(rows))


@cache
def _uncount(count: int) -> Any:
    """Take back one from ``count`` windows of an integration (a mail counted ahead of the
    decision that refused it)."""
    windows = [
        sa.and_(
            COUNTERS.c.window_seconds == sa.bindparam(f"seconds{i}"),
            COUNTERS.c.window_start == sa.bindparam(f"start{i}"),
        )
        for i in range(count)
    ]
    return (
        sa.update(COUNTERS)
        .where(COUNTERS.c.integration_id == sa.bindparam("counted_id"), sa.or_(*windows))
        .values({"count": COUNTERS.c["count"] - 1})
    )


def _claim_and_route(dialect: str, *, one: bool) -> Any:
    """PostgreSQL, one statement: claim the token, count the mail in the rate windows of every
    integration at the addresses (``w_seconds``, ``w_starts``), and read those integrations with
    their new counts (``counts``, in window order); nothing when the token was claimed before."""
    claim = _token_claim(dialect, when_routed=True, one=one).cte("claim")
    # Read once (a CTE), for the counts and for the answer.
    routed = _routed(dialect, one=one, where=sa.exists(sa.select(claim.c.token))).cte("routed")
    windows = (
        sa.func.unnest(
            sa.bindparam("w_seconds", type_=postgresql.ARRAY(COUNTERS.c.window_seconds.type)),
            sa.bindparam("w_starts", type_=postgresql.ARRAY(COUNTERS.c.window_start.type)),
        )
        .table_valued("seconds", "start")
        .render_derived()
    )
    counted = _counting(
        _insert(dialect, COUNTERS).from_select(
            _keys(CounterRow),
            sa.select(
                routed.c.id,
                windows.c.seconds,
                windows.c.start,
                sa.literal(CounterRow.count, COUNTERS.c["count"].type),  # one: this mail
            ),
        )
    ).cte("counted")
    counts = (
        sa.select(
            sa.func.array_agg(
                postgresql.aggregate_order_by(
                    counted.c["count"], counted.c.window_seconds, counted.c.window_start
                )
            )
        )
        .where(counted.c.integration_id == routed.c.id)
        .scalar_subquery()
    )
    return _routes(routed).add_columns(counts.label("counts"))


@cache
def _statements(dialect: str) -> dict[str, Any]:
    """What the writer runs, built once per dialect (values are bound per execution)."""
    statements: dict[str, Any] = {
        "routes": _routes(_routed(dialect).subquery("routed")),
        "claim": _token_claim(dialect, when_routed=False),
        "claim_routed": _token_claim(dialect, when_routed=True),
        "post": _post_insert(dialect, bound=False),
        "attachments": _attachment_insert(dialect, None),
        "delivery": _delivery_insert(dialect, None),
    }
    if dialect == "postgresql":
        # Round trip 1 (a mail to one address, or to several)
        statements["claim_and_route"] = _claim_and_route(dialect, one=False)
        statements["claim_and_route_one"] = _claim_and_route(dialect, one=True)
        # Round trip 2: the post, its attachments, its delivery, its post.created event and that
        # event's messages (one per subscribed endpoint: none without endpoints), or none.
        statements["write"] = _write(dialect, attachments=True)
        # The same without the attachments' insert (most mail): a statement that does not touch
        # the attachments table takes no lock on it or on its indexes.
        statements["write_bare"] = _write(dialect, attachments=False)
    return statements


def _write(dialect: str, *, attachments: bool) -> Any:
    """PostgreSQL, one statement: the post (``p_``), its attachments (``a_`` arrays, when
    ``attachments``), its delivery (``d_``), its post.created event (``e_``) and that event's
    messages; nothing when the integration has the post already. Its delivery count."""
    post = _post_insert(dialect, bound=True).cte("post")
    delivery = _delivery_insert(dialect, post).cte("delivery")
    event = event_insert(dialect, when=sa.exists(sa.select(post.c.id))).cte("event")
    messages = fanout(dialect, event.c.seq, source=event).cte("message")
    statement = sa.select(sa.func.count()).select_from(delivery).add_cte(event).add_cte(messages)
    if attachments:
        statement = statement.add_cte(_attachment_insert(dialect, post).cte("attachment"))
    return statement


class _Compiled:
    """A PostgreSQL statement compiled once for the asyncpg driver: its SQL text (``$n``
    parameters) and, in order, what each parameter is bound to and how its value is processed
    (the column types' bind processors, as SQLAlchemy applies them)."""

    def __init__(self, statement: Any) -> None:
        compiled = statement.compile(dialect=_ASYNCPG)
        if compiled.positiontup is None or "POSTCOMPILE" in compiled.string:
            raise ValueError("a statement for the driver needs fixed positional parameters")
        self.sql: str = compiled.string
        processors = compiled._bind_processors
        self.order: tuple[tuple[str, Any, Any], ...] = tuple(
            (name, processors.get(name), compiled.binds[name].effective_value)
            for name in compiled.positiontup
        )

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, process, default in self.order:
            value = params.get(name, default)
            values.append(value if process is None else process(value))
        return values


_ASYNCPG = asyncpg_dialect()  # type: ignore[no-untyped-call]


@cache
def _compiled(statement: Any) -> _Compiled:
    return _Compiled(statement)


def _arrays(rows: Sequence[AttachmentRow]) -> dict[str, list[Any]]:
    return {
        f"a_{key}": [getattr(row, name) for row in rows] for name, key in column_keys(AttachmentRow)
    }


class Writer:
    """The inbound rows, written on the caller's connection or session (in its transaction).

    ``Writer.on(conn)`` on PostgreSQL also runs the hot path's statements (``claim_and_route``,
    ``count``, ``write``) on the connection's asyncpg driver connection, compiled once, each
    autocommitted as the whole unit it is, whenever the caller holds no transaction: no
    ``BEGIN`` or ``COMMIT`` round trips. With a transaction open they join it, through
    SQLAlchemy.
    """

    def __init__(self, conn: AsyncConnection | AsyncSession, driver: Any = None) -> None:
        self.conn = conn
        bind = conn.bind if isinstance(conn, AsyncSession) else conn
        self.dialect = bind.dialect.name if bind is not None else "postgresql"
        self.sql = _statements(self.dialect)
        self.driver = driver

    @classmethod
    async def on(cls, conn: AsyncConnection) -> Writer:
        """A writer on ``conn``, with its driver connection on PostgreSQL."""
        if conn.dialect.name != "postgresql":
            return cls(conn)
        raw = await conn.get_raw_connection()
        return cls(conn, raw.driver_connection)

    def _direct(self) -> bool:
        return self.driver is not None and not self.conn.in_transaction()

    async def _fetch(
        self, statement: Any, params: Mapping[str, Any], *, value: bool = False
    ) -> Any:
        """One autocommitted statement on the driver connection: its rows (``value``: the first
        column of its first row). A lost connection is invalidated and raises
        ``ConnectionError`` (asyncpg reports some of them like a misuse).

        Its time is the database time of the request (``database_time``): these statements
        bypass the engine's events, which time every other one."""
        compiled = _compiled(statement)
        args = compiled.args(params)
        started = time.perf_counter()
        try:
            if value:
                return await self.driver.fetchval(compiled.sql, *args)
            return await self.driver.fetch(compiled.sql, *args)
        except Exception as exc:
            if self.driver.is_closed():
                assert isinstance(self.conn, AsyncConnection)  # noqa: S101
                await self.conn.invalidate()
                raise ConnectionError("the database connection was lost") from exc
            raise
        finally:
            database_time(time.perf_counter() - started)

    async def routes(self, addresses: Sequence[str]) -> list[Route]:
        """The integrations at these addresses (deleted ones too), oldest first."""
        if not addresses:
            return []
        result = await self.conn.execute(self.sql["routes"], {"addresses": list(addresses)})
        return [Route.of(row._mapping) for row in result]

    async def claim_token(self, token: TokenRow) -> bool:
        """Insert the token; False when it was seen before (a concurrent one waits for commit)."""
        result = await self.conn.execute(self.sql["claim"], _prefixed(columns(token), "t_"))
        return result.first() is not None

    async def claim_and_route(
        self, token: TokenRow, addresses: Sequence[str], windows: Sequence[tuple[int, int]]
    ) -> list[tuple[Route, list[int]]]:
        """Claim the token, count the mail in the ``(seconds, start)`` windows of every
        integration at these addresses (none: not counted), and read those integrations
        (deleted ones too) with their new counts, in the order of ``windows``. [] when the token
        was claimed before or no integration is there (then nothing is claimed or counted).

        The count comes before the decision, so that it takes no round trip of its own: a mail
        that the decision then refuses is taken back (``uncount``)."""
        if not addresses:
            return []
        distinct = sorted(set(windows))
        params = {
            **_prefixed(columns(token), "t_"),
            "addresses": list(addresses),
            "address": addresses[0],
            "w_seconds": [seconds for seconds, _ in distinct],
            "w_starts": [start for _, start in distinct],
        }
        if self.dialect == "postgresql":
            shape = "claim_and_route_one" if len(addresses) == 1 else "claim_and_route"
            statement = self.sql[shape]
            if self._direct():
                rows = await self._fetch(statement, params)
            else:
                result = await self.conn.execute(statement, params)
                rows = [row._mapping for row in result]
            counted = []
            for row in rows:
                counts = dict(zip(distinct, row["counts"] or [], strict=True))
                counted.append((Route.of(row), [counts[window] for window in windows]))
            return counted
        if (await self.conn.execute(self.sql["claim_routed"], params)).first() is None:
            return []
        return [
            (route, await self.count(route.id, windows) if windows else [])
            for route in await self.routes(addresses)
        ]

    async def uncount(self, integration_id: uuid.UUID, windows: Sequence[tuple[int, int]]) -> None:
        """Take back the count of a mail in these windows of the integration (``claim_and_route``
        counted it, and the decision refused it)."""
        distinct = sorted(set(windows))
        if not distinct:
            return
        params: dict[str, Any] = {"counted_id": integration_id}
        for i, (seconds, start) in enumerate(distinct):
            params.update({f"seconds{i}": seconds, f"start{i}": start})
        statement = _uncount(len(distinct))
        if self._direct():
            await self._fetch(statement, params)
        else:
            await self.conn.execute(statement, params)

    async def point_token(self, provider: str, token: str, delivery_id: uuid.UUID) -> None:
        await self.conn.execute(
            sa.update(TOKENS)
            .where(TOKENS.c.provider == provider, TOKENS.c.token == token)
            .values(delivery_id=delivery_id)
        )

    async def count(
        self, integration_id: uuid.UUID, windows: Sequence[tuple[int, int]]
    ) -> list[int]:
        """Add one to each ``(seconds, start)`` window of the integration (a window named twice,
        once); the new counts, in the order given."""
        distinct = sorted(set(windows))
        params: dict[str, Any] = {}
        for i, (seconds, start) in enumerate(distinct):
            row = CounterRow(integration_id, seconds, start)
            params.update(_prefixed(columns(row), f"c{i}_"))
        statement = _counter_upsert(self.dialect, len(distinct))
        if self._direct():
            result = await self._fetch(statement, params)
        else:
            result = await self.conn.execute(statement, params)
        counts = {(r[1], r[2]): int(r[3]) for r in result}  # see _counting
        return [counts[window] for window in windows]

    async def write(
        self, post: PostRow | None, attachments: Sequence[AttachmentRow], delivery: DeliveryRow
    ) -> bool:
        """The post (if any) with its attachments, then the delivery. False, with nothing
        written, when the integration has a post with this dedupe key already."""
        if post is not None and self.dialect == "postgresql":
            params = {
                **_prefixed(columns(post), "p_"),
                **(_arrays(attachments) if attachments else {}),
                **_prefixed(columns(delivery), "d_"),
                **event_values(post_created(post), "e_"),
            }
            statement = self.sql["write" if attachments else "write_bare"]
            if self._direct():
                return bool(await self._fetch(statement, params, value=True))
            return bool((await self.conn.execute(statement, params)).scalar_one())
        if post is not None and not await self.add_post(post, attachments):
            return False
        await self.add_deliveries([delivery])
        return True

    async def add_post(self, post: PostRow, attachments: Sequence[AttachmentRow]) -> bool:
        """The post with its attachments and its ``post.created`` event; False, with nothing
        written, when the integration has a post with this dedupe key already."""
        if (await self.conn.execute(self.sql["post"], columns(post))).first() is None:
            return False
        if attachments:
            await self.conn.execute(self.sql["attachments"], [columns(a) for a in attachments])
        await emit(self.conn, [post_created(post)])
        return True

    async def add_deliveries(self, deliveries: Sequence[DeliveryRow]) -> None:
        """Delivery rows without a post of their own (refused, duplicate, failed, unrouted),
        with the event a refused or failed one reports."""
        if deliveries:
            await self.conn.execute(self.sql["delivery"], [columns(d) for d in deliveries])
            await emit(self.conn, [delivery_event(d) for d in deliveries])

    async def update_delivery(
        self,
        delivery_id: uuid.UUID,
        *,
        status: DeliveryStatus,
        reason: str | None = None,
        post_id: uuid.UUID | None = None,
        error: str | None = None,
    ) -> None:
        """A replayed delivery, brought up to date with what replay decided (its kept content
        stays until the retention period ends, as any delivery's)."""
        values = {"status": status, "reason": reason, "post_id": post_id, "error": error}
        await self.conn.execute(
            sa.update(DELIVERIES).where(DELIVERIES.c.id == delivery_id).values(values)
        )
