"""Finding integrations: `GET /v1/integrations?q=&enabled=`."""

from __future__ import annotations

import httpx
import pytest

from tests.auth import bearer
from tests.factories import World

ROOT = bearer("root", "p1", "admin")


async def titles(
    client: httpx.AsyncClient, headers: dict[str, str] = ROOT, **params: str
) -> list[str]:
    r = await client.get("/v1/integrations", params=params, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["total"] == len(r.json()["items"])
    return [i["title"] for i in r.json()["items"]]


class TestSearch:
    async def test_matches_title_and_address_whatever_the_case(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        weekly = await world.integration(group, "Weekly Newsletter")
        await world.integration(group, "Press review")
        await world.integration(group, "Alerts")

        assert await titles(client, q="NEWS") == ["Weekly Newsletter"]
        assert await titles(client, q="review") == ["Press review"]
        token = weekly["address"].split(".")[1].split("@")[0]
        assert await titles(client, q=token[:10].upper()) == ["Weekly Newsletter"]
        assert await titles(client, q=weekly["address"]) == ["Weekly Newsletter"]
        assert await titles(client, q="e") == ["Alerts", "Press review", "Weekly Newsletter"]
        assert await titles(client, q="nothing like it") == []
        assert len(await titles(client, q="")) == 3  # empty: no filter

    async def test_wildcards_are_plain_characters(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        for title in ("100% news", "snake_case", "back\\slash", "plain"):
            await world.integration(group, title)

        assert await titles(client, q="%") == ["100% news"]
        assert await titles(client, q="_") == ["snake_case"]
        assert await titles(client, q="\\") == ["back\\slash"]
        assert await titles(client, q="0% n") == ["100% news"]
        assert await titles(client, q="e_c") == ["snake_case"]
        assert await titles(client, q="e%c") == []

    async def test_filters_enabled_and_combines_with_q(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        off = await world.integration(group, "News off")
        await world.integration(group, "News on")
        await world.integration(group, "Other")
        r = await client.patch(
            f"/v1/integrations/{off['id']}", json={"enabled": False}, headers=ROOT
        )
        assert r.status_code == 200

        assert await titles(client, enabled="false") == ["News off"]
        assert await titles(client, enabled="true") == ["Other", "News on"]
        assert await titles(client, enabled="true", q="news") == ["News on"]

    async def test_pages_through_matches_with_the_cursor(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        for i in range(5):
            await world.integration(group, f"Match {i}")
            await world.integration(group, f"Other {i}")

        seen: list[str] = []
        params: dict[str, str | int] = {"q": "match", "limit": 2}
        while True:
            r = await client.get("/v1/integrations", params=params, headers=ROOT)
            body = r.json()
            assert body["total"] == 5
            seen += [i["title"] for i in body["items"]]
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
        assert seen == [f"Match {i}" for i in reversed(range(5))]

    async def test_a_member_finds_only_what_they_may_see(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", members_can_add_integrations=True)
        group = await world.group("p1")
        await world.member(group, "mo")
        await world.integration(group, "News by root")
        await world.integration(group, "News by mo", user_id="mo", role="member")

        assert await titles(client, bearer("mo", "p1", "member"), q="news") == ["News by mo"]

    async def test_another_platform_is_never_searched(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        await world.platform("p2")
        await world.integration(await world.group("p2"), "News", "p2")

        assert await titles(client, q="news") == []

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"q": "x" * 201}, "q"),
            ({"q": "a\x00b"}, "q"),
            ({"q": "line\nbreak"}, "q"),
            ({"enabled": "maybe"}, "enabled"),
        ],
    )
    async def test_bad_input_is_a_validation_problem(
        self, client: httpx.AsyncClient, world: World, params: dict[str, str], field: str
    ) -> None:
        await world.platform("p1")

        r = await client.get("/v1/integrations", params=params, headers=ROOT)

        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "validation_error"
        assert ["query", field] in [e["loc"] for e in r.json()["errors"]]
