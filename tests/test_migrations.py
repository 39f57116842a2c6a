"""The migrations create every table on an empty database, match the models, and reverse."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.db.base import Base
from app.db.engine import create_engine
from tests import databases


@pytest.fixture
def empty_database(database_server: str | None, tmp_path: Path) -> Iterator[str]:
    if database_server is None:
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    with databases.fresh_postgres_database(database_server) as url:
        yield url


def _inspect(url: str) -> tuple[list[Any], set[str]]:
    async def run() -> tuple[list[Any], set[str]]:
        engine = create_engine(url, poolclass=sa.NullPool)
        try:
            async with engine.connect() as conn:

                def check(sync_conn: sa.Connection) -> tuple[list[Any], set[str]]:
                    context = MigrationContext.configure(
                        sync_conn, opts={"compare_type": True, "render_as_batch": True}
                    )
                    diff = compare_metadata(context, Base.metadata)
                    return diff, set(sa.inspect(sync_conn).get_table_names())

                return await conn.run_sync(check)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _in_thread(fn: Any, *args: Any) -> Any:
    """Alembic's env.py runs its own event loop: call it from a thread, not this test's loop."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


class TestMigrations:
    def test_upgrade_creates_every_table_of_the_models(self, empty_database: str) -> None:
        _in_thread(databases.upgrade, empty_database)
        _diff, tables = _in_thread(_inspect, empty_database)
        assert set(Base.metadata.tables) <= tables
        assert "alembic_version" in tables

    def test_models_and_migrations_agree(self, empty_database: str) -> None:
        _in_thread(databases.upgrade, empty_database)
        diff, _ = _in_thread(_inspect, empty_database)
        assert diff == []

    def test_downgrade_to_base_then_upgrade_again(self, empty_database: str) -> None:
        _in_thread(databases.upgrade, empty_database)
        _in_thread(databases.downgrade, empty_database, "base")
        _, tables = _in_thread(_inspect, empty_database)
        assert not set(Base.metadata.tables) & tables
        _in_thread(databases.upgrade, empty_database)
        diff, tables = _in_thread(_inspect, empty_database)
        assert diff == []
        assert set(Base.metadata.tables) <= tables
