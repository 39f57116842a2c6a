"""Events out against real servers: a receiver on loopback verifies every signature; no event
is lost when a worker dies between the commit and the send, and several server processes
dispatching at once send each event once (duplicates, at least once, are counted)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.events.dispatcher import LEASE_MARGIN_SECONDS
from tests.events.receiver import Receiver
from tests.reliability.conftest import Servers, TenantFactory
from tests.reliability.harness import (
    HTTP_TIMEOUT,
    OPERATOR,
    PROVIDERS,
    Database,
    Server,
    Summary,
    Tenant,
    build_mail,
    send,
    send_all,
)

FAILPOINT_APP = "tests.reliability.failpoint:app"
# Every event arrives within one lease and a poll: a worker killed while it was sending a
# message (a restarted worker's dispatcher claims what is due at once, and the test's next mail
# may kill it mid-send) leaves its lease, and the message goes again when the lease ends.
ARRIVAL_SECONDS = (
    Settings.model_fields["events_timeout_seconds"].default
    + LEASE_MARGIN_SECONDS
    + 2 * Settings.model_fields["events_poll_seconds"].default
    + 5
)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    try:
        yield started
    finally:
        await started.stop()


async def subscribe(base_url: str, receiver: Receiver, tenant: Tenant) -> dict[str, Any]:
    """An endpoint for this tenant's post.created events only (other tests' mail goes on)."""
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        r = await client.post(
            f"{base_url}/v1/event-endpoints",
            json={
                "url": receiver.url,
                "event_types": ["post.created"],
                "platform_ids": [tenant.platform_id],
            },
            headers=OPERATOR,
        )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def unsubscribe(base_url: str, endpoint: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        await client.delete(f"{base_url}/v1/event-endpoints/{endpoint['id']}", headers=OPERATOR)


async def account(
    summary: Summary,
    db: Database,
    receiver: Receiver,
    endpoint: dict[str, Any],
    tenant: Tenant,
) -> tuple[int, int]:
    """Every post of the tenant has its verified post.created (lost: 0); duplicates counted."""
    posts = {p.id for p in await db.posts([tenant.platform_id])}
    await receiver.wait_for(len(posts), "post.created", seconds=ARRIVAL_SECONDS)
    await asyncio.sleep(1.5)  # a late duplicate, if any, arrives too
    assert all(r.verified_with(endpoint["secret"]) for r in receiver.received)
    received = Counter(e["data"]["id"] for e in receiver.events("post.created"))
    lost = len(posts - set(received))
    duplicated = sum(count - 1 for count in received.values())
    assert not set(received) - posts  # no event without its post
    summary.record("events sent, verified", sum(received.values()))
    summary.record("events lost", lost)
    summary.record("events duplicated", duplicated)
    return lost, duplicated


async def test_a_worker_killed_between_commit_and_send_still_delivers(
    server: Server,
    servers: Servers,
    tenant: TenantFactory,
    db: Database,
    summary: Summary,
    receiver: Receiver,
) -> None:
    t = await tenant(integrations=2)
    endpoint = await subscribe(server.base_url, receiver, t)
    crashing = servers.start("events-crash", env=server.env, app=FAILPOINT_APP)
    try:
        mails = [build_mail(p, [t.address], [t.integration_id]) for p in PROVIDERS]
        startups = crashing.startups()
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            for mail in mails:
                attempt = await send(client, crashing.base_url, mail)
                assert attempt.status_code is None, attempt  # committed, then the worker died
        await asyncio.to_thread(crashing.wait_workers, startups + len(mails))
        summary.record("processes killed between an event's commit and its send", len(mails))
        lost, _ = await account(summary, db, receiver, endpoint, t)
        assert lost == 0
    finally:
        await unsubscribe(server.base_url, endpoint)


async def test_two_servers_dispatching_send_each_event_once(
    server: Server,
    servers: Servers,
    tenant: TenantFactory,
    db: Database,
    summary: Summary,
    receiver: Receiver,
) -> None:
    t = await tenant(integrations=6)
    endpoint = await subscribe(server.base_url, receiver, t)
    second = servers.start("events-second", env=server.env)
    try:
        mails = [
            build_mail(PROVIDERS[i % len(PROVIDERS)], [address], [integration_id])
            for i in range(60)
            for address, integration_id in [t.route(i)]
        ]
        await send_all([server.base_url, second.base_url], mails, concurrency=12)
        assert all(m.answered_2xx for m in mails)
        lost, duplicated = await account(summary, db, receiver, endpoint, t)
        assert lost == 0
        # 4 dispatchers (2 servers, 2 workers each) claim with FOR UPDATE SKIP LOCKED and a
        # lease: an event is sent twice only after a lease ran out, which a healthy receiver
        # answering at once never lets happen.
        assert duplicated == 0
        attempts = await db.count(
            "SELECT count(*) FROM event_attempts WHERE endpoint_id = CAST(:id AS uuid)",
            id=endpoint["id"],
        )
        assert attempts == len(mails)
    finally:
        await unsubscribe(server.base_url, endpoint)
