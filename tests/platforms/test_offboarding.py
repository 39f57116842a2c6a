"""Offboarding: `DELETE /v1/platforms/{id}` removes everything of a platform (issue 15, item 7)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.config import DEFAULT_RATE_LIMITS, Settings
from app.db.base import Base, utcnow
from app.maintenance import cleanup
from app.models import Delivery, PlatformDeletion
from app.platforms import offboarding
from tests.auth import OPERATOR, bearer
from tests.conftest import make_settings
from tests.factories import World
from tests.inbound.payloads import (
    INBOUND_PASSWORD,
    INBOUND_USER,
    MAILGUN_KEY,
    basic,
    mailgun_form,
    postmark_attachment,
    postmark_json,
)

GONE, KEPT = "offboarded-acme", "staying-corp"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, blob_store: str) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "blobs",
        store=blob_store,
        inbound_username=INBOUND_USER,
        inbound_password=INBOUND_PASSWORD,
        mailgun_signing_key=MAILGUN_KEY,
        rate_limits=DEFAULT_RATE_LIMITS,
    )


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offboarding, "BATCH", 2)  # every step takes several batches
    monkeypatch.setattr(offboarding, "BLOB_GRACE_SECONDS", 0)  # no mail in flight here


async def postmark(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    return await client.post("/inbound/postmark", json=payload, headers=basic())


async def all_rows(app: FastAPI) -> dict[str, list[dict[str, Any]]]:
    async with app.state.engine.connect() as conn:
        return {
            table.name: [dict(row._mapping) for row in await conn.execute(sa.select(table))]
            for table in Base.metadata.sorted_tables
        }


async def all_blobs(app: FastAPI) -> set[str]:
    return {key async for key in app.state.blobs.keys_modified_before(time.time() + 3600)}


class Tenant:
    """A platform with two groups, members, integrations (one rotated), posts with files, a
    refused mail with its content kept, a Mailgun token and rate counters."""

    def __init__(self, client: httpx.AsyncClient, world: World, platform_id: str) -> None:
        self.client, self.world, self.id = client, world, platform_id
        self.addresses: list[str] = []
        self.ids: set[str] = {platform_id}

    async def build(self, shared: bytes, own: bytes) -> Tenant:
        admin = bearer("root", self.id)
        await self.world.platform(self.id)
        for name in ("News", "Ops"):
            group = await self.world.group(self.id, f"{name} {self.id}")
            await self.world.member(group, f"user-of-{self.id}", "member", self.id)
            made = await self.world.integration(group, f"{name} {self.id}", self.id)
            self.ids |= {group, made["id"]}
            self.addresses.append(made["address"])
        r = await self.client.post(
            f"/v1/integrations/{made['id']}/rotate-address", json={}, headers=admin
        )
        self.addresses.append(r.json()["address"])
        for i in range(3):
            files = [
                postmark_attachment("shared.txt", "text/plain", shared),
                postmark_attachment(f"own{i}.txt", "text/plain", own + bytes([i])),
            ]
            r = await postmark(
                client=self.client, payload=postmark_json(self.addresses[0], attachments=files)
            )
            assert r.json()["status"] == "accepted", r.text
        r = await self.client.patch(
            f"/v1/integrations/{made['id']}",
            json={"allowed_senders": ["@nowhere.test"]},
            headers=admin,
        )
        refused = postmark_json(
            self.addresses[1], attachments=[postmark_attachment("kept.bin", "text/plain", own * 2)]
        )
        assert (await postmark(self.client, refused)).json()["reason"] == "sender_not_allowed"
        form = mailgun_form(self.addresses[0], subject="By Mailgun")
        self.ids.add(form["token"])
        assert (await self.client.post("/inbound/mailgun", data=form)).json()[
            "status"
        ] == "accepted"
        self.ids |= set(self.addresses)
        for path in ("/v1/deliveries", f"/v1/groups/{group}/posts"):
            r = await self.client.get(path, params={"limit": 200}, headers=admin)
            for item in r.json()["items"]:
                self.ids.add(item["id"])
                self.ids |= {a["id"] for a in item.get("attachments", [])}
        return self


def leftovers(rows: dict[str, list[dict[str, Any]]], ids: set[str]) -> list[str]:
    found = []
    for table, items in rows.items():
        for row in items:
            for column, value in row.items():
                text = str(value)
                if any(i in text for i in ids):
                    found.append(f"{table}.{column} = {text[:80]}")
    return found


@pytest.mark.blob_stores
class TestDeletePlatform:
    async def test_nothing_of_the_platform_is_left_in_any_table_or_the_blob_store(
        self, client: httpx.AsyncClient, world: World, app: FastAPI
    ) -> None:
        gone = await Tenant(client, world, GONE).build(b"the same newsletter", b"gone-only")
        kept = await Tenant(client, world, KEPT).build(b"the same newsletter", b"kept-only")
        before = await all_rows(app)
        assert leftovers(before, gone.ids)  # the walk finds the platform while it is there
        blobs_before = await all_blobs(app)
        kept_rows = {t: len(leftovers({t: r}, kept.ids)) for t, r in before.items()}

        r = await client.delete(f"/v1/platforms/{GONE}", headers=OPERATOR)

        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/v1/platforms/{GONE}/deletion"
        r = await client.get(r.headers["location"], headers=OPERATOR)
        assert r.status_code == 200
        progress = r.json()
        assert (progress["status"], progress["error"], progress["platform_id"]) == (
            "done",
            None,
            GONE,
        )
        assert progress["removed"]["posts"] == 4
        assert progress["removed"]["integrations"] == 2
        assert progress["removed"]["blobs"] >= 5  # four own files, a kept file, its document

        after = await all_rows(app)
        assert [d["platform_id"] for d in after.pop("platform_deletions")] == [GONE]
        assert leftovers(after, gone.ids) == []
        assert {t: len(leftovers({t: r}, kept.ids)) for t, r in after.items()} == {
            t: n for t, n in kept_rows.items() if t != "platform_deletions"
        }
        blobs_after = await all_blobs(app)
        kept_blobs = {a["sha256"] for row in after["attachments"] for a in [row]} | {
            d["content_sha256"] for d in after["deliveries"] if d["content_sha256"]
        }
        assert kept_blobs <= blobs_after  # the other platform's files, the shared one included
        assert blobs_after <= blobs_before
        gone_blobs = blobs_before - blobs_after
        assert gone_blobs
        assert not gone_blobs & kept_blobs
        assert len(blobs_after) == len(blobs_before) - progress["removed"]["blobs"]
        # The other platform's files still download, the shared one too.
        groups = await client.get("/v1/groups", headers=bearer("root", KEPT))
        downloaded = set()
        for group in groups.json()["items"]:
            posts = await client.get(
                f"/v1/groups/{group['id']}/posts", headers=bearer("root", KEPT)
            )
            for post in posts.json()["items"]:
                for attachment in post["attachments"]:
                    r = await client.get(attachment["url"])
                    assert r.status_code == 200, r.text
                    downloaded.add(r.content)
        assert b"the same newsletter" in downloaded
        assert len(downloaded) == 4  # the shared file and three of its own

        for address in gone.addresses:
            r = await postmark(client, postmark_json(address))
            assert (r.status_code, r.json()["reason"]) == (403, "unknown_recipient")
        r = await client.get("/v1/platform", headers=bearer("root", GONE))
        assert r.status_code == 401
        r = await client.get(f"/v1/platforms/{GONE}", headers=OPERATOR)
        assert r.status_code == 404
        again = await client.delete(f"/v1/platforms/{GONE}", headers=OPERATOR)
        assert (again.status_code, again.json()["status"]) == (202, "done")


class TestDeletePlatformApi:
    async def test_inbound_for_other_platforms_goes_on_meanwhile(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        gone = await Tenant(client, world, GONE).build(b"x", b"y")
        await world.platform(KEPT)
        other = await world.integration(await world.group(KEPT), "Other", KEPT)

        async def mail(i: int) -> httpx.Response:
            await asyncio.sleep(0.001 * i)
            return await postmark(client, postmark_json(other["address"], subject=f"M{i}"))

        deleting, *answers = await asyncio.gather(
            client.delete(f"/v1/platforms/{GONE}", headers=OPERATOR), *(mail(i) for i in range(8))
        )

        assert deleting.status_code == 202
        assert [r.json()["status"] for r in answers] == ["accepted"] * 8
        r = await client.get(f"/v1/platforms/{GONE}/deletion", headers=OPERATOR)
        assert r.json()["status"] == "done"
        assert gone.addresses

    async def test_event_endpoints_stop_naming_the_platform(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform(GONE)
        await world.platform(KEPT)
        url = "http://127.0.0.1:9/events"
        made = {}
        for name, platforms in {"only": [GONE], "both": [GONE, KEPT], "all": []}.items():
            body = {"url": url, "description": name, "platform_ids": platforms}
            r = await client.post("/v1/event-endpoints", json=body, headers=OPERATOR)
            assert r.status_code == 201, r.text
            made[name] = r.json()["id"]

        r = await client.delete(f"/v1/platforms/{GONE}", headers=OPERATOR)
        assert r.status_code == 202

        seen = {}
        for name, endpoint_id in made.items():
            r = await client.get(f"/v1/event-endpoints/{endpoint_id}", headers=OPERATOR)
            seen[name] = {k: r.json()[k] for k in ("platform_ids", "enabled", "disabled_reason")}
        assert seen == {
            # An empty list would mean every platform: disabled instead, and it says why.
            "only": {
                "platform_ids": [],
                "enabled": False,
                "disabled_reason": f"its only platform, {GONE}, was removed",
            },
            "both": {"platform_ids": [KEPT], "enabled": True, "disabled_reason": None},
            "all": {"platform_ids": [], "enabled": True, "disabled_reason": None},
        }

    async def test_mail_is_refused_from_the_moment_it_is_asked_for(
        self, client: httpx.AsyncClient, world: World, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        gone = await Tenant(client, world, GONE).build(b"x", b"y")

        async def later(*args: Any) -> None:
            """The removal has not run yet."""

        monkeypatch.setattr(offboarding, "run", later)
        r = await client.delete(f"/v1/platforms/{GONE}", headers=OPERATOR)
        assert (r.status_code, r.json()["status"]) == (202, "running")

        r = await postmark(client, postmark_json(gone.addresses[0]))
        assert (r.status_code, r.json()["reason"]) == (403, "unknown_recipient")
        # Asked again before its worker is stale: the progress, not a second run.
        r = await client.delete(f"/v1/platforms/{GONE}", headers=OPERATOR)
        assert (r.status_code, r.json()["status"]) == (202, "running")

    async def test_a_row_naming_the_platform_without_its_integration_goes_too(
        self, client: httpx.AsyncClient, world: World, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Posts, attachments and deliveries have no key to the platform: a row that names it
        but hangs on no integration (written while the last batches ran) is deleted by name in
        the last transaction, not left behind."""
        await Tenant(client, world, GONE).build(b"x", b"y")
        unsubscribe = offboarding._unsubscribe

        async def late_delivery(session: Any, platform_id: str) -> None:
            session.add(Delivery(platform_id=platform_id, provider="postmark", status="rejected"))
            await session.flush()
            await unsubscribe(session, platform_id)

        monkeypatch.setattr(offboarding, "_unsubscribe", late_delivery)
        r = await client.delete(f"/v1/platforms/{GONE}", headers=OPERATOR)
        assert r.status_code == 202, r.text
        progress = (await client.get(r.headers["location"], headers=OPERATOR)).json()
        assert (progress["status"], progress["error"]) == ("done", None)
        rows = await all_rows(app)
        for table in ("posts", "attachments", "deliveries"):
            assert [row for row in rows[table] if row["platform_id"] == GONE] == [], table

    async def test_unknown_platform_and_callers_other_than_the_operator(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform(GONE)
        for path in (
            "/v1/platforms/nope",
            "/v1/platforms/nope/deletion",
            f"/v1/platforms/{GONE}/deletion",
        ):
            method = "DELETE" if path == "/v1/platforms/nope" else "GET"
            r = await client.request(method, path, headers=OPERATOR)
            assert (r.status_code, r.json()["code"]) == (404, "not_found"), path
        for headers in ({}, bearer("root", GONE, "admin")):
            r = await client.delete(f"/v1/platforms/{GONE}", headers=headers)
            assert (r.status_code, r.json()["code"]) == (401, "unauthenticated")
        r = await client.delete(f"/v1/platforms/{'x' * 300}", headers=OPERATOR)
        assert r.status_code in (404, 422)
        assert r.headers["content-type"] == "application/problem+json"
        assert (await client.get(f"/v1/platforms/{GONE}", headers=OPERATOR)).status_code == 200

    async def test_the_cleanup_command_forgets_the_record_after_the_retention(
        self, client: httpx.AsyncClient, world: World, app: FastAPI, settings: Settings
    ) -> None:
        await world.platform(GONE)
        assert (await client.delete(f"/v1/platforms/{GONE}", headers=OPERATOR)).status_code == 202
        await cleanup(settings)
        assert (
            await client.get(f"/v1/platforms/{GONE}/deletion", headers=OPERATOR)
        ).status_code == 200

        async with app.state.engine.begin() as conn:
            await conn.execute(
                sa.update(PlatformDeletion).values(finished_at=utcnow() - timedelta(days=31))
            )
        await cleanup(settings)

        r = await client.get(f"/v1/platforms/{GONE}/deletion", headers=OPERATOR)
        assert r.status_code == 404
