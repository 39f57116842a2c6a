"""``/metrics`` of a real server with 2 workers: the counts of the mail sent, whichever worker
served it and whichever answers the scrape; kept when a worker dies; fresh after a restart.

The mail goes out over several connections at once, so that both workers serve some of it (the
JSON log lines name the worker that wrote them: this is checked, not assumed).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import httpx

from tests.inbound.payloads import mailgun_form, sign_mailgun
from tests.metrics import value
from tests.reliability.conftest import Servers
from tests.reliability.harness import (
    HTTP_TIMEOUT,
    INBOUND_DOMAIN,
    OPERATOR,
    Mail,
    Server,
    Summary,
    build_mail,
    create_tenant,
    payload,
    send,
    send_all,
)

RATE_LIMIT = 3  # per integration and hour, for this server: the 4th mail to one is refused
GHOST = f"ghost.{'q7' * 13}@{INBOUND_DOMAIN}"


async def scrape(server: Server, headers: dict[str, str] = OPERATOR) -> httpx.Response:
    """One scrape, on a connection of its own (either worker may answer it)."""
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        return await client.get(f"{server.base_url}/metrics", headers=headers)


async def scraped(server: Server) -> str:
    r = await scrape(server)
    assert r.status_code == 200, r.text
    return r.text


def inbound_lines(server: Server) -> list[dict[str, object]]:
    lines = []
    for line in server.log_text().splitlines():
        if '"mailslot.inbound.request"' in line:
            lines.append(json.loads(line))
    return lines


def counts(text: str, attachment_bytes: int) -> dict[str, float]:
    """What the scrape says of the mail sent, next to what the test expects (``expected``)."""
    return {
        "mailgun 200": value(
            text, "mailslot_inbound_requests_total", provider="mailgun", code="200"
        ),
        "mailgun 401": value(
            text, "mailslot_inbound_requests_total", provider="mailgun", code="401"
        ),
        "mailgun 429": value(
            text, "mailslot_inbound_requests_total", provider="mailgun", code="429"
        ),
        "postmark 200": value(
            text, "mailslot_inbound_requests_total", provider="postmark", code="200"
        ),
        "mime 422": value(text, "mailslot_inbound_requests_total", provider="mime", code="422"),
        "accepted": value(text, "mailslot_deliveries_total", status="accepted", reason=""),
        "duplicate": value(text, "mailslot_deliveries_total", status="duplicate", reason=""),
        "auto_reply": value(
            text, "mailslot_deliveries_total", status="rejected", reason="auto_reply"
        ),
        "unknown_recipient": value(
            text, "mailslot_deliveries_total", status="rejected", reason="unknown_recipient"
        ),
        "rate_limited": value(
            text, "mailslot_deliveries_total", status="rate_limited", reason="rate_limited"
        ),
        "auth failures": value(text, "mailslot_inbound_auth_failures_total", provider="mailgun"),
        "rate-limited answers": value(
            text, "mailslot_inbound_rate_limited_total", provider="mailgun"
        ),
        "posts": value(text, "mailslot_posts_stored_total"),
        "attachment bytes": value(text, "mailslot_attachment_bytes_stored_total")
        - attachment_bytes,
        "mailgun latencies": value(
            text, "mailslot_inbound_request_duration_seconds_count", provider="mailgun"
        ),
        "postmark latencies": value(
            text, "mailslot_inbound_request_duration_seconds_count", provider="postmark"
        ),
        "mime latencies": value(
            text, "mailslot_inbound_request_duration_seconds_count", provider="mime"
        ),
    }


async def test_a_scrape_of_two_workers_counts_every_mail_sent(
    servers: Servers, workdir: Path, summary: Summary
) -> None:
    metrics_dir = workdir / "metrics-of-test"
    server = servers.start(
        "metrics",
        MAILSLOT_RATE_LIMITS=f"{RATE_LIMIT}/3600",
        MAILSLOT_METRICS_DIR=str(metrics_dir),
    )
    tenant = await create_tenant(server.base_url, integrations=14)
    addresses = tenant.addresses
    ids = [str(i["id"]) for i in tenant.integrations]

    # 30 plain mails (3 to each of 10 integrations), 6 with two attachments each, 5 automatic
    # replies, 2 to an address of nobody's: sent at once over 8 connections.
    plain = [build_mail("mailgun", [addresses[i % 10]], [ids[i % 10]]) for i in range(30)]
    attached: list[Mail] = []
    sizes = 0
    for i in range(6):
        files = [
            (f"a{i}.bin", payload(1000 + i, f"a{i}")),
            (f"b{i}.bin", payload(2000 + i, f"b{i}")),
        ]
        sizes += sum(len(data) for _, data in files)
        target = 10 + i % 2
        attached.append(
            build_mail("postmark", [addresses[target]], [ids[target]], attachments=files)
        )
    automatic = [
        build_mail("mime", [addresses[12]], [ids[12]], headers={"Auto-Submitted": "auto-replied"})
        for _ in range(5)
    ]
    nobodys = [build_mail("mime", [GHOST], [], refused=True) for _ in range(2)]
    await send_all([server.base_url], [*plain, *attached, *automatic, *nobodys], concurrency=8)
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        # The provider sends two of them again (the same token: duplicates); a wrong key, 4 times.
        again = [mail.copy() for mail in plain[:2]]
        for mail in again:
            await send(client, server.base_url, mail)
        for _ in range(4):
            forged = mailgun_form(
                addresses[0], signature=sign_mailgun(key="not-the-key-0123456789")
            )
            r = await client.post(f"{server.base_url}/inbound/mailgun", data=forged)
            assert r.status_code == 401
        # One integration gets one mail more than its rate limit allows.
        limited = [build_mail("mailgun", [addresses[13]], [ids[13]]) for _ in range(RATE_LIMIT + 1)]
        for mail in limited:
            await send(client, server.base_url, mail)
    answered = [
        a.status_code for m in [*plain, *attached, *automatic, *nobodys] for a in m.attempts
    ]
    assert answered.count(200) == 36, answered
    assert answered.count(422) == 7, answered
    assert [m.attempts[-1].status_code for m in limited] == [200] * RATE_LIMIT + [429]
    assert [m.attempts[-1].status for m in again] == ["duplicate", "duplicate"]

    # Both workers must have served mail (each line names its worker): should the kernel have
    # handed every connection to one, requests on new connections go on until the other served.
    forged_more = 0
    while len({line["pid"] for line in inbound_lines(server)}) < 2 and forged_more < 100:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            forged = mailgun_form(
                addresses[0], signature=sign_mailgun(key="not-the-key-0123456789")
            )
            r = await client.post(f"{server.base_url}/inbound/mailgun", data=forged)
            assert r.status_code == 401
        forged_more += 1
    expected = {
        "mailgun 200": 30 + 2 + RATE_LIMIT,
        "mailgun 401": 4 + forged_more,
        "mailgun 429": 1,
        "postmark 200": 6,
        "mime 422": 7,
        "accepted": 30 + 6 + RATE_LIMIT,
        "duplicate": 2,
        "auto_reply": 5,
        "unknown_recipient": 2,
        "rate_limited": 1,
        "auth failures": 4 + forged_more,
        "rate-limited answers": 1,
        "posts": 30 + 6 + RATE_LIMIT,
        "attachment bytes": 0,
        "mailgun latencies": 30 + 2 + 4 + forged_more + RATE_LIMIT + 1,
        "postmark latencies": 6,
        "mime latencies": 7,
    }
    lines = inbound_lines(server)
    assert len(lines) == 30 + 6 + 5 + 2 + 2 + 4 + forged_more + RATE_LIMIT + 1
    served_by = {line["pid"] for line in lines}
    assert len(served_by) == 2, served_by
    assert served_by == set(server.worker_pids())
    # Whichever worker answers the scrape, it counts every worker's mail.
    scrapes = [await scraped(server) for _ in range(6)]
    for text in scrapes:
        assert counts(text, sizes) == expected
    assert value(scrapes[0], "mailslot_database_statement_duration_seconds_count") > 0
    assert value(scrapes[0], "mailslot_database_connections_in_use") >= 0
    assert (await scrape(server, headers={})).status_code == 401

    # A worker killed: the supervisor replaces it; what it counted is still counted, and the
    # gauge of its pool is gone with it.
    [folder] = list(metrics_dir.iterdir())
    victim = server.worker_pids()[0]
    startups = server.startups()
    os.kill(victim, signal.SIGKILL)
    await asyncio.to_thread(server.wait_workers, startups + 1)
    assert counts(await scraped(server), sizes) == expected
    assert not list(folder.glob(f"gauge_live*_{victim}.db"))
    assert list(folder.glob(f"counter_{victim}.db"))

    # A new start of the server counts from zero, in a folder of its own.
    server.stop()
    server.start()
    fresh = await scraped(server)
    assert value(fresh, "mailslot_inbound_requests_total", provider="mailgun", code="200") == 0
    assert value(fresh, "mailslot_posts_stored_total") == 0
    assert folder not in list(metrics_dir.iterdir())
    summary.record("metrics: inbound requests counted across 2 workers", len(lines))
