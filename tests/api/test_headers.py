"""Headers on every answer: no MIME sniffing anywhere, no storing of the API's own data."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.auth import OPERATOR, bearer
from tests.factories import World


class TestSecurityHeaders:
    async def test_every_answer_says_nosniff(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        answers = [
            await client.get("/healthz"),
            await client.get("/"),
            await client.get("/v1/platform", headers=bearer()),
            await client.get("/v1/platform"),  # 401
            await client.get("/v1/nothing-here"),  # 404
            await client.post("/inbound/mime"),  # an inbound endpoint
        ]
        for r in answers:
            assert r.headers["x-content-type-options"] == "nosniff", r.request.url

    async def test_integration_addresses_are_not_stored_by_caches(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        created = await client.post(
            "/v1/integrations",
            json={"title": "News", "group_id": str(group)},
            headers=bearer(),
        )
        assert created.status_code == 201, created.text
        assert "@" in created.json()["address"]
        listed = await client.get("/v1/integrations", headers=bearer())
        one = await client.get(f"/v1/integrations/{created.json()['id']}", headers=bearer())
        platforms = await client.get("/v1/platforms", headers=OPERATOR)
        for r in (created, listed, one, platforms):
            assert r.headers["cache-control"] == "no-store", r.request.url

    async def test_a_bug_of_ours_answers_500_with_the_same_headers(self, app: FastAPI) -> None:
        async def broken() -> None:
            raise RuntimeError("a bug")

        app.add_api_route("/v1/broken", broken)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/v1/broken")
        assert r.status_code == 500
        assert r.json()["code"] == "internal_error"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
