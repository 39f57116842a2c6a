"""The plan cap holds under concurrent creates (a committing app, several connections)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from tests.auth import OPERATOR, bearer
from tests.factories import World

pytestmark = pytest.mark.concurrency

ROUNDS = 3
CONCURRENT = 50


async def _burst(
    client: httpx.AsyncClient, group_id: str, platform: str
) -> Counter[tuple[int, str]]:
    headers = bearer("root", platform, "admin")

    async def create(i: int) -> tuple[int, str]:
        r = await client.post(
            "/v1/integrations", json={"title": f"Inbox {i}", "group_id": group_id}, headers=headers
        )
        return r.status_code, r.json().get("code", "")

    return Counter(await asyncio.gather(*(create(i) for i in range(CONCURRENT))))


async def test_fifty_concurrent_creates_make_exactly_the_plan_cap(
    client: httpx.AsyncClient, world: World
) -> None:
    for round_ in range(ROUNDS):
        platform = await world.platform(f"race{round_}", plan="essentials")
        group = await world.group(platform)
        outcomes = await _burst(client, group, platform)
        assert outcomes == {(201, ""): 3, (409, "plan_limit_reached"): CONCURRENT - 3}, round_
        r = await client.get("/v1/integrations", headers=bearer("root", platform, "admin"))
        assert r.json()["total"] == 3


async def test_upgrade_then_burst_fills_the_new_cap(
    client: httpx.AsyncClient, world: World
) -> None:
    platform = await world.platform("grow", plan="essentials")
    group = await world.group(platform)
    assert (await _burst(client, group, platform))[(201, "")] == 3
    r = await client.patch(f"/v1/platforms/{platform}", json={"plan": "standard"}, headers=OPERATOR)
    assert r.status_code == 200
    outcomes = await _burst(client, group, platform)
    assert outcomes == {(201, ""): 7, (409, "plan_limit_reached"): CONCURRENT - 7}
