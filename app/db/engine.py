"""Engines for PostgreSQL (asyncpg) and SQLite (aiosqlite) from one plain URL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


def async_url(url: str) -> str:
    """Accept ``postgresql://``, ``postgres://``, ``sqlite:///`` or driver forms; pick a driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def is_sqlite(url: str) -> bool:
    return make_url(async_url(url)).get_backend_name() == "sqlite"


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    url = async_url(url)
    # A database error's message never carries the statement's parameters: they hold mail
    # subjects, bodies and names, and the message reaches the logs.
    kwargs.setdefault("hide_parameters", True)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            from pathlib import Path

            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("pool_timeout", 10)
    engine = create_async_engine(url, **kwargs)
    _discard_closed_connections(engine)
    return engine


def _discard_closed_connections(engine: AsyncEngine) -> None:
    """A pooled connection that the server closed (a restart, an idle timeout) is replaced when
    it is checked out: asyncpg sees the socket close while the connection waits in the pool.

    This stands for ``pool_pre_ping``, which on asyncpg costs three round trips (``BEGIN``, a
    ping, ``ROLLBACK``) per checkout. A connection broken without the socket closing fails its
    first statement instead; the error invalidates it, and the request is answered 503.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise exc.DisconnectionError("the server closed this pooled connection")


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, a busy timeout, foreign keys, and writers serialised with ``BEGIN IMMEDIATE``."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
