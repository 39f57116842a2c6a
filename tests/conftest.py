from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.config import Settings
from app.db.base import Base
from app.db.engine import create_engine
from app.main import create_app
from tests import databases, s3
from tests.auth import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, OPERATOR_TOKEN, URL_SIGNING_KEY
from tests.factories import World


@pytest.fixture(scope="session")
def database_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """The PostgreSQL server the session uses (``None`` on SQLite)."""
    if databases.kind() == "sqlite":
        yield None
        return
    # Outside pytest's own temporary folders, which another pytest run may prune meanwhile.
    workdir = Path(tempfile.mkdtemp(prefix="mailslot-pg-"))
    try:
        with databases.postgres_server(workdir) as url:
            yield url
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(
    database_server: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if database_server is None:
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'mailslot.db'}"
        databases.upgrade(url)
        yield url
        return
    with databases.fresh_postgres_database(database_server) as url:
        databases.upgrade(url)
        yield url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``blob_stores`` runs on the local folder and on S3 (the moto server)."""
    if "blob_store" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "blob_stores"
    ):
        metafunc.parametrize("blob_store", s3.KINDS, indirect=True)


@pytest.fixture
def blob_store(request: pytest.FixtureRequest) -> str:
    """``local`` or ``s3``: the test's parameter (``blob_stores``), else ``TEST_BLOB_STORE``."""
    return str(getattr(request, "param", s3.kind()))


def make_settings(
    database_url: str, blob_dir: Path, *, store: str | None = None, **overrides: Any
) -> Settings:
    """Test settings; the blob store is ``store`` (``local`` or ``s3``; default
    ``TEST_BLOB_STORE``): the folder ``blob_dir``, or a prefix of the test S3 bucket named after
    it (``blob_dir`` still spools request bodies). A ``blob_store`` override wins."""
    store = "given" if "blob_store" in overrides else (store or s3.kind())
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "blob_dir": blob_dir,
        "inbound_domain": "in.example.com",
        "jwt_secret": JWT_SECRET,
        "operator_token": OPERATOR_TOKEN,
        "url_signing_keys": URL_SIGNING_KEY,
        "jwt_audience": JWT_AUDIENCE,
        "jwt_issuer": JWT_ISSUER,
        **(s3.settings_for(blob_dir) if store == "s3" else {}),
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, blob_store: str) -> Settings:
    return make_settings(database_url, tmp_path / "blobs", store=blob_store)


async def _empty_tables(database_url: str) -> None:
    engine = create_engine(database_url, poolclass=sa.NullPool)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
                await conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
            else:
                for table in reversed(Base.metadata.sorted_tables):
                    await conn.execute(table.delete())
    finally:
        await engine.dispose()


@pytest.fixture
async def app(settings: Settings, database_url: str) -> AsyncIterator[FastAPI]:
    """The real application, committing to the test database; emptied after each test."""
    application = create_app(settings)
    try:
        yield application
    finally:
        await application.state.events.stop()
        await application.state.blobs.close()
        await application.state.engine.dispose()
        await _empty_tables(database_url)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def world(client: httpx.AsyncClient) -> World:
    return World(client)
