from __future__ import annotations

from pathlib import Path

import httpx

from app.main import create_app
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
