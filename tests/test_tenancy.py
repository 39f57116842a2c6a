"""No request ever sees or changes another platform's data: a foreign id answers 404."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.auth import OPERATOR, bearer
from tests.factories import World

HOME, FOREIGN = "p1", "p2"


async def snapshot(client: httpx.AsyncClient, platform_id: str) -> dict[str, Any]:
    """Everything the platform's admin can see of it."""
    root = bearer("root", platform_id, "admin")
    platform = (await client.get("/v1/platform", headers=root)).json()
    groups = (await client.get("/v1/groups", params={"limit": 200}, headers=root)).json()["items"]
    members = {}
    for group in groups:
        r = await client.get(f"/v1/groups/{group['id']}/members", headers=root)
        members[group["id"]] = sorted((m["user_id"], m["role"]) for m in r.json()["items"])
    r = await client.get("/v1/integrations", params={"limit": 200}, headers=root)
    return {"platform": platform, "groups": groups, "members": members, "integrations": r.json()}


async def make_foreign(world: World) -> dict[str, str]:
    """A second platform whose members have the same user ids as the home platform's."""
    await world.platform(FOREIGN, members_can_add_integrations=True)
    group = await world.group(FOREIGN, "Foreign", members_can_add_integrations=True)
    await world.member(group, "mia", "manager", FOREIGN)
    await world.member(group, "mo", "member", FOREIGN)
    await world.member(group, "bea", "member", FOREIGN)
    by_mo = await world.integration(group, "By mo", FOREIGN, user_id="mo", role="member")
    by_root = await world.integration(group, "By root", FOREIGN)
    return {"group": group, "by_mo": by_mo["id"], "by_root": by_root["id"]}


async def make_home(world: World) -> str:
    await world.platform(HOME, members_can_add_integrations=True)
    group = await world.group(HOME, "Home", members_can_add_integrations=True)
    await world.member(group, "mia", "manager", HOME)
    await world.member(group, "mo", "member", HOME)
    await world.integration(group, "Home by mo", HOME, user_id="mo", role="member")
    return group


CALLERS = [
    pytest.param(bearer("root", HOME, "admin"), id="admin"),
    pytest.param(bearer("mia", HOME, "member"), id="manager"),
    pytest.param(bearer("mo", HOME, "member"), id="member"),
    pytest.param(bearer("olly", HOME, "member"), id="non-member"),
]

# Every request naming one of the foreign platform's ids.
FOREIGN_REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/groups/{group}", None),
    ("PATCH", "/v1/groups/{group}", {"name": "Taken over"}),
    ("PATCH", "/v1/groups/{group}", {"members_can_add_integrations": False}),
    ("DELETE", "/v1/groups/{group}", None),
    ("GET", "/v1/groups/{group}/members", None),
    ("PUT", "/v1/groups/{group}/members/newbie", {"role": "manager"}),
    ("PUT", "/v1/groups/{group}/members/mo", {"role": "manager"}),
    ("DELETE", "/v1/groups/{group}/members/bea", None),
    ("DELETE", "/v1/groups/{group}/members/mo", None),
    ("POST", "/v1/integrations", {"title": "Sneaky", "group_id": "{group}"}),
    ("GET", "/v1/integrations?group_id={group}", None),
    ("GET", "/v1/integrations/{by_mo}", None),
    ("GET", "/v1/integrations/{by_root}", None),
    ("PATCH", "/v1/integrations/{by_mo}", {"title": "Taken over"}),
    ("PATCH", "/v1/integrations/{by_root}", {"enabled": False}),
    ("DELETE", "/v1/integrations/{by_mo}", None),
    ("DELETE", "/v1/integrations/{by_root}", None),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


class TestForeignIds:
    @pytest.mark.parametrize("caller", CALLERS)
    async def test_answer_404_and_change_nothing(
        self,
        client: httpx.AsyncClient,
        world: World,
        subtests: pytest.Subtests,
        caller: dict[str, str],
    ) -> None:
        foreign = await make_foreign(world)
        await make_home(world)
        before = await snapshot(client, FOREIGN), await snapshot(client, HOME)

        for method, path, body in FOREIGN_REQUESTS:
            with subtests.test(f"{method} {path} {body or ''}"):
                r = await client.request(
                    method, _fill(path, foreign), json=_fill(body, foreign), headers=caller
                )
                assert r.status_code == 404, r.text
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["code"] == "not_found"

        assert (await snapshot(client, FOREIGN), await snapshot(client, HOME)) == before

    @pytest.mark.parametrize("caller", CALLERS)
    async def test_are_never_listed(
        self, client: httpx.AsyncClient, world: World, caller: dict[str, str]
    ) -> None:
        foreign = await make_foreign(world)
        home_group = await make_home(world)

        groups = (await client.get("/v1/groups", headers=caller)).json()["items"]
        integrations = (await client.get("/v1/integrations", headers=caller)).json()

        assert foreign["group"] not in {g["id"] for g in groups}
        listed = {i["id"] for i in integrations["items"]}
        assert listed.isdisjoint({foreign["by_mo"], foreign["by_root"]})
        assert integrations["total"] == len(listed)
        assert {i["group_id"] for i in integrations["items"]} <= {home_group}

    async def test_usage_counts_only_the_platforms_own_integrations(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await make_foreign(world)
        await make_home(world)

        r = await client.get("/v1/platform", headers=bearer("root", HOME, "admin"))

        assert r.json()["id"] == HOME
        assert r.json()["usage"]["integrations"]["count"] == 1

    async def test_a_user_with_the_same_id_on_two_platforms_sees_each_platform_apart(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        foreign = await make_foreign(world)
        home_group = await make_home(world)

        for platform_id, group in ((HOME, home_group), (FOREIGN, foreign["group"])):
            mo = bearer("mo", platform_id, "member")
            r = await client.get("/v1/groups", headers=mo)
            assert [g["id"] for g in r.json()["items"]] == [group]
            r = await client.get("/v1/integrations", headers=mo)
            assert {i["group_id"] for i in r.json()["items"]} == {group}


class TestTokenOfAnUnknownPlatform:
    async def test_is_unauthenticated_even_when_its_user_exists_elsewhere(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await make_foreign(world)

        r = await client.get("/v1/groups", headers=bearer("root", "nowhere", "admin"))

        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["code"] == "unauthenticated"


# Fields a client may not set: the platform, the address, the author, ids.
UNKNOWN_FIELDS: dict[str, tuple[str, str, dict[str, Any], list[str]]] = {
    "create integration with platform_id": (
        "POST",
        "/v1/integrations",
        {"title": "T", "group_id": "{group}", "platform_id": FOREIGN},
        ["body", "platform_id"],
    ),
    "create integration with address": (
        "POST",
        "/v1/integrations",
        {"title": "T", "group_id": "{group}", "address": "chosen@in.example.com"},
        ["body", "address"],
    ),
    "create integration with created_by": (
        "POST",
        "/v1/integrations",
        {"title": "T", "group_id": "{group}", "created_by": "boss"},
        ["body", "created_by"],
    ),
    "create integration with enabled": (
        "POST",
        "/v1/integrations",
        {"title": "T", "group_id": "{group}", "enabled": False},
        ["body", "enabled"],
    ),
    "create integration with new_group.platform_id": (
        "POST",
        "/v1/integrations",
        {"title": "T", "new_group": {"name": "N", "platform_id": FOREIGN}},
        ["body", "new_group", "platform_id"],
    ),
    "change integration address": (
        "PATCH",
        "/v1/integrations/{integration}",
        {"address": "chosen@in.example.com"},
        ["body", "address"],
    ),
    "change integration platform_id": (
        "PATCH",
        "/v1/integrations/{integration}",
        {"platform_id": FOREIGN},
        ["body", "platform_id"],
    ),
    "change integration created_by": (
        "PATCH",
        "/v1/integrations/{integration}",
        {"created_by": "boss"},
        ["body", "created_by"],
    ),
    "change integration group_id": (
        "PATCH",
        "/v1/integrations/{integration}",
        {"group_id": "{group}"},
        ["body", "group_id"],
    ),
    "create group with platform_id": (
        "POST",
        "/v1/groups",
        {"name": "G", "platform_id": FOREIGN},
        ["body", "platform_id"],
    ),
    "create group with created_by": (
        "POST",
        "/v1/groups",
        {"name": "G", "created_by": "boss"},
        ["body", "created_by"],
    ),
    "change group platform_id": (
        "PATCH",
        "/v1/groups/{group}",
        {"platform_id": FOREIGN},
        ["body", "platform_id"],
    ),
    "put member with platform_id": (
        "PUT",
        "/v1/groups/{group}/members/newbie",
        {"role": "member", "platform_id": FOREIGN},
        ["body", "platform_id"],
    ),
    "platform settings with plan": (
        "PATCH",
        "/v1/platform/settings",
        {"members_can_add_integrations": True, "plan": "premium"},
        ["body", "plan"],
    ),
}


async def test_unknown_body_fields_are_refused_and_change_nothing(
    client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
) -> None:
    await world.platform(FOREIGN)
    await world.platform(HOME, plan="essentials")
    group = await world.group(HOME)
    integration = await world.integration(group)
    ids = {"group": group, "integration": integration["id"]}
    before = await snapshot(client, HOME), await snapshot(client, FOREIGN)

    for case, (method, path, body, loc) in UNKNOWN_FIELDS.items():
        with subtests.test(case):
            r = await client.request(
                method, _fill(path, ids), json=_fill(body, ids), headers=bearer("root", HOME)
            )
            assert r.status_code == 422, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "validation_error"
            assert loc in [e["loc"] for e in r.json()["errors"]]
            assert (await snapshot(client, HOME), await snapshot(client, FOREIGN)) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        pytest.param(
            "POST",
            "/v1/platforms",
            {"name": "N", "plan": "premium", "owner": "x"},
            ["body", "owner"],
            id="create-platform",
        ),
        pytest.param(
            "PATCH", "/v1/platforms/p1", {"id": "p9"}, ["body", "id"], id="change-platform-id"
        ),
        pytest.param(
            "PATCH",
            "/v1/platforms/p1",
            {"members_can_add_integrations": True},
            ["body", "members_can_add_integrations"],
            id="change-platform-settings",
        ),
    ],
)
async def test_unknown_fields_are_refused_on_operator_endpoints(
    client: httpx.AsyncClient, world: World, method: str, path: str, body: Any, loc: list[str]
) -> None:
    await world.platform(HOME)

    r = await client.request(method, path, json=body, headers=OPERATOR)

    assert r.status_code == 422
    assert loc in [e["loc"] for e in r.json()["errors"]]
    platforms = (await client.get("/v1/platforms", headers=OPERATOR)).json()["items"]
    assert [p["id"] for p in platforms] == [HOME]
    assert (await snapshot(client, HOME))["platform"]["settings"] == {
        "members_can_add_integrations": False
    }
