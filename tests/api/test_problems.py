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


class TestJsonEndpointsRefuseOtherContentTypes:
    async def test_a_form_body_is_refused_with_415_and_nothing_is_made(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        r = await client.post("/v1/groups", data={"name": "Team"}, headers=bearer("root"))
        assert r.status_code == 415
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "unsupported_media_type"
        listed = await client.get("/v1/groups", headers=bearer("root"))
        assert listed.json()["items"] == []

    async def test_json_text_sent_as_text_plain_is_refused(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        r = await client.patch(
            f"/v1/groups/{group}",
            content=b'{"name": "Renamed"}',
            headers={**bearer("root"), "Content-Type": "text/plain"},
        )
        assert (r.status_code, r.json()["code"]) == (415, "unsupported_media_type")

    async def test_a_body_without_a_content_type_is_refused(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        r = await client.post("/v1/groups", content=b'{"name": "Team"}', headers=bearer("root"))
        assert (r.status_code, r.json()["code"]) == (415, "unsupported_media_type")

    async def test_json_with_a_charset_or_a_json_suffix_is_read(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
            r = await client.post(
                "/v1/groups",
                content=b'{"name": "Team"}',
                headers={**bearer("root"), "Content-Type": content_type},
            )
            assert r.status_code == 201, (content_type, r.text)

    async def test_an_endpoint_without_a_body_ignores_the_content_type(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        r = await client.delete(
            f"/v1/groups/{group}", headers={**bearer("root"), "Content-Type": "text/plain"}
        )
        assert r.status_code == 204


class TestMethodNotAllowedListsEveryAllowedMethod:
    async def test_allow_names_every_method_of_the_path(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        integration = "00000000-0000-0000-0000-000000000000"
        for method, path, allowed in (
            ("PUT", "/v1/integrations", "GET, POST"),
            ("PUT", f"/v1/integrations/{integration}", "GET, PATCH, DELETE"),
            ("POST", f"/v1/attachments/{integration}/content", "GET, HEAD"),
            ("GET", "/v1/platform/settings", "PATCH"),
            ("GET", "/inbound/mime", "POST"),
        ):
            r = await client.request(method, path, headers=bearer("root"))
            assert r.status_code == 405, (method, path)
            assert r.headers["allow"] == allowed, (method, path)
            assert r.json()["code"] == "method_not_allowed"
