"""The test databases: a real PostgreSQL (given or started here) or a SQLite file."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from app.db.engine import create_engine
from tests.pgcluster import Cluster

ROOT = Path(__file__).resolve().parent.parent


def kind() -> str:
    """``postgresql`` (the default) or ``sqlite``, from ``TEST_DATABASE``."""
    value = os.environ.get("TEST_DATABASE", "postgresql").lower()
    if value not in {"postgresql", "sqlite"}:
        raise RuntimeError(f"TEST_DATABASE must be postgresql or sqlite, not {value!r}")
    return value


@contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """``TEST_DATABASE_URL`` when set, else a throwaway cluster in ``workdir`` (the pgserver
    wheel's binaries, run from a copy its user can reach: ``tests.pgcluster``)."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    cluster = Cluster(workdir)
    try:
        cluster.init()
        cluster.start()
        yield cluster.url("postgres")
    finally:
        cluster.destroy()


def _admin(url: str, statement: str) -> None:
    async def run() -> None:
        engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server, dropped afterwards."""
    name = f"mailslot_test_{secrets.token_hex(4)}"
    _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alembic_config(url: str) -> Config:
    config = Config(toml_file=str(ROOT / "pyproject.toml"))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
