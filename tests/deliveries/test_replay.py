"""Replay of refused mail after a rule change (issue 15, item 3): `POST
/v1/deliveries/{id}/replay` on `rejected` deliveries whose content is kept."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.models import Delivery
from tests.auth import bearer
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import basic, postmark_attachment, postmark_json

ROOT = bearer("root")
MiB = 1024 * 1024


async def post(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    return await client.post("/inbound/postmark", json=payload, headers=basic())


async def refused(client: httpx.AsyncClient, payload: dict[str, Any], reason: str) -> str:
    r = await post(client, payload)
    assert (r.status_code, r.json()["reason"]) == (403, reason), r.text
    [delivery_id] = r.json()["delivery_ids"]
    return str(delivery_id)


async def replay(
    client: httpx.AsyncClient, delivery_id: str, auth: dict[str, str] = ROOT
) -> httpx.Response:
    return await client.post(f"/v1/deliveries/{delivery_id}/replay", headers=auth)


async def change(client: httpx.AsyncClient, inbox: Inbox, **fields: Any) -> None:
    r = await client.patch(f"/v1/integrations/{inbox.integration['id']}", json=fields, headers=ROOT)
    assert r.status_code == 200, r.text


class TestReplayRejected:
    async def test_after_widening_the_allow_list_the_mail_is_posted_once(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        await change(client, inbox, allowed_senders=["@example.com"])
        delivery = await refused(
            client, postmark_json(inbox.address, subject="From org"), "sender_not_allowed"
        )

        r = await replay(client, delivery)  # the rule still refuses it
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["reason"]) == ("rejected", "sender_not_allowed")

        await change(client, inbox, allowed_senders=["@example.com", "@example.org"])
        r = await replay(client, delivery)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["id"], body["status"], body["reason"]) == (delivery, "accepted", None)
        [made] = await inbox.posts()
        assert (made["subject"], body["post_id"]) == ("From org", made["id"])
        stats = (
            await client.get(f"/v1/integrations/{inbox.integration['id']}", headers=ROOT)
        ).json()["stats"]
        assert (stats["accepted"], stats["refused"]) == (1, 0)

        again = await replay(client, delivery)
        assert (again.status_code, again.json()["code"]) == (409, "not_replayable")
        assert len(await inbox.posts()) == 1

    @pytest.mark.blob_stores
    async def test_switching_to_drop_posts_it_without_the_large_file(
        self, client: httpx.AsyncClient, inbox: Inbox, app: FastAPI
    ) -> None:
        app.state.settings.max_attachment_bytes = 10
        payload = postmark_json(
            inbox.address,
            attachments=[
                postmark_attachment("big.bin", "application/octet-stream", b"x" * 11),
                postmark_attachment("small.txt", "text/plain", b"small"),
            ],
        )
        delivery = await refused(client, payload, "attachment_too_large")

        await change(client, inbox, oversize_attachments="drop")
        r = await replay(client, delivery)

        assert (r.status_code, r.json()["status"]) == (200, "accepted"), r.text
        [made] = await inbox.posts()
        assert [a["filename"] for a in made["attachments"]] == ["small.txt"]
        assert await inbox.download(made["attachments"][0]) == b"small"
        assert made["omitted_attachments"] == [
            {"filename": "big.bin", "size": 11, "reason": "too_large"}
        ]

    async def test_enabled_again_or_accepting_automatic_mail(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        await change(client, inbox, enabled=False)
        disabled = await refused(
            client, postmark_json(inbox.address, subject="While off"), "integration_disabled"
        )
        await change(client, inbox, enabled=True)
        alert = postmark_json(
            inbox.address,
            subject="Alert",
            headers=[{"Name": "Auto-Submitted", "Value": "auto-generated"}],
        )
        automatic = await refused(client, alert, "auto_reply")
        await change(client, inbox, automatic_mail="accept")

        for delivery in (disabled, automatic):
            r = await replay(client, delivery)
            assert (r.status_code, r.json()["status"]) == (200, "accepted"), r.text
        assert sorted(p["subject"] for p in await inbox.posts()) == ["Alert", "While off"]

    @pytest.mark.concurrency
    async def test_concurrent_replays_post_once(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        await change(client, inbox, enabled=False)
        delivery = await refused(client, postmark_json(inbox.address), "integration_disabled")
        await change(client, inbox, enabled=True)

        answers = await asyncio.gather(*(replay(client, delivery) for _ in range(6)))

        ok = [r.json() for r in answers if r.status_code == 200]
        refused_again = [r.json()["code"] for r in answers if r.status_code != 200]
        assert ok, [r.text for r in answers]
        assert set(refused_again) <= {"not_replayable"}
        assert {(d["status"], d["post_id"]) for d in ok} == {("accepted", ok[0]["post_id"])}
        [made] = await inbox.posts()
        log = {d["id"]: d for d in await inbox.deliveries()}
        assert (log[delivery]["status"], log[delivery]["post_id"]) == ("accepted", made["id"])
        assert ok[0]["post_id"] == made["id"]

    async def test_purged_content_answers_content_expired(
        self, client: httpx.AsyncClient, inbox: Inbox, app: FastAPI
    ) -> None:
        await change(client, inbox, enabled=False)
        purged = await refused(client, postmark_json(inbox.address), "integration_disabled")
        gone = await refused(client, postmark_json(inbox.address), "integration_disabled")
        await change(client, inbox, enabled=True)
        async with app.state.engine.begin() as conn:
            await conn.execute(
                sa.update(Delivery)
                .where(Delivery.id == uuid.UUID(purged))
                .values(content_sha256=None)
            )
            sha = (
                await conn.execute(
                    sa.select(Delivery.content_sha256).where(Delivery.id == uuid.UUID(gone))
                )
            ).scalar_one()
        await app.state.blobs.delete(sha)

        for delivery in (purged, gone):
            r = await replay(client, delivery)
            assert r.status_code == 409, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "content_expired"
        assert await inbox.posts() == []

    async def test_refusals_with_nothing_to_decide_again_are_not_replayable(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        unknown = await refused(
            client, postmark_json("nobody.x@in.example.com"), "unknown_recipient"
        )
        deleted_to = inbox.address
        await inbox.world.delete_integration(inbox.integration["id"])
        to_deleted = await refused(client, postmark_json(deleted_to), "unknown_recipient")
        r = await client.post(
            "/inbound/postmark",
            content=b'{"OriginalRecipient": "' + deleted_to.encode() + b'", "From": 1}',
            headers={**basic(), "Content-Type": "application/json"},
        )
        [malformed] = r.json()["delivery_ids"]

        for delivery in (to_deleted, malformed):
            r = await replay(client, delivery)
            assert (r.status_code, r.json()["code"]) == (409, "not_replayable"), r.text
        # Unrouted mail belongs to no platform: no admin sees it.
        assert (await replay(client, unknown)).status_code == 404

    async def test_only_admins_replay(self, client: httpx.AsyncClient, inbox: Inbox) -> None:
        await change(client, inbox, enabled=False)
        delivery = await refused(client, postmark_json(inbox.address), "integration_disabled")
        await inbox.world.platform("p2")

        assert (await replay(client, delivery, bearer("root", "p2"))).status_code == 404
        r = await replay(client, delivery, bearer("mo", "p1", "member"))
        assert r.status_code == 404
