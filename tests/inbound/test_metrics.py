"""``/metrics``: for the operator only; inbound answers, deliveries, posts and bytes counted.

The app of a test runs in this process: the counters are the process's, so each test reads
what its own requests added (a scrape before, a scrape after). ``tests/reliability/
test_metrics.py`` counts across the workers of a real server.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.auth import OPERATOR, bearer
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import (
    basic,
    mailgun_form,
    mime_message,
    postmark_attachment,
    postmark_json,
    sign_mailgun,
)
from tests.metrics import value, values

PROVIDER_NAMES = ("mailgun", "sendgrid", "postmark", "mime")
GHOST = f"ghost.{'q7' * 13}@in.example.com"


async def scrape(client: httpx.AsyncClient) -> str:
    r = await client.get("/metrics", headers=OPERATOR)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


class TestAccess:
    async def test_metrics_answer_the_operator_token_only(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/metrics")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/metrics", headers=bearer())).status_code == 401
        assert (
            await client.get("/metrics", headers={"Authorization": "Bearer x"})
        ).status_code == 401
        text = await scrape(client)
        # Counted from 0 for each provider, so that the first failure shows as a rise.
        failures = values(text, "mailslot_inbound_auth_failures_total")
        assert set(failures) >= {(("provider", p),) for p in PROVIDER_NAMES}
        assert "# TYPE mailslot_posts_stored_total counter" in text

    async def test_open_access_is_a_setting(self, settings: Settings) -> None:
        app = create_app(settings.model_copy(update={"metrics_access": "open"}))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            r = await client.get("/metrics")
        await app.state.engine.dispose()
        assert r.status_code == 200
        assert "# TYPE mailslot_posts_stored_total counter" in r.text


class TestInboundCounts:
    async def test_answers_deliveries_posts_and_bytes_are_counted(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        before = await scrape(client)
        files = [postmark_attachment("a.bin", "application/octet-stream", b"a" * 1000)]
        files.append(postmark_attachment("b.bin", "application/octet-stream", b"b" * 2345))
        posted = postmark_json(inbox.address, attachments=files)
        r = await client.post("/inbound/postmark", json=posted, headers=basic())
        assert r.status_code == 200, r.text
        r = await client.post("/inbound/postmark", json=posted, headers=basic())
        assert r.json()["status"] == "duplicate"
        auto = mime_message(inbox.address, headers={"Auto-Submitted": "auto-replied"})
        r = await client.post(
            "/inbound/mime", params={"recipient": inbox.address}, content=auto, headers=basic()
        )
        assert r.status_code == 422
        r = await client.post(
            "/inbound/mime",
            params={"recipient": GHOST},
            content=mime_message(GHOST),
            headers=basic(),
        )
        assert r.status_code == 422
        bad = mailgun_form(inbox.address, signature=sign_mailgun(key="not-the-key-0123456789"))
        assert (await client.post("/inbound/mailgun", data=bad)).status_code == 401
        assert (await client.get("/inbound/mailgun")).status_code == 405
        assert (await client.post("/inbound/nothing-here")).status_code == 404
        after = await scrape(client)

        def added(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        requests = "mailslot_inbound_requests_total"
        assert added(requests, provider="postmark", code="200") == 2
        assert added(requests, provider="mime", code="422") == 2
        assert added(requests, provider="mailgun", code="401") == 1
        assert added(requests, provider="mailgun", code="405") == 1
        assert added(requests, provider="unknown", code="404") == 1
        assert added("mailslot_inbound_auth_failures_total", provider="mailgun") == 1
        deliveries = "mailslot_deliveries_total"
        assert added(deliveries, status="accepted", reason="") == 1
        assert added(deliveries, status="duplicate", reason="") == 1
        assert added(deliveries, status="rejected", reason="auto_reply") == 1
        assert added(deliveries, status="rejected", reason="unknown_recipient") == 1
        assert added("mailslot_posts_stored_total") == 1
        assert added("mailslot_attachment_bytes_stored_total") == 1000 + 2345
        latency = "mailslot_inbound_request_duration_seconds_count"
        assert added(latency, provider="postmark") == 2
        assert added(latency, provider="mime") == 2
        assert added("mailslot_database_statement_duration_seconds_count") >= 4
        assert added("mailslot_database_statement_duration_seconds_sum") > 0
        assert value(after, "mailslot_database_connections_in_use") == 0  # none held now

    async def test_a_mail_over_the_body_cap_is_counted_413(
        self, settings: Settings, inbox: Inbox, client: httpx.AsyncClient
    ) -> None:
        app: FastAPI = create_app(settings.model_copy(update={"max_request_bytes": 1000}))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as capped:
            before = await scrape(capped)
            raw = mime_message(inbox.address, text="x" * 2000)
            r = await capped.post(
                "/inbound/mime", params={"recipient": inbox.address}, content=raw, headers=basic()
            )
            assert r.status_code == 413
            after = await scrape(capped)
        await app.state.engine.dispose()
        name = "mailslot_inbound_requests_total"
        added = value(after, name, provider="mime", code="413") - value(
            before, name, provider="mime", code="413"
        )
        assert added == 1


@pytest.fixture
def rate_limits() -> str:
    return "1/3600"


class TestRateLimited:
    async def test_a_rate_limited_answer_is_counted(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        before = await scrape(client)
        for _ in range(2):
            r = await client.post("/inbound/mailgun", data=mailgun_form(inbox.address))
        assert r.status_code == 429
        after = await scrape(client)
        name = "mailslot_inbound_rate_limited_total"
        assert value(after, name, provider="mailgun") - value(before, name, provider="mailgun") == 1
        name = "mailslot_deliveries_total"
        labels = {"status": "rate_limited", "reason": "rate_limited"}
        assert value(after, name, **labels) - value(before, name, **labels) == 1
