from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from app.api.health import READY_TIMEOUT_SECONDS
from app.db.engine import create_engine
from app.main import create_app
from tests import s3
from tests.conftest import make_settings


async def test_healthz_and_readyz_answer_while_the_database_answers(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200


async def test_readyz_is_503_when_the_database_does_not_answer(tmp_path: Path) -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    app = create_app(make_settings(url, tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await c.get("/readyz")
    await app.state.engine.dispose()
    assert r.status_code == 503
    assert r.json()["code"] == "unavailable"


async def test_a_pooled_connection_the_server_closed_is_replaced_without_an_error(
    database_url: str,
) -> None:
    """No ping per checkout: a connection the server ended (a restart, an idle timeout) is
    noticed while it waits in the pool and replaced when it is next checked out."""
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL connections only")
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
            pooled = (await conn.get_raw_connection()).driver_connection
            assert pooled is not None
        killer = create_engine(database_url, poolclass=sa.NullPool)
        async with killer.connect() as conn:
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await killer.dispose()
        # until the pool's idle connection has seen its socket close (what checkout looks at)
        deadline = time.monotonic() + 10
        while not pooled.is_closed():
            assert time.monotonic() < deadline, "the pooled connection saw no close in 10 s"
            await asyncio.sleep(0.01)
        async with engine.connect() as conn:
            new_pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        assert new_pid != pid
    finally:
        await engine.dispose()


class TestBlobStoreReadiness:
    @pytest.mark.parametrize("failure", ["cut", "stall"])
    async def test_readyz_is_503_within_its_timeout_while_the_store_does_not_answer(
        self, database_url: str, tmp_path: Path, failure: str
    ) -> None:
        async with s3.Outage() as outage:
            blob_dir = tmp_path / "blobs"
            app = create_app(
                make_settings(database_url, blob_dir, **s3.settings_for(blob_dir, outage.url))
            )
            transport = httpx.ASGITransport(app=app)
            await app.state.blobs.start()  # as the app's start-up does (the transport runs none)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                    assert (await c.get("/readyz")).status_code == 200
                    await getattr(outage, failure)()  # refused, or accepted and never answered
                    started = time.monotonic()
                    r = await c.get("/readyz")
                    elapsed = time.monotonic() - started
                    assert (r.status_code, r.json()["code"]) == (503, "unavailable")
                    assert "blob store" in r.json()["detail"]
                    assert elapsed < READY_TIMEOUT_SECONDS + 1
                    assert (await c.get("/healthz")).status_code == 200
                    await outage.restore()
                    assert (await c.get("/readyz")).status_code == 200
            finally:
                await app.state.blobs.close()
                await app.state.engine.dispose()
