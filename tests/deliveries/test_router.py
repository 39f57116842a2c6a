"""The delivery log, failures of ours, replay, and the cleanup command."""

from __future__ import annotations

import asyncio
import errno
import math
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.blobs import s3 as s3_store
from app.config import Settings
from app.maintenance import cleanup
from tests.auth import OPERATOR, bearer
from tests.inbound.conftest import RATE_LIMITS_IDS, RATE_LIMITS_ON_AND_OFF, Inbox
from tests.inbound.payloads import basic, postmark_attachment, postmark_json


@pytest.fixture(params=RATE_LIMITS_ON_AND_OFF, ids=RATE_LIMITS_IDS)
def rate_limits(request: pytest.FixtureRequest) -> str:
    """Every scenario here runs with the production default rate limits and with none."""
    return str(request.param)


async def _post(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    return await client.post("/inbound/postmark", json=payload, headers=basic())


class TestDeliveryLog:
    async def test_every_outcome_is_logged_with_its_fields(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        assert (await _post(client, postmark_json(inbox.address, subject="One"))).status_code == 200
        refused = postmark_json(
            inbox.address, headers=[{"Name": "Auto-Submitted", "Value": "auto-replied"}]
        )
        assert (await _post(client, refused)).status_code == 403
        r = await client.get(
            f"/v1/integrations/{inbox.integration['id']}/deliveries", headers=bearer("root")
        )
        assert r.status_code == 200
        items = r.json()["items"]
        assert [d["status"] for d in items] == ["rejected", "accepted"]
        assert items[0]["reason"] == "auto_reply"
        accepted = items[1]
        assert accepted["from"] == "alice@example.org"
        assert accepted["subject"] == "One"
        assert accepted["provider"] == "postmark"
        assert accepted["post_id"]
        r = await client.get(
            "/v1/deliveries", params={"status": "rejected"}, headers=bearer("root")
        )
        assert [d["reason"] for d in r.json()["items"]] == ["auto_reply"]
        r = await client.get(f"/v1/deliveries/{accepted['id']}", headers=bearer("root"))
        assert r.json()["id"] == accepted["id"]
        r = await client.get(f"/v1/integrations/{inbox.integration['id']}", headers=bearer("root"))
        assert r.json()["stats"]["accepted"] == 1
        assert r.json()["stats"]["refused"] == 1

    async def test_platform_log_is_admin_only_and_tenant_bound(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        await _post(client, postmark_json(inbox.address))
        r = await client.get("/v1/deliveries", headers=bearer("bob", "p1", "member"))
        assert r.status_code == 403
        await inbox.world.platform("p2")
        r = await client.get("/v1/deliveries", headers=bearer("root", "p2"))
        assert r.json()["items"] == []
        [delivery] = await inbox.deliveries()
        r = await client.get(f"/v1/deliveries/{delivery['id']}", headers=bearer("root", "p2"))
        assert r.status_code == 404


class TestMailToADeletedIntegration:
    async def _deleted_then_mailed(self, client: httpx.AsyncClient, inbox: Inbox) -> httpx.Response:
        assert (await _post(client, postmark_json(inbox.address))).status_code == 200
        await inbox.world.delete_integration(inbox.integration["id"])
        r = await _post(client, postmark_json(inbox.address, subject="Still writing"))
        assert (r.status_code, r.json()["reason"]) == (403, "unknown_recipient")
        return r

    async def test_the_admin_finds_it_with_the_status_and_reason_filter(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        r = await self._deleted_then_mailed(client, inbox)
        [delivery_id] = r.json()["delivery_ids"]
        r = await client.get(
            "/v1/deliveries",
            params={"status": "rejected", "reason": "unknown_recipient"},
            headers=bearer("root"),
        )
        assert r.status_code == 200
        [delivery] = r.json()["items"]
        assert delivery["id"] == delivery_id
        assert delivery["integration_id"] == inbox.integration["id"]
        assert delivery["subject"] == "Still writing"
        assert delivery["post_id"] is None
        r = await client.get(f"/v1/deliveries/{delivery_id}", headers=bearer("root"))
        assert (r.status_code, r.json()["reason"]) == (200, "unknown_recipient")
        assert len(await inbox.posts()) == 1  # the post made before the deletion stays

    async def test_the_deleted_integration_and_its_log_still_answer_404(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        await self._deleted_then_mailed(client, inbox)
        integration = f"/v1/integrations/{inbox.integration['id']}"
        assert (await client.get(integration, headers=bearer("root"))).status_code == 404
        r = await client.get(f"{integration}/deliveries", headers=bearer("root"))
        assert (r.status_code, r.json()["code"]) == (404, "not_found")

    async def test_the_operator_no_longer_sees_it_as_unrouted(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        await self._deleted_then_mailed(client, inbox)
        r = await client.get("/v1/unrouted-deliveries", headers=OPERATOR)
        assert r.json()["items"] == []
        unknown = await _post(client, postmark_json("nobody.x@in.example.com"))
        assert unknown.status_code == 403
        r = await client.get("/v1/unrouted-deliveries", headers=OPERATOR)
        assert [d["id"] for d in r.json()["items"]] == unknown.json()["delivery_ids"]
        assert (
            await client.get("/v1/unrouted-deliveries", headers=bearer("root"))
        ).status_code == 401

    async def test_another_platforms_admin_never_sees_it(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        r = await self._deleted_then_mailed(client, inbox)
        [delivery_id] = r.json()["delivery_ids"]
        await inbox.world.platform("p2")
        other = bearer("root", "p2")
        r = await client.get(
            "/v1/deliveries",
            params={"status": "rejected", "reason": "unknown_recipient"},
            headers=other,
        )
        assert r.json()["items"] == []
        assert (await client.get(f"/v1/deliveries/{delivery_id}", headers=other)).status_code == 404


class TestOurFailures:
    @pytest.mark.blob_stores
    async def test_a_bug_answers_500_records_failed_and_replay_posts_it(
        self, client: httpx.AsyncClient, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import app.inbound.rows as rows

        def broken(html: str) -> str:
            raise RuntimeError("sanitiser bug")

        monkeypatch.setattr(rows, "sanitize_html", broken)
        payload = postmark_json(
            inbox.address,
            html="<p>hi</p>",
            attachments=[postmark_attachment("a.txt", "text/plain", b"kept bytes")],
        )
        r = await _post(client, payload)
        assert r.status_code == 500
        assert r.json()["status"] == "failed"
        assert await inbox.posts() == []
        [delivery] = await inbox.deliveries()
        assert delivery["status"] == "failed"
        assert "sanitiser bug" in delivery["error"]

        monkeypatch.undo()
        r = await client.post(f"/v1/deliveries/{delivery['id']}/replay", headers=bearer("root"))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "accepted"
        [post] = await inbox.posts()
        assert await inbox.download(post["attachments"][0]) == b"kept bytes"
        again = await client.post(f"/v1/deliveries/{delivery['id']}/replay", headers=bearer("root"))
        assert (again.status_code, again.json()["code"]) == (409, "not_replayable")

    @pytest.mark.blob_stores
    async def test_provider_retry_of_a_failed_mail_is_processed_again(
        self, client: httpx.AsyncClient, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import app.inbound.rows as rows

        payload = postmark_json(inbox.address, html="<p>hi</p>", message_id="retry-1")
        monkeypatch.setattr(rows, "sanitize_html", lambda html: 1 / 0)
        assert (await _post(client, payload)).status_code == 500
        monkeypatch.undo()
        r = await _post(client, payload)
        assert (r.status_code, r.json()["status"]) == (200, "accepted")
        assert len(await inbox.posts()) == 1

    async def test_replay_after_the_integration_was_deleted_refuses_it_as_unknown(
        self, client: httpx.AsyncClient, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import app.inbound.rows as rows

        monkeypatch.setattr(rows, "sanitize_html", lambda html: 1 / 0)
        r = await _post(client, postmark_json(inbox.address, html="<p>hi</p>"))
        assert r.status_code == 500
        monkeypatch.undo()
        [failed] = r.json()["delivery_ids"]
        await inbox.world.delete_integration(inbox.integration["id"])
        r = await client.post(f"/v1/deliveries/{failed}/replay", headers=bearer("root"))
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["reason"]) == ("rejected", "unknown_recipient")
        assert await inbox.posts() == []

    async def test_disk_full_answers_503_and_keeps_nothing_half_made(
        self,
        client: httpx.AsyncClient,
        inbox: Inbox,
        monkeypatch: pytest.MonkeyPatch,
        blob_store: str,
    ) -> None:
        from app.blobs.store import LocalBlobStore

        if blob_store != "local":
            pytest.skip(
                "a full local disk (the S3 store's outage: tests/inbound/test_store_outage)"
            )

        def full(self: LocalBlobStore, data: bytes) -> str:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(LocalBlobStore, "_write_bytes", full)
        payload = postmark_json(
            inbox.address, attachments=[postmark_attachment("a.txt", "text/plain", b"x")]
        )
        r = await _post(client, payload)
        assert (r.status_code, r.json()["status"]) == (503, "failed")
        monkeypatch.undo()
        assert await inbox.posts() == []
        assert (await _post(client, payload)).status_code == 200
        assert len(await inbox.posts()) == 1


async def _past_a_whole_second() -> float:
    """Wait until the next whole second (a store may keep modification times in seconds, as
    S3 does): what is stored from now on is newer than the instant returned."""
    boundary = math.floor(time.time()) + 1
    await asyncio.sleep(boundary - time.time() + 0.05)
    return boundary


@pytest.mark.blob_stores
class TestCleanup:
    @pytest.fixture
    def rate_limits(self) -> str:
        return ""  # nothing here counts mail

    async def test_unnamed_old_blobs_go_named_and_young_ones_stay(
        self, client: httpx.AsyncClient, inbox: Inbox, app: FastAPI, settings: Settings
    ) -> None:
        payload = postmark_json(
            inbox.address, attachments=[postmark_attachment("a.txt", "text/plain", b"posted")]
        )
        assert (await _post(client, payload)).status_code == 200
        blobs = app.state.blobs
        orphan = await blobs.put_bytes(b"orphan")
        cutoff = await _past_a_whole_second()
        young = await blobs.put_bytes(b"young orphan")
        # An hour later, everything stored before the cutoff is past the hour's grace period.
        report = await cleanup(settings, grace_seconds=3600, as_of=cutoff + 3600)
        assert (report.blobs_removed, report.blobs_kept) == (1, 1)  # the orphan; the posted file
        assert not await blobs.exists(orphan)
        assert await blobs.exists(young)
        [post] = await inbox.posts()
        assert await inbox.download(post["attachments"][0]) == b"posted"

    async def test_an_old_orphan_stored_again_by_a_mail_in_flight_stays(
        self, app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A mail in flight stores its files before its rows commit; when a file's bytes are an
        old orphan's, storing them again renews it, so the cleanup leaves it for the mail."""
        monkeypatch.setattr(s3_store, "REFRESH_SECONDS", 0)  # renew whatever is there
        blobs = app.state.blobs
        orphan = await blobs.put_bytes(b"an old orphan")
        attached_again = await blobs.put_bytes(b"an old orphan, attached again")
        cutoff = await _past_a_whole_second()
        assert await blobs.put_bytes(b"an old orphan, attached again") == attached_again
        report = await cleanup(settings, grace_seconds=3600, as_of=cutoff + 3600)
        assert report.blobs_removed == 1
        assert not await blobs.exists(orphan)
        assert await blobs.read_all(attached_again) == b"an old orphan, attached again"

    async def test_kept_content_and_tokens_are_purged_after_retention(
        self, client: httpx.AsyncClient, inbox: Inbox, app: FastAPI, settings: Settings
    ) -> None:
        import sqlalchemy as sa

        from app.db.base import utcnow
        from app.models import Delivery, ProviderToken

        refused = postmark_json(
            inbox.address,
            headers=[{"Name": "Auto-Submitted", "Value": "auto-replied"}],
            attachments=[postmark_attachment("r.txt", "text/plain", b"refused bytes")],
        )
        assert (await _post(client, refused)).status_code == 403
        accepted = postmark_json(inbox.address, message_id="kept-token")
        assert (await _post(client, accepted)).status_code == 200
        from datetime import timedelta

        long_ago = utcnow() - timedelta(days=settings.delivery_retention_days + 1)
        async with app.state.sessionmaker.begin() as session:
            await session.execute(sa.update(Delivery).values(received_at=long_ago))
            await session.execute(sa.update(ProviderToken).values(created_at=long_ago))
        report = await cleanup(settings, grace_seconds=0)
        assert report.contents_purged == 1
        assert report.tokens_purged == 2
        assert report.blobs_removed >= 2  # the refused mail's document and its attachment
        [post] = await inbox.posts()  # the accepted post and its files are untouched
        assert post["subject"] == "Hello"
        deliveries = await inbox.deliveries()
        assert {d["status"] for d in deliveries} == {"accepted", "rejected"}
