from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import DEFAULT_RATE_LIMITS, Settings
from tests.conftest import make_settings
from tests.factories import World
from tests.inbound.payloads import INBOUND_PASSWORD, INBOUND_USER, MAILGUN_KEY


@pytest.fixture
def rate_limits() -> str:
    """Off, unless a module overrides it (below)."""
    return ""


# A rule-scenario module runs twice, with rate limits off and with the production default; both
# runs assert the same outcomes: ``@pytest.fixture(params=RATE_LIMITS_ON_AND_OFF, ids=...)``.
RATE_LIMITS_ON_AND_OFF = ("", DEFAULT_RATE_LIMITS)
RATE_LIMITS_IDS = ("limits-off", "limits-default")


@pytest.fixture
def settings(database_url: str, tmp_path: Path, rate_limits: str, blob_store: str) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "blobs",
        store=blob_store,
        mailgun_signing_key=f"old-key-0123456789,{MAILGUN_KEY}",
        inbound_username=INBOUND_USER,
        inbound_password=f"previous-password,{INBOUND_PASSWORD}",
        rate_limits=rate_limits,
    )


class Inbox:
    """A platform with one group and one integration, and readers for what arrived."""

    def __init__(self, client: httpx.AsyncClient, world: World) -> None:
        self.client, self.world = client, world
        self.group = ""
        self.integration: dict[str, Any] = {}

    async def setup(self, **fields: Any) -> Inbox:
        await self.world.platform("p1", plan="premium")
        self.group = await self.world.group("p1")
        self.integration = await self.world.integration(self.group, "Newsletter", **fields)
        return self

    @property
    def address(self) -> str:
        return str(self.integration["address"])

    async def posts(self) -> list[dict[str, Any]]:
        from tests.auth import bearer

        r = await self.client.get(f"/v1/groups/{self.group}/posts", headers=bearer("root"))
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def deliveries(self) -> list[dict[str, Any]]:
        from tests.auth import bearer

        r = await self.client.get("/v1/deliveries", headers=bearer("root"))
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def download(self, attachment: dict[str, Any]) -> bytes:
        r = await self.client.get(attachment["url"])
        assert r.status_code == 200, r.text
        return r.content


@pytest.fixture
async def inbox(client: httpx.AsyncClient, world: World) -> Inbox:
    return await Inbox(client, world).setup()
