"""The S3 blob store unreachable: inbound answers 503 (the provider retries) and keeps nothing
half-made, ``/readyz`` and downloads answer 503; once the store is back, the retry is posted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from tests import s3
from tests.auth import bearer
from tests.conftest import make_settings
from tests.inbound.conftest import RATE_LIMITS_IDS, RATE_LIMITS_ON_AND_OFF, Inbox
from tests.inbound.payloads import (
    INBOUND_PASSWORD,
    INBOUND_USER,
    MAILGUN_KEY,
    basic,
    mailgun_form,
    postmark_attachment,
    postmark_json,
)

ATTACHMENT = bytes(range(256)) * 2000  # 500 KiB


@pytest.fixture(params=RATE_LIMITS_ON_AND_OFF, ids=RATE_LIMITS_IDS)
def rate_limits(request: pytest.FixtureRequest) -> str:
    """With rate limits on, a provider event's token is claimed (and committed) before its
    files are stored: the retry must still be posted."""
    return str(request.param)


@pytest.fixture
async def outage(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[s3.Outage]:
    # One attempt per request, not the SDK's three: the same answers, sooner
    # (tests/test_health.py checks /readyz with the default retries).
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    async with s3.Outage() as relay:
        yield relay


@pytest.fixture
def settings(database_url: str, tmp_path: Path, rate_limits: str, outage: s3.Outage) -> Settings:
    blob_dir = tmp_path / "blobs"
    return make_settings(
        database_url,
        blob_dir,
        mailgun_signing_key=MAILGUN_KEY,
        inbound_username=INBOUND_USER,
        inbound_password=INBOUND_PASSWORD,
        rate_limits=rate_limits,
        **s3.settings_for(blob_dir, outage.url),
    )


def _request(provider: str, address: str) -> dict[str, Any]:
    """The same request each time it is sent, as a provider's retry is."""
    if provider == "mailgun":  # multipart: the file is spooled, then uploaded from the spool
        return {
            "url": "/inbound/mailgun",
            "data": {**mailgun_form(address, subject="Report"), "attachment-count": "1"},
            "files": {"attachment-1": ("report.pdf", ATTACHMENT, "application/pdf")},
        }
    payload = postmark_json(  # base64 in JSON: the bytes are uploaded from memory
        address,
        subject="Report",
        html="<p>The report</p>",
        message_id="outage-1",
        attachments=[postmark_attachment("report.pdf", "application/pdf", ATTACHMENT)],
    )
    return {"url": "/inbound/postmark", "json": payload, "headers": basic()}


@pytest.mark.parametrize("provider", ["mailgun", "postmark"])
async def test_mail_is_answered_503_while_the_store_is_down_and_posted_on_the_retry(
    client: httpx.AsyncClient, inbox: Inbox, outage: s3.Outage, provider: str
) -> None:
    request = _request(provider, inbox.address)
    await outage.cut()
    r = await client.post(**request)
    assert (r.status_code, r.json()["status"]) == (503, "failed"), r.text
    assert await inbox.posts() == []
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()["code"]) == (503, "unavailable")

    await outage.restore()
    assert (await client.get("/readyz")).status_code == 200
    r = await client.post(**request)
    assert (r.status_code, r.json()["status"]) == (200, "accepted"), r.text
    [post] = await inbox.posts()
    assert post["subject"] == "Report"
    [attachment] = post["attachments"]
    assert await inbox.download(attachment) == ATTACHMENT
    assert [d["status"] for d in await inbox.deliveries()] == ["accepted"]


async def test_downloads_answer_503_while_the_store_is_down(
    client: httpx.AsyncClient, inbox: Inbox, outage: s3.Outage
) -> None:
    r = await client.post(**_request("postmark", inbox.address))
    assert r.status_code == 200, r.text
    [post] = await inbox.posts()
    url = post["attachments"][0]["url"]
    await outage.cut()
    r = await client.get(url)
    assert (r.status_code, r.json()["code"]) == (503, "unavailable")
    assert r.headers["content-type"] == "application/problem+json"
    await outage.restore()
    assert await inbox.download(post["attachments"][0]) == ATTACHMENT


async def test_a_retry_of_a_failed_mail_is_503_not_a_duplicate_while_the_store_is_down(
    client: httpx.AsyncClient, inbox: Inbox, outage: s3.Outage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telling a provider's retry from a replayed event id reads the first attempt's kept
    content: with the store down that is unknown, and the answer is 503, not a duplicate (a
    200 that would stop the provider's retries)."""
    import app.inbound.rows as rows

    request = _request("postmark", inbox.address)
    monkeypatch.setattr(rows, "sanitize_html", lambda html: 1 / 0)
    assert (await client.post(**request)).status_code == 500  # our bug: kept as failed
    monkeypatch.undo()
    await outage.cut()
    r = await client.post(**request)
    assert (r.status_code, r.json()["status"]) == (503, "failed"), r.text
    await outage.restore()
    r = await client.post(**request)
    assert (r.status_code, r.json()["status"]) == (200, "accepted"), r.text
    [post] = await inbox.posts()
    assert await inbox.download(post["attachments"][0]) == ATTACHMENT
    r = await client.get("/v1/deliveries", headers=bearer("root"))
    assert [d["status"] for d in r.json()["items"]] == ["accepted", "failed"]
