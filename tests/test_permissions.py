"""Who may do what (DESIGN.md, "Identity and tenancy"): the whole matrix.

A resource the caller may not see answers 404; one they see but may not change answers 403.
A refused write changes nothing; an allowed one is what the platform's admin then sees.

``MATRIX`` reads like the table in DESIGN.md: one line per action and settings, one column
per kind of caller. Each test is one kind of caller: it builds one platform per combination
of the two settings (platform-wide and the group's ``members_can_add_integrations``) and
runs every action of the matrix on each, as a subtest named after the settings and the
action. Platforms never see each other's data, so the four stay apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from app.config import Settings
from tests.auth import bearer
from tests.conftest import make_settings
from tests.factories import World
from tests.inbound.payloads import INBOUND_PASSWORD, INBOUND_USER, basic, postmark_json


@pytest.fixture
def settings(database_url: str, tmp_path: Any, blob_store: str) -> Settings:
    """Inbound on: a refused mail gives the replay action its delivery."""
    return make_settings(
        database_url,
        tmp_path / "blobs",
        store=blob_store,
        inbound_username=INBOUND_USER,
        inbound_password=INBOUND_PASSWORD,
    )


# The platform of the stories after the matrix, and its admin.
P = "p1"
ROOT = bearer("root", P, "admin")

LISTED, HIDDEN = "listed", "hidden"
PROBLEM_CODES = {401: "unauthenticated", 403: "forbidden", 404: "not_found"}
SUCCESS = {200, 201, 204}


@dataclass(frozen=True)
class Caller:
    label: str
    user_id: str
    role: str  # the platform role in the token
    group_role: str | None  # their role in the one group they belong to
    in_target: bool  # whether that group is the one the actions are about

    def headers(self, platform_id: str) -> dict[str, str]:
        return bearer(self.user_id, platform_id, self.role)


ADMIN = Caller("admin", "ada", "admin", None, False)
MANAGER_OWN = Caller("manager-own-group", "mia", "member", "manager", True)
MANAGER_OTHER = Caller("manager-other-group", "mia", "member", "manager", False)
MEMBER_OWN = Caller("member-own-group", "mo", "member", "member", True)
MEMBER_OTHER = Caller("member-other-group", "mo", "member", "member", False)
NON_MEMBER = Caller("non-member", "olly", "member", None, False)
COLUMNS = (ADMIN, MANAGER_OWN, MANAGER_OTHER, MEMBER_OWN, MEMBER_OTHER, NON_MEMBER)
MAKE_THEIR_OWN = (ADMIN, MANAGER_OWN, MEMBER_OWN)  # the others cannot add to the group

# Settings: (the platform's members_can_add_integrations, the group's).
OFF, PLATFORM, GROUP, BOTH = (False, False), (True, False), (False, True), (True, True)
ANY = (OFF, PLATFORM, GROUP, BOTH)
NA = None  # not applicable: such a caller cannot have made an integration there

# fmt: off
MATRIX: list[tuple[str, tuple[tuple[bool, bool], ...], Any, Any, Any, Any, Any, Any]] = [
    # action                     settings     admin   manager          member           non-
    #                                                 own     other    own     other    member
    ("see group",                ANY,         200,    200,    404,     200,    404,     404),
    ("list group",               ANY,         LISTED, LISTED, HIDDEN,  LISTED, HIDDEN,  HIDDEN),
    ("change group",             ANY,         200,    200,    404,     403,    404,     404),
    ("delete group",             ANY,         204,    403,    404,     403,    404,     404),
    ("list members",             ANY,         200,    200,    404,     200,    404,     404),
    ("add member",               ANY,         201,    201,    404,     403,    404,     404),
    ("remove member",            ANY,         204,    204,    404,     403,    404,     404),
    ("create integration",       (OFF,),      201,    201,    404,     403,    404,     404),
    ("create integration",       (PLATFORM,), 201,    201,    404,     201,    404,     404),
    ("create integration",       (GROUP,),    201,    201,    404,     201,    404,     404),
    ("create integration",       (BOTH,),     201,    201,    404,     201,    404,     404),
    ("create with new group",    (OFF,),      201,    403,    403,     403,    403,     403),
    ("create with new group",    (PLATFORM,), 201,    201,    201,     201,    201,     201),
    ("create with new group",    (GROUP,),    201,    403,    403,     403,    403,     403),
    ("create with new group",    (BOTH,),     201,    201,    201,     201,    201,     201),
    ("see their integration",    ANY,         200,    200,    404,     404,    404,     404),
    ("list their integration",   ANY,         LISTED, LISTED, HIDDEN,  HIDDEN, HIDDEN,  HIDDEN),
    ("find their integration",   ANY,         LISTED, LISTED, HIDDEN,  HIDDEN, HIDDEN,  HIDDEN),
    ("test their integration",   ANY,         200,    200,    404,     404,    404,     404),
    ("change their integration", ANY,         200,    200,    404,     404,    404,     404),
    ("set their options",        ANY,         200,    200,    404,     404,    404,     404),
    ("rotate their address",     ANY,         200,    200,    404,     404,    404,     404),
    ("delete their integration", ANY,         204,    204,    404,     404,    404,     404),
    ("see own integration",      ANY,         200,    200,    NA,       200,    NA,       NA),
    ("list own integration",     ANY,         LISTED, LISTED, NA,       LISTED, NA,       NA),
    ("find own integration",     ANY,         LISTED, LISTED, NA,       LISTED, NA,       NA),
    ("test own integration",     ANY,         200,    200,    NA,       200,    NA,       NA),
    # a member who made one keeps seeing it, but changes it only while still allowed to create
    ("change own integration",   (OFF,),      200,    200,    NA,       403,    NA,       NA),
    ("change own integration",   (PLATFORM,), 200,    200,    NA,       200,    NA,       NA),
    ("change own integration",   (GROUP,),    200,    200,    NA,       200,    NA,       NA),
    ("change own integration",   (BOTH,),     200,    200,    NA,       200,    NA,       NA),
    ("set own options",          (OFF,),      200,    200,    NA,       403,    NA,       NA),
    ("set own options",          (PLATFORM,), 200,    200,    NA,       200,    NA,       NA),
    ("set own options",          (GROUP,),    200,    200,    NA,       200,    NA,       NA),
    ("set own options",          (BOTH,),     200,    200,    NA,       200,    NA,       NA),
    ("rotate own address",       (OFF,),      200,    200,    NA,       403,    NA,       NA),
    ("rotate own address",       (PLATFORM,), 200,    200,    NA,       200,    NA,       NA),
    ("rotate own address",       (GROUP,),    200,    200,    NA,       200,    NA,       NA),
    ("rotate own address",       (BOTH,),     200,    200,    NA,       200,    NA,       NA),
    ("delete own integration",   (OFF,),      204,    204,    NA,       403,    NA,       NA),
    ("delete own integration",   (PLATFORM,), 204,    204,    NA,       204,    NA,       NA),
    ("delete own integration",   (GROUP,),    204,    204,    NA,       204,    NA,       NA),
    ("delete own integration",   (BOTH,),     204,    204,    NA,       204,    NA,       NA),
    ("replay a refused delivery", ANY,        200,    403,    404,     404,    404,     404),
    # the operator's alone: no user of the platform, its admin included, may remove it
    ("remove the platform",      ANY,         401,    401,    401,     401,    401,     401),
]
# fmt: on


@dataclass
class Scene:
    client: httpx.AsyncClient
    root: dict[str, str]  # the platform's admin, who made the groups and "their" integrations
    caller: dict[str, str]
    group: str  # the group the actions are about ("Target")
    ids: dict[str, str] = field(default_factory=dict)  # integrations, by purpose
    platform: str = ""


Run = Callable[[Scene], Awaitable[Any]]


@dataclass(frozen=True)
class Action:
    run: Run
    # Writes: root's view of what the action changes, as it must be when refused and
    # when allowed.
    observe: Run | None = None
    unchanged: Any = None
    changed: Any = None


def answer(r: httpx.Response) -> int:
    if r.status_code in PROBLEM_CODES:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == PROBLEM_CODES[r.status_code]
    return r.status_code


async def listed(s: Scene, path: str, item_id: str, **params: Any) -> str:
    r = await s.client.get(path, params={"limit": 200, **params}, headers=s.caller)
    assert r.status_code == 200, r.text
    return LISTED if item_id in {item["id"] for item in r.json()["items"]} else HIDDEN


async def root_group(s: Scene) -> Any:
    r = await s.client.get(f"/v1/groups/{s.group}", headers=s.root)
    return r.status_code, r.json()["name"] if r.status_code == 200 else None


async def root_group_status(s: Scene) -> Any:
    return (await s.client.get(f"/v1/groups/{s.group}", headers=s.root)).status_code


def root_has_member(user_id: str) -> Run:
    async def observe(s: Scene) -> Any:
        r = await s.client.get(f"/v1/groups/{s.group}/members", headers=s.root)
        assert r.status_code == 200, r.text
        return user_id in {m["user_id"] for m in r.json()["items"]}

    return observe


async def root_new_in_group(s: Scene) -> Any:
    r = await s.client.get("/v1/integrations", params={"group_id": s.group}, headers=s.root)
    return [i["title"] for i in r.json()["items"] if i["title"] == "New"]


async def root_dedicated(s: Scene) -> Any:
    groups = (await s.client.get("/v1/groups", headers=s.root)).json()["items"]
    integrations = (await s.client.get("/v1/integrations", headers=s.root)).json()["items"]
    return (
        [g["name"] for g in groups if g["name"] == "Dedicated"],
        [i["title"] for i in integrations if i["title"] == "Dedicated"],
    )


def integration_actions(whose: str, title: str) -> dict[str, dict[str, Action]]:
    """Reads and writes on an integration; each write has its own integration."""

    async def see(s: Scene) -> Any:
        r = await s.client.get(f"/v1/integrations/{s.ids[whose]}", headers=s.caller)
        return answer(r)

    async def in_list(s: Scene) -> Any:
        return await listed(s, "/v1/integrations", s.ids[whose])

    async def find(s: Scene) -> Any:
        return await listed(s, "/v1/integrations", s.ids[whose], q=title.upper(), enabled=True)

    async def dry_run(s: Scene) -> Any:
        r = await s.client.post(
            f"/v1/integrations/{s.ids[whose]}/test",
            json={"from": "alice@example.org"},
            headers=s.caller,
        )
        return answer(r)

    async def change(s: Scene) -> Any:
        r = await s.client.patch(
            f"/v1/integrations/{s.ids[whose + ':change']}",
            json={"title": "Renamed"},
            headers=s.caller,
        )
        return answer(r)

    async def delete(s: Scene) -> Any:
        r = await s.client.delete(f"/v1/integrations/{s.ids[whose + ':delete']}", headers=s.caller)
        return answer(r)

    async def set_options(s: Scene) -> Any:
        r = await s.client.patch(
            f"/v1/integrations/{s.ids[whose + ':change']}",
            json={"automatic_mail": "accept", "allowed_senders_verified_only": True},
            headers=s.caller,
        )
        return answer(r)

    async def rotate(s: Scene) -> Any:
        r = await s.client.post(
            f"/v1/integrations/{s.ids[whose + ':change']}/rotate-address",
            json={"grace_days": 1},
            headers=s.caller,
        )
        return answer(r)

    async def root_previous(s: Scene) -> Any:
        r = await s.client.get(f"/v1/integrations/{s.ids[whose + ':change']}", headers=s.root)
        return len(r.json()["previous_addresses"])

    async def root_options(s: Scene) -> Any:
        r = await s.client.get(f"/v1/integrations/{s.ids[whose + ':change']}", headers=s.root)
        body = r.json()
        return body["automatic_mail"], body["allowed_senders_verified_only"]

    def root_view(purpose: str) -> Run:
        async def observe(s: Scene) -> Any:
            r = await s.client.get(f"/v1/integrations/{s.ids[purpose]}", headers=s.root)
            return r.status_code, r.json()["title"] if r.status_code == 200 else None

        return observe

    name = "their" if whose == "theirs" else "own"
    return {
        "reads": {
            f"see {name} integration": Action(see),
            f"list {name} integration": Action(in_list),
            f"find {name} integration": Action(find),
            f"test {name} integration": Action(dry_run),
        },
        "writes": {
            f"change {name} integration": Action(
                change, root_view(f"{whose}:change"), (200, title), (200, "Renamed")
            ),
            f"delete {name} integration": Action(
                delete, root_view(f"{whose}:delete"), (200, title), (404, None)
            ),
            f"set {name} options": Action(
                set_options, root_options, ("refuse", False), ("accept", True)
            ),
            f"rotate {name} address": Action(rotate, root_previous, 0, 1),
        },
    }


async def _see_group(s: Scene) -> Any:
    return answer(await s.client.get(f"/v1/groups/{s.group}", headers=s.caller))


async def _list_groups(s: Scene) -> Any:
    return await listed(s, "/v1/groups", s.group)


async def _change_group(s: Scene) -> Any:
    r = await s.client.patch(f"/v1/groups/{s.group}", json={"name": "Renamed"}, headers=s.caller)
    return answer(r)


async def _delete_group(s: Scene) -> Any:
    return answer(await s.client.delete(f"/v1/groups/{s.group}", headers=s.caller))


async def _list_members(s: Scene) -> Any:
    return answer(await s.client.get(f"/v1/groups/{s.group}/members", headers=s.caller))


async def _add_member(s: Scene) -> Any:
    r = await s.client.put(
        f"/v1/groups/{s.group}/members/newbie", json={"role": "member"}, headers=s.caller
    )
    return answer(r)


async def _remove_member(s: Scene) -> Any:
    return answer(await s.client.delete(f"/v1/groups/{s.group}/members/bea", headers=s.caller))


async def _create_integration(s: Scene) -> Any:
    r = await s.client.post(
        "/v1/integrations", json={"title": "New", "group_id": s.group}, headers=s.caller
    )
    return answer(r)


async def _replay(s: Scene) -> Any:
    r = await s.client.post(f"/v1/deliveries/{s.ids['refused']}/replay", headers=s.caller)
    return answer(r)


async def _remove_platform(s: Scene) -> Any:
    return answer(await s.client.delete(f"/v1/platforms/{s.platform}", headers=s.caller))


async def _create_with_new_group(s: Scene) -> Any:
    r = await s.client.post(
        "/v1/integrations",
        json={"title": "Dedicated", "new_group": {"name": "Dedicated"}},
        headers=s.caller,
    )
    return answer(r)


READ_VERBS = ("see", "list", "find", "test")
WRITE_VERBS = ("change", "delete")
OWN_EXTRA = {"set own options", "rotate own address"}
THEIRS = integration_actions("theirs", "Theirs")
MINE = integration_actions("mine", "Mine")

# In the order they run: reads, then writes that leave the group in place, then its deletion.
ACTIONS: dict[str, Action] = {
    "see group": Action(_see_group),
    "list group": Action(_list_groups),
    "list members": Action(_list_members),
    **THEIRS["reads"],
    **MINE["reads"],
    "change group": Action(_change_group, root_group, (200, "Target"), (200, "Renamed")),
    "add member": Action(_add_member, root_has_member("newbie"), False, True),
    "remove member": Action(_remove_member, root_has_member("bea"), True, False),
    "create integration": Action(_create_integration, root_new_in_group, [], ["New"]),
    "create with new group": Action(
        _create_with_new_group, root_dedicated, ([], []), (["Dedicated"], ["Dedicated"])
    ),
    "replay a refused delivery": Action(_replay),
    "remove the platform": Action(_remove_platform, root_group_status, 200, 404),
    **THEIRS["writes"],
    **MINE["writes"],
    "delete group": Action(_delete_group, root_group_status, 200, 404),
}


def expectations(caller: Caller, settings: tuple[bool, bool]) -> dict[str, Any]:
    column = COLUMNS.index(caller)
    expected: dict[str, Any] = {}
    for action, combos, *outcomes in MATRIX:
        if settings in combos and outcomes[column] is not None:
            assert action not in expected, f"{action} is in the matrix twice"
            expected[action] = outcomes[column]
    return {action: expected[action] for action in ACTIONS if action in expected}


def _label(settings: tuple[bool, bool]) -> str:
    platform_on, group_on = settings
    return f"platform_{'on' if platform_on else 'off'}-group_{'on' if group_on else 'off'}"


async def build(world: World, caller: Caller, settings: tuple[bool, bool]) -> Scene:
    """A platform of its own with the group "Target" and what the actions need; the settings
    apply to every group. A caller made "their own" integrations while members could."""
    platform_on, group_on = settings
    platform = _label(settings)
    makes_own = caller in MAKE_THEIR_OWN
    on = {"members_can_add_integrations": True}
    await world.platform(platform, "premium", **(on if platform_on or makes_own else {}))
    group = await world.group(platform, "Target", **(on if group_on else {}))
    if caller.group_role is not None:
        home = group
        if not caller.in_target:
            home = await world.group(platform, "Home", **(on if group_on else {}))
        await world.member(home, caller.user_id, caller.group_role, platform)
    await world.member(group, "bea", "member", platform)
    scene = Scene(world.client, bearer("root", platform, "admin"), caller.headers(platform), group)
    scene.platform = platform
    for purpose in ("theirs:change", "theirs:delete"):
        scene.ids[purpose] = (await world.integration(group, "Theirs", platform))["id"]
    scene.ids["theirs"] = scene.ids["theirs:change"]
    address = await world.client.get(f"/v1/integrations/{scene.ids['theirs']}", headers=scene.root)
    alert = postmark_json(
        address.json()["address"], headers=[{"Name": "Auto-Submitted", "Value": "auto-generated"}]
    )
    r = await world.client.post("/inbound/postmark", json=alert, headers=basic())
    assert r.json()["reason"] == "auto_reply", r.text
    scene.ids["refused"] = r.json()["delivery_ids"][0]
    if makes_own:
        for purpose in ("mine:change", "mine:delete"):
            made = await world.integration(
                group, "Mine", platform, user_id=caller.user_id, role=caller.role
            )
            scene.ids[purpose] = made["id"]
        scene.ids["mine"] = scene.ids["mine:change"]
        if not platform_on:
            await world.settings(platform, members_can_add_integrations=False)
    return scene


@pytest.mark.parametrize("caller", [pytest.param(c, id=c.label) for c in COLUMNS])
async def test_who_may_do_what(world: World, subtests: pytest.Subtests, caller: Caller) -> None:
    own = {f"{verb} own integration" for verb in READ_VERBS + WRITE_VERBS} | OWN_EXTRA
    for settings in ANY:
        expected = expectations(caller, settings)
        assert set(expected) == set(ACTIONS) - (set() if caller in MAKE_THEIR_OWN else own)
        scene = await build(world, caller, settings)
        for action, outcome in expected.items():
            act = ACTIONS[action]
            with subtests.test(f"{_label(settings)}: {action}"):
                assert await act.run(scene) == outcome
                if act.observe is not None:
                    wanted = act.changed if outcome in SUCCESS else act.unchanged
                    assert await act.observe(scene) == wanted, "root does not see what it should"


class TestCreatorOfAnIntegration:
    async def test_still_sees_it_but_may_not_change_it_once_members_may_no_longer_add(
        self, world: World
    ) -> None:
        await world.platform(P, members_can_add_integrations=True)
        group = await world.group(P)
        await world.member(group, "mo")
        mo = bearer("mo", P, "member")
        made = await world.integration(group, "Mine", user_id="mo", role="member")
        await world.settings(P, members_can_add_integrations=False)

        r = await world.client.get(f"/v1/integrations/{made['id']}", headers=mo)
        assert r.status_code == 200
        assert r.json()["address"] == made["address"]
        r = await world.client.patch(
            f"/v1/integrations/{made['id']}", json={"enabled": False}, headers=mo
        )
        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"
        r = await world.client.delete(f"/v1/integrations/{made['id']}", headers=mo)
        assert r.status_code == 403
        r = await world.client.get(f"/v1/integrations/{made['id']}", headers=ROOT)
        assert r.json()["enabled"] is True

        await world.update_group(group, members_can_add_integrations=True)
        r = await world.client.patch(
            f"/v1/integrations/{made['id']}", json={"enabled": False}, headers=mo
        )
        assert r.status_code == 200
        assert r.json()["enabled"] is False

    async def test_removed_from_the_group_still_sees_it_but_may_not_change_it(
        self, world: World
    ) -> None:
        await world.platform(P, members_can_add_integrations=True)
        group = await world.group(P)
        await world.member(group, "mo")
        mo = bearer("mo", P, "member")
        made = await world.integration(group, "Mine", user_id="mo", role="member")
        await world.remove_member(group, "mo")

        r = await world.client.get("/v1/integrations", headers=mo)
        assert [i["id"] for i in r.json()["items"]] == [made["id"]]
        r = await world.client.patch(
            f"/v1/integrations/{made['id']}", json={"title": "Renamed"}, headers=mo
        )
        assert r.status_code == 403
        r = await world.client.get(f"/v1/integrations/{made['id']}", headers=mo)
        assert r.json()["title"] == "Mine"


class TestGroupManager:
    async def test_sees_every_integration_of_their_group_but_a_member_only_their_own(
        self, world: World
    ) -> None:
        await world.platform(P)
        group = await world.group(P, members_can_add_integrations=True)
        await world.member(group, "mia", "manager")
        await world.member(group, "mo")
        await world.member(group, "max")
        by_mo = await world.integration(group, "By mo", user_id="mo", role="member")
        by_max = await world.integration(group, "By max", user_id="max", role="member")

        def ids(r: httpx.Response) -> set[str]:
            return {i["id"] for i in r.json()["items"]}

        r = await world.client.get("/v1/integrations", headers=bearer("mia", P, "member"))
        assert ids(r) == {by_mo["id"], by_max["id"]}
        assert r.json()["total"] == 2
        r = await world.client.get("/v1/integrations", headers=bearer("mo", P, "member"))
        assert ids(r) == {by_mo["id"]}
        assert r.json()["total"] == 1
        r = await world.client.get(
            f"/v1/integrations/{by_max['id']}", headers=bearer("mo", P, "member")
        )
        assert r.status_code == 404

    async def test_demoted_to_member_loses_sight_of_integrations_others_made(
        self, world: World
    ) -> None:
        await world.platform(P)
        group = await world.group(P)
        await world.member(group, "mia", "manager")
        made = await world.integration(group)
        mia = bearer("mia", P, "member")
        assert (
            await world.client.get(f"/v1/integrations/{made['id']}", headers=mia)
        ).status_code == 200

        await world.member(group, "mia", "member")

        r = await world.client.get(f"/v1/integrations/{made['id']}", headers=mia)
        assert r.status_code == 404
        r = await world.client.patch(f"/v1/groups/{group}", json={"name": "X"}, headers=mia)
        assert r.status_code == 403
