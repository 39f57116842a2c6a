"""What the cleanup command forgets: unrouted mail's rows, not only their content."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.config import Settings
from app.db.base import utcnow
from app.maintenance import cleanup
from app.models import Delivery
from tests.auth import OPERATOR
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import basic, postmark_json


async def _post(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    return await client.post("/inbound/postmark", json=payload, headers=basic())


@pytest.mark.blob_stores
class TestUnroutedRetention:
    async def test_unrouted_rows_go_after_retention_and_routed_ones_stay(
        self, client: httpx.AsyncClient, inbox: Inbox, app: FastAPI, settings: Settings
    ) -> None:
        stranger = postmark_json("nobody.abc@in.example.com", subject="A stranger's subject")
        assert (await _post(client, stranger)).status_code == 403
        recent = postmark_json("other.def@in.example.com", subject="Still recent")
        assert (await _post(client, recent)).status_code == 403
        assert (await _post(client, postmark_json(inbox.address))).status_code == 200
        listed = await client.get("/v1/unrouted-deliveries", headers=OPERATOR)
        assert {d["subject"] for d in listed.json()["items"]} == {
            "A stranger's subject",
            "Still recent",
        }
        long_ago = utcnow() - timedelta(days=settings.delivery_retention_days, minutes=1)
        async with app.state.sessionmaker.begin() as session:
            await session.execute(
                sa.update(Delivery)
                .where(Delivery.subject != "Still recent")
                .values(received_at=long_ago)
            )
        report = await cleanup(settings, grace_seconds=3600)
        assert report.unrouted_deleted == 1
        assert "unrouted deliveries deleted: 1" in str(report)
        listed = await client.get("/v1/unrouted-deliveries", headers=OPERATOR)
        assert [d["subject"] for d in listed.json()["items"]] == ["Still recent"]
        # the platform's own log keeps its rows (their kept content follows its own rule)
        assert [d["status"] for d in await inbox.deliveries()] == ["accepted"]
