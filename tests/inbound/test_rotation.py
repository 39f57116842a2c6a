"""Address rotation: `POST /v1/integrations/{id}/rotate-address` (issue 15, item 1)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.db.engine import create_engine
from app.models import IntegrationAddress
from app.policy import PolicyConfig, PolicyServer
from tests.auth import bearer
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import basic, mailgun_form, mime_message

ROOT = bearer("root", "p1", "admin")


async def rotate(
    client: httpx.AsyncClient, integration_id: str, body: Any = None, auth: dict[str, str] = ROOT
) -> httpx.Response:
    """``body`` None: ``{}`` (the default grace period)."""
    body = {} if body is None else body
    return await client.post(
        f"/v1/integrations/{integration_id}/rotate-address", json=body, headers=auth
    )


async def send_mime(client: httpx.AsyncClient, to: str, subject: str) -> httpx.Response:
    return await client.post(
        "/inbound/mime",
        params={"recipient": to},
        content=mime_message(to, subject=subject),
        headers={**basic(), "Content-Type": "message/rfc822"},
    )


async def send_mailgun(client: httpx.AsyncClient, to: str, subject: str) -> httpx.Response:
    return await client.post("/inbound/mailgun", data=mailgun_form(to, subject=subject))


async def expire(app: FastAPI, address: str) -> None:
    """As if the grace period had passed."""
    async with app.state.engine.begin() as conn:
        await conn.execute(
            sa.update(IntegrationAddress)
            .where(IntegrationAddress.address == address)
            .values(valid_until=datetime.now(UTC) - timedelta(seconds=1))
        )


class TestRotateAddress:
    async def test_gives_a_new_address_and_lists_the_old_one(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        old = inbox.address
        before = (await client.get("/v1/platform", headers=ROOT)).json()["usage"]

        r = await rotate(client, inbox.integration["id"])

        assert r.status_code == 200, r.text
        body = r.json()
        assert body["address"] != old
        assert body["address"].startswith("newsletter.")
        assert body["display_address"] == f'"Newsletter" <{body["address"]}>'
        [previous] = body["previous_addresses"]
        assert previous["address"] == old
        until = datetime.fromisoformat(previous["valid_until"].replace("Z", "+00:00"))
        assert abs(until - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=1)
        got = await client.get(f"/v1/integrations/{inbox.integration['id']}", headers=ROOT)
        assert got.json() == body
        assert (await client.get("/v1/platform", headers=ROOT)).json()["usage"] == before

        r = await rotate(client, inbox.integration["id"], {"grace_days": 0})
        assert [p["address"] for p in r.json()["previous_addresses"]] == [body["address"], old]

    async def test_without_a_body_the_grace_period_is_seven_days(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        r = await client.post(
            f"/v1/integrations/{inbox.integration['id']}/rotate-address", headers=ROOT
        )

        assert r.status_code == 200, r.text
        [previous] = r.json()["previous_addresses"]
        assert previous["address"] == inbox.address
        until = datetime.fromisoformat(previous["valid_until"].replace("Z", "+00:00"))
        assert abs(until - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=1)

    @pytest.mark.parametrize("send", [send_mime, send_mailgun], ids=["mime", "mailgun"])
    async def test_the_old_address_routes_until_valid_until_then_is_unknown(
        self, client: httpx.AsyncClient, inbox: Inbox, app: FastAPI, send: Any
    ) -> None:
        old = inbox.address
        new = (await rotate(client, inbox.integration["id"], {"grace_days": 3})).json()["address"]

        r = await send(client, old, "To the old one")
        assert r.json()["status"] == "accepted", r.text
        r = await send(client, new, "To the new one")
        assert r.json()["status"] == "accepted", r.text
        await expire(app, old)
        r = await send(client, old, "Too late")
        assert r.json()["reason"] == "unknown_recipient", r.text

        assert sorted(p["subject"] for p in await inbox.posts()) == [
            "To the new one",
            "To the old one",
        ]
        log = {d["subject"]: d for d in await inbox.deliveries()}
        assert log["To the old one"]["address"] == old
        assert log["To the new one"]["address"] == new
        late = log["Too late"]  # logged for the platform, like a deleted integration's mail
        assert (late["status"], late["reason"], late["address"]) == (
            "rejected",
            "unknown_recipient",
            old,
        )
        assert late["integration_id"] == inbox.integration["id"]

    async def test_no_grace_refuses_the_old_address_at_once(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        old = inbox.address
        assert (await rotate(client, inbox.integration["id"], {"grace_days": 0})).status_code == 200

        r = await send_mime(client, old, "Hello")

        assert (r.status_code, r.json()["reason"]) == (422, "unknown_recipient")
        assert await inbox.posts() == []

    async def test_a_deleted_integrations_old_address_is_unknown(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        old = inbox.address
        await rotate(client, inbox.integration["id"])
        await inbox.world.delete_integration(inbox.integration["id"])

        r = await send_mime(client, old, "Hello")

        assert r.json()["reason"] == "unknown_recipient"

    async def test_the_policy_server_accepts_the_old_address_while_it_routes(
        self, client: httpx.AsyncClient, inbox: Inbox, app: FastAPI, database_url: str
    ) -> None:
        old = inbox.address
        await rotate(client, inbox.integration["id"])
        server = PolicyServer(create_engine(database_url), PolicyConfig("in.example.com"))
        ask = {"request": "smtpd_access_policy", "recipient": old}
        try:
            assert await server.decide(ask) == "DUNNO"
            await expire(app, old)
            assert (await server.decide(ask)).startswith("550 5.1.1")
        finally:
            await server.close()

    @pytest.mark.parametrize(
        "body",
        [{"grace_days": 31}, {"grace_days": -1}, {"grace_days": "x"}, {"other": 1}, [], "7"],
    )
    async def test_bad_input_is_a_validation_problem(
        self, client: httpx.AsyncClient, inbox: Inbox, body: Any
    ) -> None:
        r = await rotate(client, inbox.integration["id"], body)

        assert r.status_code == 422, r.text
        assert r.json()["code"] == "validation_error"
        got = await client.get(f"/v1/integrations/{inbox.integration['id']}", headers=ROOT)
        assert got.json()["address"] == inbox.address

    async def test_a_foreign_or_unknown_integration_is_not_found(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        await inbox.world.platform("p2")
        for integration_id, auth in (
            (inbox.integration["id"], bearer("root", "p2", "admin")),
            (str(uuid.uuid4()), ROOT),
        ):
            r = await rotate(client, integration_id, {"grace_days": 1}, auth)
            assert (r.status_code, r.json()["code"]) == (404, "not_found")
