"""Load and races across two separate server processes (2 workers each) on one database.

Plan caps under 50 concurrent creates, 200 concurrent identical deliveries, one mail to two
integrations delivered in parallel, and a per-integration rate limit that holds across processes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import Servers, TenantFactory
from tests.reliability.harness import (
    HTTP_TIMEOUT,
    RATE_LIMITED_CODE,
    Cluster,
    Database,
    Mail,
    Server,
    Summary,
    admin_headers,
    build_mail,
    check_invariants,
    create_platform,
    examine,
    payload,
    send,
)

Pair = tuple[Server, Server]
CAPS = {"essentials": 3, "standard": 10}
RATE_COUNT, RATE_SECONDS = 5, 3


def start_pair(servers: Servers, name: str, **overrides: str) -> Pair:
    """Two separate uvicorn processes (2 workers each) on the same database and blob folder."""
    blob_dir = servers.blob_dir(name)
    first = servers.start(f"{name}-a", env=servers.env(blob_dir, **overrides))
    second = servers.start(f"{name}-b", env=servers.env(blob_dir, **overrides))
    return first, second


@pytest.fixture(scope="module")
def pair(cluster: Cluster, workdir: Path) -> Iterator[Pair]:
    """The pair the plan-cap and delivery races run on: rate limits off, and only here.

    These races send one mail to one or two integrations, many times at once; they cannot be
    spread over integrations, since what they test is that many copies of one mail to one
    integration make one post. ``limited_pair`` below runs the same races under the production
    default limits (50 a minute per integration), where copies racing before the first one is
    committed are each counted, so that some answer 429 (docs/decisions.md, "Rate limits and
    racing copies"): the provider retries those, and they still make one post.
    """
    factory = Servers(cluster, workdir)
    try:
        yield start_pair(factory, "race", MAILSLOT_RATE_LIMITS="")
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def limited_pair(cluster: Cluster, workdir: Path) -> Iterator[Pair]:
    """Two processes with the production default rate limits."""
    factory = Servers(cluster, workdir)
    try:
        yield start_pair(factory, "race-limited")
    finally:
        factory.stop_all()


def urls(servers: Sequence[Server]) -> list[str]:
    return [s.base_url for s in servers]


def big_client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=50)
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=limits)


async def concurrently(
    client: httpx.AsyncClient, base_urls: Sequence[str], mails: Sequence[Mail]
) -> None:
    """Every request at once, alternating between the servers."""
    await asyncio.gather(
        *(send(client, base_urls[i % len(base_urls)], m) for i, m in enumerate(mails))
    )


def answers(mails: Sequence[Mail]) -> Counter[str]:
    return Counter(f"{a.status_code} {a.status}" for m in mails for a in m.attempts)


# ---------------------------------------------------------------------------------------------
# plan caps


async def create_many(
    client: httpx.AsyncClient, pair: Pair, admin: dict[str, str], group_id: str, count: int
) -> list[httpx.Response]:
    async def create(index: int) -> httpx.Response:
        return await client.post(
            f"{pair[index % 2].base_url}/v1/integrations",
            json={"title": f"Race {index}", "group_id": group_id},
            headers=admin,
        )

    return list(await asyncio.gather(*(create(i) for i in range(count))))


async def test_plan_cap_holds_under_concurrent_creates_on_two_processes(
    pair: Pair, db: Database, summary: Summary
) -> None:
    rounds = ["essentials"] * 4 + ["standard"]
    async with big_client() as client:
        for plan in rounds:
            cap = CAPS[plan]
            platform_id = await create_platform(client, pair[0].base_url, plan)
            admin = admin_headers(platform_id)
            r = await client.post(
                f"{pair[1].base_url}/v1/groups", json={"name": "C"}, headers=admin
            )
            assert r.status_code == 201, r.text
            group_id = str(r.json()["id"])

            created = await create_many(client, pair, admin, group_id, 50)
            codes = Counter(a.status_code for a in created)
            refusals = {a.json().get("code") for a in created if a.status_code != 201}
            stored = await db.count(
                "SELECT count(*) FROM integrations WHERE platform_id = :p AND deleted_at IS NULL",
                p=platform_id,
            )
            summary.record("plan-cap rounds (50 concurrent creates over 2 processes)", 1)
            summary.record("integrations over a plan cap", max(0, stored - cap))
            assert codes == {201: cap, 409: 50 - cap}, (plan, codes)
            assert refusals == {"plan_limit_reached"}, refusals
            assert stored == cap
            r = await client.get(f"{pair[1].base_url}/v1/platform", headers=admin)
            assert r.json()["usage"]["integrations"] == {"count": cap, "limit": cap}

        # a deleted integration frees exactly one place, however many ask for it at once
        first = next(a.json()["id"] for a in created if a.status_code == 201)
        r = await client.delete(f"{pair[0].base_url}/v1/integrations/{first}", headers=admin)
        assert r.status_code == 204
        again = await create_many(client, pair, admin, group_id, 50)
        summary.record("plan-cap rounds (50 concurrent creates over 2 processes)", 1)
        assert Counter(a.status_code for a in again) == {201: 1, 409: 49}


# ---------------------------------------------------------------------------------------------
# identical deliveries at once


@pytest.mark.parametrize(
    ("provider", "copies"), [("mime", 200), ("mailgun", 100), ("postmark", 100)]
)
async def test_concurrent_identical_deliveries_make_one_post(
    pair: Pair, tenant: TenantFactory, db: Database, summary: Summary, provider: str, copies: int
) -> None:
    await identical_deliveries(pair, tenant, db, summary, provider, copies)


@pytest.mark.parametrize(
    ("provider", "copies"), [("mime", 200), ("mailgun", 100), ("postmark", 100)]
)
async def test_concurrent_identical_deliveries_make_one_post_under_rate_limits(
    limited_pair: Pair,
    tenant: TenantFactory,
    db: Database,
    summary: Summary,
    provider: str,
    copies: int,
) -> None:
    # A provider event's copies are recognised by its claimed token: none is counted. Mail
    # without an event id (raw MIME) is recognised by its content once the first copy is
    # written: copies racing it may be counted (docs/decisions.md).
    await identical_deliveries(
        limited_pair,
        tenant,
        db,
        summary,
        provider,
        copies,
        racing_copies_counted=provider == "mime",
    )


async def identical_deliveries(
    pair: Pair,
    tenant: TenantFactory,
    db: Database,
    summary: Summary,
    provider: str,
    copies: int,
    *,
    racing_copies_counted: bool = False,
) -> None:
    """``racing_copies_counted``: rate limits are on, so copies racing the first one may be
    answered 429 (retried by the provider); every other guarantee is the same."""
    t = await tenant(server=pair[0])
    files = [("same.bin", payload(200 * 1024, f"same-{provider}")), ("n.txt", b"n")]
    original = build_mail(provider, [t.address], [t.integration_id], attachments=files)
    # the very same request bytes each time: what a provider's retry, or a double send, looks like
    copies_ = [original.copy() for _ in range(copies)]
    async with big_client() as client:
        await concurrently(client, urls(pair), copies_)
    seen = answers(copies_)
    accepted = seen.get("200 accepted", 0)
    summary.record("concurrent identical deliveries sent", copies)
    summary.record("answers 500 under load", sum(n for k, n in seen.items() if k.startswith("500")))
    allowed = {"200 accepted", "200 duplicate", "503 failed"}
    if racing_copies_counted:
        allowed.add("429 rate_limited")
    assert set(seen) <= allowed, seen
    found = await examine(db, pair[0].blob_dir, copies_, [t.platform_id], final=False)
    summary.record("duplicates", len(found.duplicates))
    summary.record("partial posts", len(found.partial))
    assert accepted <= 1, seen
    assert not found.problems(), found.problems()
    posts = await db.count("SELECT count(*) FROM posts WHERE platform_id = :p", p=t.platform_id)
    assert posts == 1, seen
    deliveries = await db.rows(
        "SELECT status, count(*) FROM deliveries WHERE platform_id = :p GROUP BY status",
        p=t.platform_id,
    )
    by_status = {str(s): int(n) for s, n in deliveries}
    assert by_status.get("accepted") == 1, by_status


# ---------------------------------------------------------------------------------------------
# one mail, two integrations, in parallel


async def test_one_mail_to_two_integrations_in_parallel(
    pair: Pair, tenant: TenantFactory, db: Database, summary: Summary
) -> None:
    await one_mail_to_two_integrations(pair, tenant, db, summary)


async def test_one_mail_to_two_integrations_in_parallel_under_rate_limits(
    limited_pair: Pair, tenant: TenantFactory, db: Database, summary: Summary
) -> None:
    await one_mail_to_two_integrations(limited_pair, tenant, db, summary)


async def one_mail_to_two_integrations(
    pair: Pair, tenant: TenantFactory, db: Database, summary: Summary
) -> None:
    t = await tenant(integrations=2, server=pair[0])
    a, b = t.addresses
    ids = [str(i["id"]) for i in t.integrations]
    files = [("shared.pdf", payload(120 * 1024, "two"))]
    raw = build_mail("mime", [a, b], ids, attachments=files)
    mails: list[Mail] = []
    # the relay delivers per recipient (and retries); a second MTA sends both at once
    for recipients, targets in (([a], ids[:1]), ([b], ids[1:]), ([a, b], ids)):
        query = "&".join(f"recipient={r}" for r in recipients)
        mails += [raw.copy(path=f"/inbound/mime?{query}", targets=targets) for _ in range(10)]
    # Mailgun posts once per recipient, each with its own token; then retries them
    mailgun = [
        build_mail("mailgun", [address], [iid], attachments=files)
        for address, iid in zip(t.addresses, ids, strict=True)
    ]
    mails += [original.copy() for original in mailgun for _ in range(5)]
    async with big_client() as client:
        await concurrently(client, urls(pair), mails)
    seen = answers(mails)
    assert set(seen) <= {"200 accepted", "200 duplicate"}, seen
    found = await examine(db, pair[0].blob_dir, mails, [t.platform_id], final=True)
    summary.record("parallel deliveries of one mail to two integrations", len(mails))
    summary.record("duplicates", len(found.duplicates))
    summary.record("posts lost", len(found.lost))
    assert not found.problems(), found.problems()
    per_group = await db.rows(
        "SELECT group_id, count(*) FROM posts WHERE platform_id = :p GROUP BY group_id",
        p=t.platform_id,
    )
    # one post of the raw mail and one of the Mailgun mail in each group
    assert sorted(int(n) for _, n in per_group) == [2, 2], per_group


# ---------------------------------------------------------------------------------------------
# rate limits across processes


async def until_window_start(seconds: int, margin: float = 0.15) -> float:
    """Sleep to just after the start of the next fixed window; return its start."""
    now = time.time()
    start = now - now % seconds + seconds
    await asyncio.sleep(start - now + margin)
    return start


async def test_rate_limit_holds_across_processes_and_retries_get_through(
    servers: Servers, tenant: TenantFactory, db: Database, summary: Summary
) -> None:
    limited = start_pair(servers, "ratelimit", MAILSLOT_RATE_LIMITS=f"{RATE_COUNT}/{RATE_SECONDS}")
    t = await tenant(server=limited[0])
    providers = ("mailgun", "sendgrid", "postmark", "mime")
    mails = [
        build_mail(
            providers[i % 4],
            [t.address],
            [t.integration_id],
            attachments=[(f"r{i}.bin", payload(2048 + i, f"rate-{i}"))] if i % 3 == 0 else [],
        )
        for i in range(24)
    ]
    async with big_client() as client:
        window = await until_window_start(RATE_SECONDS)
        await concurrently(client, urls(limited), mails)
        spanned = int((time.time() - window) // RATE_SECONDS) + 1
        first = [m.attempts[0] for m in mails]
        accepted = sum(1 for a in first if a.status == "accepted")
        limited_answers = [(m, m.attempts[0]) for m in mails if m.attempts[0].status != "accepted"]
        summary.record("rate-limited answers (limit across 2 processes)", len(limited_answers))
        summary.record("deliveries over the rate limit accepted", max(0, accepted - RATE_COUNT))
        assert 1 <= accepted <= RATE_COUNT * spanned, (accepted, spanned, answers(mails))
        if spanned == 1:
            assert accepted == RATE_COUNT, answers(mails)
        for mail, attempt in limited_answers:
            assert attempt.status == "rate_limited", (mail.provider, attempt)
            assert attempt.status_code == RATE_LIMITED_CODE[mail.api_provider], attempt

        # a duplicate is recognised before the limit and does not count toward it
        done = next(m for m in mails if m.posted)
        again = await send(client, limited[1].base_url, done)
        assert (again.status_code, again.status) == (200, "duplicate"), again

        # the provider retries what was refused; each new window lets a few more through
        for _ in range(12):
            pending = [m for m in mails if not m.posted]
            if not pending:
                break
            await until_window_start(RATE_SECONDS)
            await concurrently(client, urls(limited), pending)
        retried = [m for m in mails if m.attempts[0].status != "accepted"]
        summary.record("rate-limited mails re-sent until posted", len(retried))
        assert all(m.posted for m in mails), answers(mails)
    codes: dict[str, Any] = dict(answers(mails))
    await check_invariants(
        summary,
        db=db,
        env=limited[0].env,
        mails=mails,
        platform_ids=[t.platform_id],
        base_urls=urls(limited),
        faults=0,
        label=f"rate limit ({codes})",
    )
