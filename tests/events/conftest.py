from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.events.dispatcher import Dispatcher
from tests.auth import OPERATOR
from tests.conftest import make_settings
from tests.events.receiver import Receiver
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import INBOUND_PASSWORD, INBOUND_USER, basic, postmark_json

FAST_RETRIES = "0.05,0.05,0.05,0.05,0.05,0.05,0.05"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, blob_store: str) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "blobs",
        store=blob_store,
        inbound_username=INBOUND_USER,
        inbound_password=INBOUND_PASSWORD,
        rate_limits="",
        events_retry_schedule=FAST_RETRIES,
        events_poll_seconds=0.05,
        events_timeout_seconds=2,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def dispatcher(app: FastAPI) -> Dispatcher:
    found: Dispatcher = app.state.events
    return found


@pytest.fixture
async def inbox(client: httpx.AsyncClient, world: Any) -> Inbox:
    return await Inbox(client, world).setup()


async def subscribe(client: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    r = await client.post("/v1/event-endpoints", json={"url": url, **fields}, headers=OPERATOR)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def send_mail(
    client: httpx.AsyncClient, address: str, message_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    payload = postmark_json(address, message_id=message_id, **fields)
    r = await client.post("/inbound/postmark", json=payload, headers=basic())
    assert r.status_code in (200, 403), r.text
    answer: dict[str, Any] = r.json()
    return answer
