"""Integrations (/v1/integrations): creation, addresses, titles, lists, plan caps."""

from __future__ import annotations

import base64
import json
import re
import uuid
from email.headerregistry import AddressHeader, HeaderRegistry
from typing import Any

import httpx
import pytest

from tests.auth import OPERATOR, bearer
from tests.factories import World

ROOT = bearer("root", "p1", "admin")
ADDRESS = re.compile(
    r"^(?P<slug>[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?)\.(?P<token>[a-z0-9]{26})@in\.example\.com$"
)
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def create(
    client: httpx.AsyncClient, headers: dict[str, str] = ROOT, **body: Any
) -> httpx.Response:
    return await client.post("/v1/integrations", json=body, headers=headers)


async def usage(client: httpx.AsyncClient, platform_id: str = "p1") -> dict[str, Any]:
    r = await client.get("/v1/platform", headers=bearer("root", platform_id))
    result: dict[str, Any] = r.json()["usage"]["integrations"]
    return result


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["title"]
    return body


def error_locs(r: httpx.Response) -> list[list[Any]]:
    return [e["loc"] for e in problem(r, 422, "validation_error")["errors"]]


class TestCreateIntegration:
    async def test_in_an_existing_group(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        group = await world.group("p1")

        r = await create(client, bearer("ada", "p1", "admin"), title="Weekly news", group_id=group)

        assert r.status_code == 201, r.text
        body = r.json()
        uuid.UUID(body["id"])
        assert {
            k: v
            for k, v in body.items()
            if k not in ("id", "address", "display_address", "created_at")
        } == {
            "service": "email",
            "title": "Weekly news",
            "group_id": group,
            "enabled": True,
            "created_by": "ada",
            "allowed_senders": [],
            "oversize_attachments": "reject",
            "automatic_mail": "refuse",
            "allowed_senders_verified_only": False,
            "previous_addresses": [],
            "stats": {"accepted": 0, "refused": 0, "last_received_at": None},
        }
        assert ADDRESS.match(body["address"])
        assert body["display_address"] == f'"Weekly news" <{body["address"]}>'
        assert RFC3339_UTC.match(body["created_at"])
        assert (await client.get(f"/v1/integrations/{body['id']}", headers=ROOT)).json() == body

    async def test_with_options(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        group = await world.group("p1")

        r = await create(
            client,
            title="T",
            group_id=group,
            service="email",
            oversize_attachments="drop",
            allowed_senders=["News@Example.com", "@lists.example.org"],
        )

        assert r.status_code == 201, r.text
        assert r.json()["oversize_attachments"] == "drop"
        assert r.json()["allowed_senders"] == ["news@example.com", "@lists.example.org"]

    async def test_with_a_new_group_that_its_creator_manages(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", members_can_add_integrations=True)
        mo = bearer("mo", "p1", "member")

        r = await create(client, mo, title="Press", new_group={"name": " Press reviews "})

        assert r.status_code == 201, r.text
        group = r.json()["group_id"]
        got = (await client.get(f"/v1/groups/{group}", headers=mo)).json()
        assert (got["name"], got["created_by"]) == ("Press reviews", "mo")
        members = (await client.get(f"/v1/groups/{group}/members", headers=mo)).json()["items"]
        assert [(m["user_id"], m["role"]) for m in members] == [("mo", "manager")]
        r = await client.patch(f"/v1/groups/{group}", json={"description": "Ours"}, headers=mo)
        assert r.status_code == 200

    async def test_invalid_bodies_are_refused(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        cases: dict[str, tuple[dict[str, Any], list[str]]] = {
            "neither group": ({"title": "T"}, ["body"]),
            "both": ({"title": "T", "group_id": group, "new_group": {"name": "N"}}, ["body"]),
            "both null": ({"title": "T", "group_id": None, "new_group": None}, ["body"]),
            "blank new group name": (
                {"title": "T", "new_group": {"name": " "}},
                ["body", "new_group", "name"],
            ),
            "new group without name": (
                {"title": "T", "new_group": {}},
                ["body", "new_group", "name"],
            ),
            "malformed group id": ({"title": "T", "group_id": "nope"}, ["body", "group_id"]),
            "no title": ({"group_id": group}, ["body", "title"]),
            "unknown service": (
                {"title": "T", "group_id": group, "service": "sms"},
                ["body", "service"],
            ),
            "unknown oversize policy": (
                {"title": "T", "group_id": group, "oversize_attachments": "keep"},
                ["body", "oversize_attachments"],
            ),
        }

        for case, (body, loc) in cases.items():
            with subtests.test(case):
                r = await client.post("/v1/integrations", json=body, headers=ROOT)
                assert loc in error_locs(r)

        assert await usage(client) == {"count": 0, "limit": None}
        assert len((await client.get("/v1/groups", headers=ROOT)).json()["items"]) == 1

    async def test_an_unknown_group_is_not_found(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")

        r = await create(client, title="T", group_id=str(uuid.uuid4()))

        problem(r, 404, "not_found")

    async def test_a_deleted_group_is_not_found(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        await client.delete(f"/v1/groups/{group}", headers=ROOT)

        r = await create(client, title="T", group_id=group)

        problem(r, 404, "not_found")
        assert (await usage(client))["count"] == 0


SLUGS = {
    "Newsletter": "newsletter",
    "Le Journal été": "le-journal-ete",
    "  Hello,   World!! ": "hello-world",
    "Ärger & Ölpreise 2024": "arger-olpreise-2024",
    "ﬁnance": "finance",
    "日本語ニュース": "mail",
    "!!!": "mail",
    "a" * 40: "a" * 32,
    "x" * 31 + " yz": "x" * 31,
    "--Dashes--": "dashes",
}


class TestAddress:
    async def test_is_a_slug_of_the_title_a_dot_and_a_random_token(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")

        for title, slug in SLUGS.items():
            with subtests.test(title):
                made = await world.integration(group, title)
                match = ADDRESS.match(made["address"])
                assert match, made["address"]
                assert match["slug"] == slug

    async def test_is_unique_and_random_even_for_the_same_title(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")

        addresses = [(await world.integration(group, "Same"))["address"] for _ in range(12)]

        assert len(set(addresses)) == 12
        tokens = [a.split(".", 1)[1].split("@")[0] for a in addresses]
        assert len({t[:8] for t in tokens}) == 12

    async def test_is_kept_when_the_title_changes(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(group, "Before")

        r = await client.patch(
            f"/v1/integrations/{made['id']}", json={"title": "After"}, headers=ROOT
        )

        assert r.status_code == 200
        assert r.json()["address"] == made["address"]
        assert r.json()["title"] == "After"
        assert r.json()["display_address"] == f'"After" <{made["address"]}>'
        assert (await client.get(f"/v1/integrations/{made['id']}", headers=ROOT)).json()[
            "address"
        ] == made["address"]


DISPLAY_TITLES = {
    "quotes": 'Le "Journal"',
    "comma": "Smith, John",
    "backslashes": "back\\slash\\",
    "escaped quote lookalike": '\\"',
    "latin": "Été à Zürich",
    "cjk": "日本語 ニュース",
    "emoji": "Post 📬",
    "specials": "a <b@c.d>; e: (f) [g]",
    "inner spaces": "two  spaces",
    "encoded-word lookalike": "=?utf-8?q?hidden?=",
    "encoded word inside": "x =?utf-8?b?aGk=?= y",
}


def parse_mailbox(value: str) -> tuple[str, str]:
    header = HeaderRegistry()("To", value)
    assert isinstance(header, AddressHeader)
    (address,) = header.addresses
    return address.display_name, address.addr_spec


class TestDisplayAddress:
    async def test_round_trips_through_a_mail_header(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")

        for case, title in DISPLAY_TITLES.items():
            with subtests.test(case):
                made = await world.integration(group, title)
                assert made["title"] == title
                assert parse_mailbox(made["display_address"]) == (title, made["address"])

    async def test_round_trips_after_a_title_change(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(group)

        for case, title in DISPLAY_TITLES.items():
            with subtests.test(case):
                r = await client.patch(
                    f"/v1/integrations/{made['id']}", json={"title": title}, headers=ROOT
                )
                assert parse_mailbox(r.json()["display_address"]) == (title, made["address"])


BAD_TITLES = {
    "empty": "",
    "blank": "   ",
    "unicode blank": "\u00a0\u3000",
    "header injection": "News\r\nBcc: victim@example.com",
    "trailing line feed": "News\n",
    "leading carriage return": "\rNews",
    "tab": "Tab\there",
    "nul": "nul\x00",
    "del": "del\x7f",
    "c1 control": "next line\x85",
    "line separator": "line\u2028separator",
    "101 characters": "x" * 101,
}


class TestTitle:
    async def test_invalid_titles_are_refused_on_create(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")

        for case, title in BAD_TITLES.items():
            with subtests.test(case):
                r = await create(client, title=title, group_id=group)
                assert error_locs(r) == [["body", "title"]]

        assert (await usage(client))["count"] == 0

    async def test_invalid_titles_are_refused_on_change(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(group, "Kept")

        for case, title in BAD_TITLES.items():
            with subtests.test(case):
                r = await client.patch(
                    f"/v1/integrations/{made['id']}", json={"title": title}, headers=ROOT
                )
                assert error_locs(r) == [["body", "title"]]

        r = await client.get(f"/v1/integrations/{made['id']}", headers=ROOT)
        assert r.json()["title"] == "Kept"

    async def test_titles_are_trimmed_to_1_to_100_characters(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        cases = {
            "100 characters": ("x" * 100, "x" * 100),
            "100 after trimming": ("  " + "y" * 100 + "  ", "y" * 100),
            "100 composed characters": ("e\u0301" * 100, "é" * 100),
            "one character": ("A", "A"),
        }

        for case, (given, stored) in cases.items():
            with subtests.test(case):
                r = await create(client, title=given, group_id=group)
                assert r.status_code == 201, r.text
                assert r.json()["title"] == stored


class TestUpdateIntegration:
    async def test_disable_and_enable(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(group)

        r = await client.patch(
            f"/v1/integrations/{made['id']}", json={"enabled": False}, headers=ROOT
        )

        assert r.status_code == 200
        assert r.json()["enabled"] is False
        assert (await client.get(f"/v1/integrations/{made['id']}", headers=ROOT)).json()[
            "enabled"
        ] is False
        r = await client.patch(
            f"/v1/integrations/{made['id']}", json={"enabled": True}, headers=ROOT
        )
        assert r.json()["enabled"] is True

    async def test_fields_left_out_are_kept(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(
            group, "Kept", allowed_senders=["a@example.com"], oversize_attachments="drop"
        )

        r = await client.patch(
            f"/v1/integrations/{made['id']}", json={"enabled": False}, headers=ROOT
        )

        assert {k: v for k, v in r.json().items() if k != "enabled"} == {
            k: v for k, v in made.items() if k != "enabled"
        }

    async def test_oversize_policy_changes(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(group)

        r = await client.patch(
            f"/v1/integrations/{made['id']}", json={"oversize_attachments": "drop"}, headers=ROOT
        )

        assert r.json()["oversize_attachments"] == "drop"

    async def test_null_is_refused(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(group)

        for field in ("title", "enabled", "allowed_senders", "oversize_attachments"):
            with subtests.test(field):
                r = await client.patch(
                    f"/v1/integrations/{made['id']}", json={field: None}, headers=ROOT
                )
                assert error_locs(r) == [["body", field]]

        assert (await client.get(f"/v1/integrations/{made['id']}", headers=ROOT)).json() == made

    async def test_an_unknown_integration_is_not_found(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")

        r = await client.patch(
            f"/v1/integrations/{uuid.uuid4()}", json={"enabled": False}, headers=ROOT
        )

        problem(r, 404, "not_found")


class TestAllowedSenders:
    async def test_are_normalised_and_deduplicated(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(group)

        r = await client.patch(
            f"/v1/integrations/{made['id']}",
            json={
                "allowed_senders": [
                    " Alice@Example.COM ",
                    "@Example.org",
                    "alice@example.com",
                    "o'brien+news@mail.example.co.uk",
                ]
            },
            headers=ROOT,
        )

        assert r.status_code == 200, r.text
        assert r.json()["allowed_senders"] == [
            "alice@example.com",
            "@example.org",
            "o'brien+news@mail.example.co.uk",
        ]

    async def test_an_empty_list_allows_everyone_again(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(group, allowed_senders=["@example.com"])

        r = await client.patch(
            f"/v1/integrations/{made['id']}", json={"allowed_senders": []}, headers=ROOT
        )

        assert r.json()["allowed_senders"] == []

    async def test_invalid_entries_are_refused_by_position(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        cases = {
            "bare domain": "example.com",
            "no at": "alice",
            "only at": "@",
            "single-label domain": "alice@localhost",
            "space in domain": "alice@exa mple.com",
            "space in local part": "al ice@example.com",
            "display name": "Alice <alice@example.com>",
            "double at": "alice@@example.com",
            "empty label": "@sub..example.com",
            "leading hyphen": "@-example.com",
            "hyphen starting the last label": "@example.-com",
            "hyphen ending the domain": "@example.com-",
            "control character": "a\x01b@example.com",
            "c1 control character": "a\x85b@example.com",
            "two ats": "a@b@example.com",
            "local part too long": "x" * 65 + "@example.com",
            "empty": "",
        }

        for case, sender in cases.items():
            with subtests.test(case):
                r = await create(
                    client, title="T", group_id=group, allowed_senders=["ok@example.com", sender]
                )
                assert ["body", "allowed_senders", 1] in error_locs(r)

        assert (await usage(client))["count"] == 0

    async def test_more_than_200_entries_are_refused(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(group)

        r = await client.patch(
            f"/v1/integrations/{made['id']}",
            json={"allowed_senders": [f"u{i}@example.com" for i in range(201)]},
            headers=ROOT,
        )

        assert ["body", "allowed_senders"] in error_locs(r)


class TestGetIntegration:
    async def test_an_unknown_integration_is_not_found(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")

        problem(
            await client.get(f"/v1/integrations/{uuid.uuid4()}", headers=ROOT), 404, "not_found"
        )

    async def test_a_malformed_id_is_refused(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")

        r = await client.get("/v1/integrations/not-a-uuid", headers=ROOT)

        assert ["path", "integration_id"] in error_locs(r)


class TestDeleteIntegration:
    async def test_answers_204_then_the_integration_is_gone(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")
        group = await world.group("p1")
        gone = await world.integration(group, "Gone")
        kept = await world.integration(group, "Kept")

        r = await client.delete(f"/v1/integrations/{gone['id']}", headers=ROOT)

        assert r.status_code == 204
        assert r.content == b""
        for method, body in (("GET", None), ("PATCH", {"title": "Back"}), ("DELETE", None)):
            r = await client.request(
                method, f"/v1/integrations/{gone['id']}", json=body, headers=ROOT
            )
            problem(r, 404, "not_found")
        listed = (await client.get("/v1/integrations", headers=ROOT)).json()
        assert [i["id"] for i in listed["items"]] == [kept["id"]]
        assert listed["total"] == 1
        assert (await usage(client))["count"] == 1


class TestListIntegrations:
    async def test_lists_newest_first_with_the_total(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = [await world.integration(group, f"I{i}") for i in range(3)]

        r = await client.get("/v1/integrations", headers=ROOT)

        assert r.status_code == 200
        assert r.json()["items"] == made[::-1]
        assert r.json()["total"] == 3
        assert r.json()["next_cursor"] is None

    async def test_filters_by_group(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        one = await world.group("p1", "One")
        two = await world.group("p1", "Two")
        await world.integration(one)
        in_two = [await world.integration(two) for _ in range(2)]

        r = await client.get("/v1/integrations", params={"group_id": two}, headers=ROOT)

        assert {i["id"] for i in r.json()["items"]} == {i["id"] for i in in_two}
        assert r.json()["total"] == 2

    async def test_a_member_filtering_by_their_group_sees_only_their_own(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", members_can_add_integrations=True)
        group = await world.group("p1")
        await world.member(group, "mo")
        await world.integration(group)
        mine = await world.integration(group, user_id="mo", role="member")

        r = await client.get(
            "/v1/integrations", params={"group_id": group}, headers=bearer("mo", "p1", "member")
        )

        assert [i["id"] for i in r.json()["items"]] == [mine["id"]]
        assert r.json()["total"] == 1

    async def test_a_group_the_caller_cannot_see_is_not_found(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        await world.integration(group)

        for group_id in (group, str(uuid.uuid4())):
            r = await client.get(
                "/v1/integrations",
                params={"group_id": group_id},
                headers=bearer("mo", "p1", "member"),
            )
            problem(r, 404, "not_found")
        r = await client.get(
            "/v1/integrations", params={"group_id": str(uuid.uuid4())}, headers=ROOT
        )
        problem(r, 404, "not_found")

    async def test_filters_by_service(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        await world.integration(group)

        r = await client.get("/v1/integrations", params={"service": "email"}, headers=ROOT)
        assert r.json()["total"] == 1
        r = await client.get("/v1/integrations", params={"service": "sms"}, headers=ROOT)
        assert ["query", "service"] in error_locs(r)

    async def test_the_total_of_an_admin_is_the_platform_wide_count(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        for name in ("A", "B", "C"):
            group = await world.group("p1", name)
            await world.integration(group)

        r = await client.get("/v1/integrations", params={"limit": 1}, headers=ROOT)

        assert len(r.json()["items"]) == 1
        assert r.json()["total"] == 3 == (await usage(client))["count"]


def _cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


class TestPagination:
    async def test_default_page_is_50(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        for i in range(51):
            await world.integration(group, f"I{i}")

        first = (await client.get("/v1/integrations", headers=ROOT)).json()
        rest = (
            await client.get(
                "/v1/integrations", params={"cursor": first["next_cursor"]}, headers=ROOT
            )
        ).json()

        assert len(first["items"]) == 50
        assert first["total"] == rest["total"] == 51
        assert [i["title"] for i in rest["items"]] == ["I0"]
        assert rest["next_cursor"] is None

    async def test_a_limit_outside_1_to_200_is_refused(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")

        for limit in ("0", "201", "-1", "many"):
            with subtests.test(limit):
                r = await client.get("/v1/integrations", params={"limit": limit}, headers=ROOT)
                assert ["query", "limit"] in error_locs(r)

        r = await client.get("/v1/integrations", params={"limit": 200}, headers=ROOT)
        assert r.status_code == 200

    async def test_an_invalid_cursor_is_refused(
        self, client: httpx.AsyncClient, world: World, subtests: pytest.Subtests
    ) -> None:
        await world.platform("p1")
        cases = {
            "garbage": "not a cursor",
            "not base64": "%%%",
            "object": _cursor({"a": 1}),
            "naive time": _cursor(["2024-01-01T00:00:00", str(uuid.uuid4())]),
            "bad key": _cursor(["2024-01-01T00:00:00+00:00", "not-a-uuid"]),
            "nulls": _cursor([None, None]),
            "bad time": _cursor(["yesterday", str(uuid.uuid4())]),
            "non-ascii": "ça",
        }

        for case, cursor in cases.items():
            with subtests.test(case):
                r = await client.get("/v1/integrations", params={"cursor": cursor}, headers=ROOT)
                problem(r, 422, "invalid_cursor")

    async def test_walking_the_pages_never_repeats_or_skips(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        one = await world.group("p1", "One")
        two = await world.group("p1", "Two")
        made = [await world.integration(one if i % 3 else two, f"I{i}") for i in range(8)]
        expected = [i["id"] for i in made[::-1]]

        seen: list[str] = []
        params: dict[str, Any] = {"limit": 3}
        total = 8
        while True:
            page = (await client.get("/v1/integrations", params=params, headers=ROOT)).json()
            assert page["total"] == total
            assert len(page["items"]) <= 3
            seen += [i["id"] for i in page["items"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
            if total == 8:  # a newer one arrives while the client pages
                await world.integration(one, "Late")
                total = 9

        assert seen == expected

    async def test_a_filtered_walk_stays_within_the_filter(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        one = await world.group("p1", "One")
        two = await world.group("p1", "Two")
        made = [await world.integration(one if i % 2 else two, f"I{i}") for i in range(6)]

        seen: list[str] = []
        params: dict[str, Any] = {"limit": 2, "group_id": one}
        while True:
            page = (await client.get("/v1/integrations", params=params, headers=ROOT)).json()
            assert page["total"] == 3
            seen += [i["id"] for i in page["items"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]

        assert seen == [i["id"] for i in made[::-1] if i["group_id"] == one]


class TestPlanLimit:
    @pytest.mark.parametrize(("plan", "cap"), [("essentials", 3), ("standard", 10)])
    async def test_the_integration_after_the_cap_is_refused(
        self, client: httpx.AsyncClient, world: World, plan: str, cap: int
    ) -> None:
        await world.platform("p1", plan=plan)
        group = await world.group("p1")
        for i in range(cap):
            await world.integration(group, f"I{i}")

        r = await create(client, title="One too many", group_id=group)

        body = problem(r, 409, "plan_limit_reached")
        assert str(cap) in body["detail"]
        assert await usage(client) == {"count": cap, "limit": cap}
        assert (await client.get("/v1/integrations", headers=ROOT)).json()["total"] == cap

    async def test_a_refused_new_group_is_not_created_either(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")
        group = await world.group("p1")
        for _ in range(3):
            await world.integration(group)

        r = await create(client, title="T", new_group={"name": "Extra"})

        problem(r, 409, "plan_limit_reached")
        names = [g["name"] for g in (await client.get("/v1/groups", headers=ROOT)).json()["items"]]
        assert names == ["General"]

    async def test_a_member_allowed_to_add_is_refused_by_the_cap_too(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials", members_can_add_integrations=True)
        group = await world.group("p1")
        await world.member(group, "mo")
        for _ in range(3):
            await world.integration(group)

        r = await create(client, bearer("mo", "p1", "member"), title="T", group_id=group)

        problem(r, 409, "plan_limit_reached")

    async def test_deleted_integrations_free_a_place(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")
        group = await world.group("p1")
        made = [await world.integration(group) for _ in range(3)]
        await world.delete_integration(made[0]["id"])

        r = await create(client, title="T", group_id=group)

        assert r.status_code == 201, r.text
        assert await usage(client) == {"count": 3, "limit": 3}

    async def test_integrations_deleted_with_their_group_free_places(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")
        doomed = await world.group("p1", "Doomed")
        group = await world.group("p1")
        for _ in range(3):
            await world.integration(doomed)
        await client.delete(f"/v1/groups/{doomed}", headers=ROOT)

        r = await create(client, title="T", group_id=group)

        assert r.status_code == 201, r.text

    async def test_disabled_integrations_still_count(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")
        group = await world.group("p1")
        made = [await world.integration(group) for _ in range(3)]
        r = await client.patch(
            f"/v1/integrations/{made[0]['id']}", json={"enabled": False}, headers=ROOT
        )
        assert r.status_code == 200

        r = await create(client, title="T", group_id=group)

        problem(r, 409, "plan_limit_reached")

    async def test_a_downgrade_below_usage_keeps_existing_ones_and_refuses_new_ones_until_under(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="standard")
        group = await world.group("p1")
        made = [await world.integration(group, f"I{i}") for i in range(5)]

        r = await client.patch("/v1/platforms/p1", json={"plan": "essentials"}, headers=OPERATOR)

        assert r.status_code == 200
        assert await usage(client) == {"count": 5, "limit": 3}
        for integration in made:
            r = await client.patch(
                f"/v1/integrations/{integration['id']}", json={"title": "Still mine"}, headers=ROOT
            )
            assert r.status_code == 200
            assert r.json()["enabled"] is True
        problem(await create(client, title="T", group_id=group), 409, "plan_limit_reached")
        for integration in made[:2]:
            await world.delete_integration(integration["id"])
        problem(await create(client, title="T", group_id=group), 409, "plan_limit_reached")
        await world.delete_integration(made[2]["id"])
        assert (await create(client, title="T", group_id=group)).status_code == 201

    async def test_an_upgrade_lifts_the_cap(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1", plan="essentials")
        group = await world.group("p1")
        for _ in range(3):
            await world.integration(group)

        await client.patch("/v1/platforms/p1", json={"plan": "premium"}, headers=OPERATOR)

        assert (await create(client, title="T", group_id=group)).status_code == 201
        assert await usage(client) == {"count": 4, "limit": None}

    async def test_each_platform_has_its_own_cap(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="essentials")
        await world.platform("p2", plan="essentials")
        full = await world.group("p2")
        for _ in range(3):
            await world.integration(full, platform_id="p2")
        group = await world.group("p1")

        r = await create(client, title="T", group_id=group)

        assert r.status_code == 201, r.text


class TestProblems:
    async def test_an_unknown_path_is_not_found(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")

        problem(await client.get("/v1/integrationz", headers=ROOT), 404, "not_found")
        problem(await client.get("/v1/integrations/", headers=ROOT), 404, "not_found")

    async def test_a_wrong_method_is_not_allowed(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        made = await world.integration(group)

        r = await client.put(f"/v1/integrations/{made['id']}", json={"title": "T"}, headers=ROOT)

        problem(r, 405, "method_not_allowed")
        assert "allow" in r.headers
        assert (await client.get(f"/v1/integrations/{made['id']}", headers=ROOT)).json()[
            "title"
        ] == made["title"]

    async def test_a_body_that_is_not_json_is_a_validation_error(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")

        r = await client.post(
            "/v1/integrations",
            content=b"{not json",
            headers={**ROOT, "Content-Type": "application/json"},
        )

        problem(r, 422, "validation_error")
