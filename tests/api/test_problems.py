"""The framework's own errors are problem documents too."""

from __future__ import annotations

import httpx

from tests.auth import OPERATOR, bearer
from tests.factories import World


async def test_unknown_path_is_a_problem(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "not_found"


async def test_wrong_method_is_a_problem(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/integrations")
    assert r.status_code == 405
    assert r.json()["code"] == "method_not_allowed"


async def test_trailing_slash_is_not_redirected(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/integrations/")
    assert r.status_code == 404


async def test_validation_error_names_the_failing_fields(
    client: httpx.AsyncClient, world: World
) -> None:
    await world.platform("p1")
    r = await client.post("/v1/groups", json={"name": "", "colour": "red"}, headers=bearer("root"))
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_error"
    locations = {tuple(e["loc"]) for e in body["errors"]}
    assert ("body", "name") in locations
    assert ("body", "colour") in locations


async def test_malformed_json_is_a_validation_problem(
    client: httpx.AsyncClient, world: World
) -> None:
    await world.platform("p1")
    r = await client.post(
        "/v1/groups",
        content=b"{not json",
        headers={**bearer("root"), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"


async def test_bad_uuid_in_path_is_a_validation_problem(
    client: httpx.AsyncClient, world: World
) -> None:
    await world.platform("p1")
    r = await client.get("/v1/groups/not-a-uuid", headers=bearer("root"))
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["path", "group_id"]


async def test_hostile_cursors_are_refused_not_500(client: httpx.AsyncClient, world: World) -> None:
    import base64
    import json

    await world.platform("p1")
    for created, key in (
        ("9999-12-31T23:59:59-14:00", "x"),
        ("2026-01-01T00:00:00+00:00", "a\u0000b"),
    ):
        raw = json.dumps([created, key]).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        r = await client.get("/v1/platforms", params={"cursor": cursor}, headers=OPERATOR)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "invalid_cursor"
