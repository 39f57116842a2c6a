"""Groups and their members (/v1/groups)."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.auth import bearer
from tests.factories import World

ROOT = bearer("root", "p1", "admin")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def member_roles(client: httpx.AsyncClient, group: str) -> dict[str, str]:
    r = await client.get(f"/v1/groups/{group}/members", headers=ROOT)
    assert r.status_code == 200, r.text
    return {m["user_id"]: m["role"] for m in r.json()["items"]}


class TestCreateGroup:
    async def test_an_admin_creates_a_group_and_manages_it(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")

        r = await client.post(
            "/v1/groups",
            json={"name": "  Marketing ", "description": "News\nand more"},
            headers=bearer("ada", "p1", "admin"),
        )

        assert r.status_code == 201, r.text
        body = r.json()
        assert body["name"] == "Marketing"
        assert body["description"] == "News\nand more"
        assert body["members_can_add_integrations"] is False
        assert body["created_by"] == "ada"
        assert RFC3339_UTC.match(body["created_at"])
        uuid.UUID(body["id"])
        assert (await client.get(f"/v1/groups/{body['id']}", headers=ROOT)).json() == body
        assert await member_roles(client, body["id"]) == {"ada": "manager"}

    async def test_a_member_may_not_create_one(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", members_can_add_integrations=True)

        r = await client.post(
            "/v1/groups", json={"name": "Mine"}, headers=bearer("mo", "p1", "member")
        )

        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"
        assert (await client.get("/v1/groups", headers=ROOT)).json()["items"] == []

    async def test_invalid_groups_are_refused(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        cases: dict[str, tuple[dict[str, str], str]] = {
            "no name": ({}, "name"),
            "blank name": ({"name": " \t "}, "name"),
            "name too long": ({"name": "x" * 201}, "name"),
            "name with a line break": ({"name": "Sales\r\nBcc: x"}, "name"),
            "description with a control character": (
                {"name": "G", "description": "bell\x07"},
                "description",
            ),
            "description too long": ({"name": "G", "description": "x" * 2001}, "description"),
        }

        for case, (body, field) in cases.items():
            with subtests.test(case):
                r = await client.post("/v1/groups", json=body, headers=ROOT)
                assert r.status_code == 422
                assert r.json()["code"] == "validation_error"
                assert ["body", field] in [e["loc"] for e in r.json()["errors"]]

        assert (await client.get("/v1/groups", headers=ROOT)).json()["items"] == []

    async def test_a_name_of_200_characters_is_accepted(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")

        r = await client.post("/v1/groups", json={"name": "é" * 200}, headers=ROOT)

        assert r.status_code == 201
        assert r.json()["name"] == "é" * 200


class TestListGroups:
    async def test_an_admin_sees_every_group_newest_first(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        names = ["One", "Two", "Three"]
        ids = [await world.group("p1", name) for name in names]

        r = await client.get("/v1/groups", headers=bearer("ada", "p1", "admin"))

        assert r.status_code == 200
        assert [g["id"] for g in r.json()["items"]] == ids[::-1]
        assert r.json()["next_cursor"] is None

    async def test_a_member_sees_only_their_groups(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        mine = await world.group("p1", "Mine")
        managed = await world.group("p1", "Managed")
        await world.group("p1", "Other")
        await world.member(mine, "mo")
        await world.member(managed, "mo", "manager")

        r = await client.get("/v1/groups", headers=bearer("mo", "p1", "member"))

        assert {g["name"] for g in r.json()["items"]} == {"Mine", "Managed"}

    async def test_pages_never_repeat_or_skip_a_group(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        ids = [await world.group("p1", f"G{i}") for i in range(5)]

        seen: list[str] = []
        params: dict[str, str | int] = {"limit": 2}
        while True:
            r = await client.get("/v1/groups", params=params, headers=ROOT)
            assert r.status_code == 200
            seen += [g["id"] for g in r.json()["items"]]
            if r.json()["next_cursor"] is None:
                break
            params["cursor"] = r.json()["next_cursor"]

        assert seen == ids[::-1]

    async def test_an_invalid_cursor_is_refused(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")

        for cursor in ("garbage", "W10", "eyJhIjoxfQ", "é"):
            with subtests.test(cursor):
                r = await client.get("/v1/groups", params={"cursor": cursor}, headers=ROOT)
                assert r.status_code == 422
                assert r.json()["code"] == "invalid_cursor"


class TestGetGroup:
    async def test_an_unknown_group_is_not_found(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")

        r = await client.get(f"/v1/groups/{uuid.uuid4()}", headers=ROOT)

        assert r.status_code == 404
        assert r.json()["code"] == "not_found"


class TestUpdateGroup:
    async def test_a_manager_renames_describes_and_opens_their_group(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        await world.member(group, "mia", "manager")

        r = await client.patch(
            f"/v1/groups/{group}",
            json={"name": "Renamed", "description": "About", "members_can_add_integrations": True},
            headers=bearer("mia", "p1", "member"),
        )

        assert r.status_code == 200
        got = (await client.get(f"/v1/groups/{group}", headers=ROOT)).json()
        assert (got["name"], got["description"], got["members_can_add_integrations"]) == (
            "Renamed",
            "About",
            True,
        )
        assert got["created_by"] == "root"

    async def test_fields_left_out_are_kept_and_a_null_description_clears_it(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group(
            "p1", "Kept", description="Old", members_can_add_integrations=True
        )

        r = await client.patch(f"/v1/groups/{group}", json={"description": None}, headers=ROOT)

        assert r.status_code == 200
        assert (r.json()["name"], r.json()["description"]) == ("Kept", None)
        assert r.json()["members_can_add_integrations"] is True

    async def test_invalid_changes_are_refused(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1", "Kept")
        cases: dict[str, dict[str, object]] = {
            "null name": {"name": None},
            "null setting": {"members_can_add_integrations": None},
            "empty name": {"name": ""},
            "name with a line break": {"name": "a\nb"},
        }

        for case, body in cases.items():
            with subtests.test(case):
                r = await client.patch(f"/v1/groups/{group}", json=body, headers=ROOT)
                assert r.status_code == 422
                assert r.json()["code"] == "validation_error"
                assert [["body", *body]] == [e["loc"] for e in r.json()["errors"]]

        got = (await client.get(f"/v1/groups/{group}", headers=ROOT)).json()
        assert (got["name"], got["members_can_add_integrations"]) == ("Kept", False)


class TestDeleteGroup:
    async def test_the_group_its_members_and_its_integrations_go(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")
        group = await world.group("p1")
        other = await world.group("p1", "Other")
        await world.member(group, "mo")
        gone = await world.integration(group)
        stays = await world.integration(other)

        r = await client.delete(f"/v1/groups/{group}", headers=ROOT)

        assert r.status_code == 204
        assert r.content == b""
        assert (await client.get(f"/v1/groups/{group}", headers=ROOT)).status_code == 404
        assert (await client.get(f"/v1/groups/{group}/members", headers=ROOT)).status_code == 404
        assert (await client.get(f"/v1/integrations/{gone['id']}", headers=ROOT)).status_code == 404
        assert (await client.get("/v1/groups", headers=bearer("mo", "p1", "member"))).json()[
            "items"
        ] == []
        listed = (await client.get("/v1/integrations", headers=ROOT)).json()
        assert [i["id"] for i in listed["items"]] == [stays["id"]]
        assert listed["total"] == 1
        usage = (await client.get("/v1/platform", headers=ROOT)).json()["usage"]
        assert usage["integrations"]["count"] == 1

    async def test_a_second_delete_is_not_found(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        await client.delete(f"/v1/groups/{group}", headers=ROOT)

        r = await client.delete(f"/v1/groups/{group}", headers=ROOT)

        assert r.status_code == 404
        assert r.json()["code"] == "not_found"


class TestMembers:
    async def test_adding_answers_201_and_changing_a_role_200(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")

        added = await client.put(
            f"/v1/groups/{group}/members/mo", json={"role": "member"}, headers=ROOT
        )
        changed = await client.put(
            f"/v1/groups/{group}/members/mo", json={"role": "manager"}, headers=ROOT
        )

        assert added.status_code == 201
        assert {k: added.json()[k] for k in ("user_id", "group_id", "role")} == {
            "user_id": "mo",
            "group_id": group,
            "role": "member",
        }
        assert RFC3339_UTC.match(added.json()["created_at"])
        assert changed.status_code == 200
        assert changed.json()["role"] == "manager"
        assert await member_roles(client, group) == {"root": "manager", "mo": "manager"}

    async def test_a_member_sees_the_member_list(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        await world.member(group, "mo")
        await world.member(group, "bea")

        r = await client.get(f"/v1/groups/{group}/members", headers=bearer("mo", "p1", "member"))

        assert r.status_code == 200
        assert [m["user_id"] for m in r.json()["items"]] == ["bea", "mo", "root"]

    async def test_the_member_list_pages_without_repeating_or_skipping(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        for user in ("u1", "u2", "u3", "u4"):
            await world.member(group, user)

        seen: list[str] = []
        params: dict[str, str | int] = {"limit": 2}
        while True:
            r = await client.get(f"/v1/groups/{group}/members", params=params, headers=ROOT)
            seen += [m["user_id"] for m in r.json()["items"]]
            if r.json()["next_cursor"] is None:
                break
            params["cursor"] = r.json()["next_cursor"]

        assert seen == ["u4", "u3", "u2", "u1", "root"]

    async def test_a_removed_member_loses_access(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        await world.member(group, "mo")

        r = await client.delete(f"/v1/groups/{group}/members/mo", headers=ROOT)

        assert r.status_code == 204
        assert await member_roles(client, group) == {"root": "manager"}
        r = await client.get(f"/v1/groups/{group}", headers=bearer("mo", "p1", "member"))
        assert r.status_code == 404

    async def test_removing_someone_who_is_not_a_member_is_not_found(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")

        r = await client.delete(f"/v1/groups/{group}/members/stranger", headers=ROOT)

        assert r.status_code == 404
        assert r.json()["code"] == "not_found"

    async def test_a_promoted_member_may_manage_the_group(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        await world.member(group, "mo")
        mo = bearer("mo", "p1", "member")
        assert (
            await client.put(f"/v1/groups/{group}/members/bea", json={"role": "member"}, headers=mo)
        ).status_code == 403

        await world.member(group, "mo", "manager")

        r = await client.put(f"/v1/groups/{group}/members/bea", json={"role": "member"}, headers=mo)
        assert r.status_code == 201
        assert await member_roles(client, group) == {
            "root": "manager",
            "mo": "manager",
            "bea": "member",
        }

    async def test_an_invalid_role_is_refused(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        cases: dict[str, dict[str, str]] = {
            "unknown role": {"role": "owner"},
            "platform role": {"role": "admin"},
            "no role": {},
        }

        for case, body in cases.items():
            with subtests.test(case):
                r = await client.put(f"/v1/groups/{group}/members/mo", json=body, headers=ROOT)
                assert r.status_code == 422
                assert ["body", "role"] in [e["loc"] for e in r.json()["errors"]]

        assert await member_roles(client, group) == {"root": "manager"}
