"""The dry run: `POST /v1/integrations/{id}/test` decides a described mail, stores nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.db.base import Base
from app.inbound import decide
from app.integrations import dryrun
from tests.auth import bearer
from tests.factories import World

ROOT = bearer("root", "p1", "admin")
MiB = 1024 * 1024


async def rows(app: FastAPI) -> dict[str, int]:
    async with app.state.engine.connect() as conn:
        return {
            t.name: int((await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar())
            for t in Base.metadata.sorted_tables
        }


class Setup:
    def __init__(self, client: httpx.AsyncClient, world: World) -> None:
        self.client, self.world = client, world
        self.id = ""

    async def make(self, **fields: Any) -> Setup:
        await self.world.platform("p1")
        group = await self.world.group("p1")
        self.id = (await self.world.integration(group, **fields))["id"]
        return self

    async def test(self, **body: Any) -> httpx.Response:
        return await self.test_as(ROOT, body)

    async def test_as(self, auth: dict[str, str], body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(f"/v1/integrations/{self.id}/test", json=body, headers=auth)

    async def outcome(self, **body: Any) -> tuple[str, str | None]:
        r = await self.test(**body)
        assert r.status_code == 200, r.text
        return r.json()["status"], r.json()["reason"]


@pytest.fixture
async def setup(client: httpx.AsyncClient, world: World) -> Setup:
    return Setup(client, world)


class TestDryRun:
    def test_it_calls_the_production_decision(self) -> None:
        assert vars(dryrun)["decide"] is decide.decide

    async def test_an_ordinary_mail_would_be_posted(self, setup: Setup, app: FastAPI) -> None:
        await setup.make()
        before = await rows(app)

        r = await setup.test(**{"from": "Alice <alice@example.org>", "subject": "Hi"})

        assert r.status_code == 200, r.text
        assert r.json() == {
            "status": "accepted",
            "reason": None,
            "omitted_attachments": [],
            "author": {"email": "alice@example.org", "name": "Alice", "verified": False},
        }
        assert await rows(app) == before  # nothing stored

    async def test_each_rule_answers_its_reason(self, setup: Setup, app: FastAPI) -> None:
        await setup.make(allowed_senders=["@example.org"])
        before = await rows(app)
        mail = {"from": "alice@example.org"}

        assert await setup.outcome(**mail) == ("accepted", None)
        assert await setup.outcome(**{"from": "eve@evil.test"}) == (
            "rejected",
            "sender_not_allowed",
        )
        alert = {**mail, "headers": [{"name": "Auto-Submitted", "value": "auto-generated"}]}
        assert await setup.outcome(**alert) == ("rejected", "auto_reply")
        assert await setup.outcome(**mail, envelope_from="") == ("rejected", "auto_reply")
        report = {
            **mail,
            "headers": [{"name": "Content-Type", "value": "multipart/report; report-type=x"}],
        }
        assert await setup.outcome(**report) == ("rejected", "auto_reply")
        big = [{"filename": "big.pdf", "size": 6 * MiB}]
        assert await setup.outcome(**mail, attachments=big) == ("rejected", "attachment_too_large")
        assert await setup.outcome(**{"from": "not an address"}) == (
            "rejected",
            "malformed_message",
        )

        r = await setup.client.patch(
            f"/v1/integrations/{setup.id}",
            json={"oversize_attachments": "drop", "automatic_mail": "accept"},
            headers=ROOT,
        )
        assert r.status_code == 200
        r = await setup.test(**mail, attachments=[*big, {"filename": "small.txt", "size": 10}])
        assert r.json()["status"] == "accepted"
        assert r.json()["omitted_attachments"] == [
            {"filename": "big.pdf", "size": 6 * MiB, "reason": "too_large"}
        ]
        assert await setup.outcome(**alert) == ("accepted", None)

        await setup.client.patch(
            f"/v1/integrations/{setup.id}", json={"enabled": False}, headers=ROOT
        )
        assert await setup.outcome(**mail) == ("rejected", "integration_disabled")
        # The patches changed the integration only.
        assert await rows(app) == before

    async def test_verified_senders_use_the_verdicts_given(self, setup: Setup) -> None:
        await setup.make(allowed_senders=["@example.org"], allowed_senders_verified_only=True)
        mail = {"from": "alice@example.org"}

        assert await setup.outcome(**mail) == ("rejected", "sender_not_allowed")
        r = await setup.test(**mail, spf="pass")
        assert (r.json()["status"], r.json()["author"]["verified"]) == ("accepted", True)
        assert await setup.outcome(**mail, dkim="{@example.org : pass}") == ("accepted", None)
        assert await setup.outcome(**mail, dkim="{@other.test : pass}") == (
            "rejected",
            "sender_not_allowed",
        )

    async def test_a_hidden_or_foreign_integration_is_not_found(
        self, setup: Setup, world: World
    ) -> None:
        await setup.make()
        await world.platform("p2")
        mail = {"from": "alice@example.org"}

        for auth in (bearer("mo", "p1", "member"), bearer("root", "p2", "admin")):
            r = await setup.test_as(auth, mail)
            assert (r.status_code, r.json()["code"]) == (404, "not_found")
        setup.id = str(uuid.uuid4())
        assert (await setup.test(**mail)).status_code == 404

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"from": ""},
            {"from": "a@example.org", "unknown": 1},
            {"from": "a@example.org", "headers": [{"name": "Bad Name", "value": "x"}]},
            {"from": "a@example.org", "headers": [{"name": "X", "value": 1}]},
            {"from": "a@example.org", "headers": {"X": "y"}},
            {"from": "a@example.org", "attachments": [{"filename": "a", "size": -1}]},
            {"from": "a@example.org", "attachments": [{"filename": "a"}]},
            {"from": "a@example.org", "spf": 1},
            {"from": "a@example.org", "subject": "x" * 999},
        ],
    )
    async def test_bad_input_is_a_validation_problem(
        self, setup: Setup, body: dict[str, Any]
    ) -> None:
        await setup.make()

        r = await setup.test(**body)

        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "validation_error"
