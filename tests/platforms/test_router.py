"""Operator endpoints (/v1/platforms) and the caller's platform (/v1/platform)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.auth import OPERATOR, bearer
from tests.factories import World

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class TestCreatePlatform:
    async def test_operator_creates_a_platform_with_the_hosts_own_id(
        self, client: httpx.AsyncClient
    ) -> None:
        r = await client.post(
            "/v1/platforms",
            json={"id": "acme-42", "name": "Acme", "plan": "standard"},
            headers=OPERATOR,
        )

        assert r.status_code == 201, r.text
        body = r.json()
        assert {k: body[k] for k in ("id", "name", "plan")} == {
            "id": "acme-42",
            "name": "Acme",
            "plan": "standard",
        }
        assert RFC3339_UTC.match(body["created_at"])
        assert (await client.get("/v1/platforms/acme-42", headers=OPERATOR)).json() == body

    async def test_an_id_is_generated_when_none_is_given(self, client: httpx.AsyncClient) -> None:
        first = await client.post(
            "/v1/platforms", json={"name": "A", "plan": "premium"}, headers=OPERATOR
        )
        second = await client.post(
            "/v1/platforms", json={"name": "B", "plan": "premium"}, headers=OPERATOR
        )

        assert first.status_code == second.status_code == 201
        assert first.json()["id"]
        assert first.json()["id"] != second.json()["id"]
        r = await client.get(f"/v1/platforms/{first.json()['id']}", headers=OPERATOR)
        assert r.json()["name"] == "A"

    async def test_a_duplicate_id_is_a_conflict_and_keeps_the_first(
        self, client: httpx.AsyncClient
    ) -> None:
        await client.post(
            "/v1/platforms",
            json={"id": "p1", "name": "First", "plan": "essentials"},
            headers=OPERATOR,
        )

        r = await client.post(
            "/v1/platforms",
            json={"id": "p1", "name": "Second", "plan": "premium"},
            headers=OPERATOR,
        )

        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "conflict"
        kept = (await client.get("/v1/platforms/p1", headers=OPERATOR)).json()
        assert (kept["name"], kept["plan"]) == ("First", "essentials")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            pytest.param({"name": "A", "plan": "gold"}, "plan", id="unknown-plan"),
            pytest.param({"plan": "premium"}, "name", id="no-name"),
            pytest.param({"name": "  ", "plan": "premium"}, "name", id="blank-name"),
            pytest.param({"name": "A", "plan": "premium", "id": "a/b"}, "id", id="id-with-slash"),
            pytest.param({"name": "A", "plan": "premium", "id": "x" * 65}, "id", id="id-too-long"),
        ],
    )
    async def test_invalid_platforms_are_refused(
        self, client: httpx.AsyncClient, body: dict[str, str], field: str
    ) -> None:
        r = await client.post("/v1/platforms", json=body, headers=OPERATOR)

        assert r.status_code == 422
        assert r.json()["code"] == "validation_error"
        assert ["body", field] in [e["loc"] for e in r.json()["errors"]]
        assert (await client.get("/v1/platforms", headers=OPERATOR)).json()["items"] == []


class TestListPlatforms:
    async def test_pages_through_every_platform_newest_first(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        for platform_id in ("a", "b", "c", "d", "e"):
            await world.platform(platform_id)

        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            r = await client.get("/v1/platforms", params=params, headers=OPERATOR)
            assert r.status_code == 200
            assert len(r.json()["items"]) <= 2
            seen += [p["id"] for p in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break

        assert seen == ["e", "d", "c", "b", "a"]


class TestGetPlatform:
    async def test_an_unknown_platform_is_not_found(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/v1/platforms/nope", headers=OPERATOR)

        assert r.status_code == 404
        assert r.json()["code"] == "not_found"


class TestUpdatePlatform:
    async def test_a_plan_change_shows_in_the_tenants_usage(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")

        r = await client.patch("/v1/platforms/p1", json={"plan": "standard"}, headers=OPERATOR)

        assert r.status_code == 200
        assert r.json()["plan"] == "standard"
        r = await client.get("/v1/platform", headers=bearer("root", "p1"))
        assert r.json()["plan"] == "standard"
        assert r.json()["usage"]["integrations"]["limit"] == 10

    async def test_a_name_change_keeps_the_plan(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")

        r = await client.patch("/v1/platforms/p1", json={"name": "Renamed"}, headers=OPERATOR)

        assert r.status_code == 200
        assert (r.json()["name"], r.json()["plan"]) == ("Renamed", "essentials")
        assert (await client.get("/v1/platforms/p1", headers=OPERATOR)).json()["name"] == "Renamed"

    async def test_an_unknown_platform_is_not_found(self, client: httpx.AsyncClient) -> None:
        r = await client.patch("/v1/platforms/nope", json={"plan": "premium"}, headers=OPERATOR)

        assert r.status_code == 404
        assert r.json()["code"] == "not_found"

    async def test_null_is_refused_rather_than_ignored(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")

        for field in ("plan", "name"):
            r = await client.patch("/v1/platforms/p1", json={field: None}, headers=OPERATOR)
            assert r.status_code == 422
            assert [e["loc"] for e in r.json()["errors"]] == [["body", field]]

    async def test_an_unknown_plan_is_refused(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")

        r = await client.patch("/v1/platforms/p1", json={"plan": "gold"}, headers=OPERATOR)

        assert r.status_code == 422
        assert (await client.get("/v1/platforms/p1", headers=OPERATOR)).json()[
            "plan"
        ] == "essentials"


OPERATOR_ENDPOINTS = [
    pytest.param("POST", "/v1/platforms", {"name": "X", "plan": "premium"}, id="create"),
    pytest.param("GET", "/v1/platforms", None, id="list"),
    pytest.param("GET", "/v1/platforms/p1", None, id="get"),
    pytest.param("PATCH", "/v1/platforms/p1", {"plan": "premium"}, id="update"),
]

TENANT_ENDPOINTS = [
    pytest.param("GET", "/v1/platform", None, id="platform"),
    pytest.param(
        "PATCH", "/v1/platform/settings", {"members_can_add_integrations": True}, id="settings"
    ),
    pytest.param("GET", "/v1/groups", None, id="groups"),
    pytest.param("POST", "/v1/groups", {"name": "G"}, id="create-group"),
    pytest.param("GET", "/v1/integrations", None, id="integrations"),
    pytest.param(
        "POST",
        "/v1/integrations",
        {"title": "T", "new_group": {"name": "G"}},
        id="create-integration",
    ),
]


class TestOperatorAuthentication:
    @pytest.mark.parametrize(("method", "path", "body"), OPERATOR_ENDPOINTS)
    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param(bearer("root", "p1", "admin"), id="admin-jwt"),
            pytest.param({"Authorization": "Bearer not-the-operator-token"}, id="wrong-token"),
            pytest.param({}, id="no-token"),
        ],
    )
    async def test_operator_endpoints_answer_anything_else_401(
        self,
        client: httpx.AsyncClient,
        world: World,
        method: str,
        path: str,
        body: dict[str, str] | None,
        headers: dict[str, str],
    ) -> None:
        await world.platform("p1", plan="essentials")

        r = await client.request(method, path, json=body, headers=headers)

        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "unauthenticated"
        platforms = (await client.get("/v1/platforms", headers=OPERATOR)).json()["items"]
        assert [(p["id"], p["plan"]) for p in platforms] == [("p1", "essentials")]

    @pytest.mark.parametrize(("method", "path", "body"), TENANT_ENDPOINTS)
    async def test_the_operator_token_reads_no_tenant_content(
        self, client: httpx.AsyncClient, world: World, method: str, path: str, body: object
    ) -> None:
        await world.platform("p1")

        r = await client.request(method, path, json=body, headers=OPERATOR)

        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["code"] == "unauthenticated"
        groups = (await client.get("/v1/groups", headers=bearer("root", "p1"))).json()["items"]
        assert groups == []


class TestPlatformDetail:
    async def test_shows_plan_settings_and_integration_usage(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")
        group = await world.group("p1")
        await world.integration(group)
        await world.integration(group)

        r = await client.get("/v1/platform", headers=bearer("root", "p1"))

        assert r.status_code == 200
        assert r.json() == {
            "id": "p1",
            "name": "Platform p1",
            "plan": "essentials",
            "settings": {"members_can_add_integrations": False},
            "usage": {"integrations": {"count": 2, "limit": 3}},
        }

    @pytest.mark.parametrize(
        ("plan", "limit"), [("essentials", 3), ("standard", 10), ("premium", None)]
    )
    async def test_the_limit_follows_the_plan_and_is_null_when_unlimited(
        self, client: httpx.AsyncClient, world: World, plan: str, limit: int | None
    ) -> None:
        await world.platform("p1", plan=plan)

        r = await client.get("/v1/platform", headers=bearer("root", "p1"))

        assert r.json()["usage"]["integrations"] == {"count": 0, "limit": limit}

    async def test_deleted_integrations_do_not_count_and_disabled_ones_do(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="standard")
        group = await world.group("p1")
        _kept, disabled, deleted = [await world.integration(group) for _ in range(3)]
        r = await client.patch(
            f"/v1/integrations/{disabled['id']}",
            json={"enabled": False},
            headers=bearer("root", "p1"),
        )
        assert r.status_code == 200
        await world.delete_integration(deleted["id"])

        r = await client.get("/v1/platform", headers=bearer("root", "p1"))

        assert r.json()["usage"]["integrations"] == {"count": 2, "limit": 10}


class TestPlatformSettings:
    async def test_an_admin_lets_members_add_integrations(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")

        r = await client.patch(
            "/v1/platform/settings",
            json={"members_can_add_integrations": True},
            headers=bearer("root", "p1"),
        )

        assert r.status_code == 200
        assert r.json()["settings"] == {"members_can_add_integrations": True}
        r = await client.get("/v1/platform", headers=bearer("root", "p1"))
        assert r.json()["settings"] == {"members_can_add_integrations": True}

    async def test_a_group_manager_may_not_change_them(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        await world.member(group, "mia", "manager")

        r = await client.patch(
            "/v1/platform/settings",
            json={"members_can_add_integrations": True},
            headers=bearer("mia", "p1", "member"),
        )

        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"
        r = await client.get("/v1/platform", headers=bearer("root", "p1"))
        assert r.json()["settings"] == {"members_can_add_integrations": False}

    @pytest.mark.parametrize(
        "body",
        [{}, {"members_can_add_integrations": None}, {"members_can_add_integrations": "maybe"}],
    )
    async def test_a_missing_or_invalid_value_is_refused(
        self, client: httpx.AsyncClient, world: World, body: dict[str, object]
    ) -> None:
        await world.platform("p1")

        r = await client.patch("/v1/platform/settings", json=body, headers=bearer("root", "p1"))

        assert r.status_code == 422
        assert ["body", "members_can_add_integrations"] in [e["loc"] for e in r.json()["errors"]]
