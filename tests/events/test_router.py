"""The events API: operator only, problem bodies, secrets shown once, URLs checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.db.engine import create_engine
from app.events.emit import emit, event
from app.events.targets import TargetRefused, check_url, target
from app.main import create_app
from app.models import EventType
from tests.auth import OPERATOR, bearer
from tests.conftest import make_settings
from tests.events.conftest import send_mail, subscribe
from tests.events.receiver import Receiver
from tests.inbound.conftest import Inbox

ENDPOINT_ID = "0f3c8a52-9b1e-4d7a-8c2f-5e6a7b8c9d01"
EVERY_ROUTE = [
    ("POST", "/v1/event-endpoints", {"url": "http://127.0.0.1:9/x"}),
    ("GET", "/v1/event-endpoints", None),
    ("GET", f"/v1/event-endpoints/{ENDPOINT_ID}", None),
    ("PATCH", f"/v1/event-endpoints/{ENDPOINT_ID}", {"enabled": False}),
    ("DELETE", f"/v1/event-endpoints/{ENDPOINT_ID}", None),
    ("POST", f"/v1/event-endpoints/{ENDPOINT_ID}/rotate-secret", None),
    ("POST", f"/v1/event-endpoints/{ENDPOINT_ID}/ping", None),
    ("GET", f"/v1/event-endpoints/{ENDPOINT_ID}/attempts", None),
    ("POST", "/v1/events/evt_x/redeliver", None),
    ("GET", "/v1/events", None),
]


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["code"] == code
    return body


class TestOperatorOnly:
    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param({}, id="missing"),
            pytest.param({"Authorization": "Bearer wrong"}, id="wrong"),
            pytest.param(bearer("root", "p1", "admin"), id="admin-jwt"),
            pytest.param(bearer("mo", "p1", "member"), id="member-jwt"),
        ],
    )
    async def test_anything_but_the_operator_token_is_401(
        self, client: httpx.AsyncClient, world: Any, headers: dict[str, str]
    ) -> None:
        await world.platform("p1")
        for method, path, body in EVERY_ROUTE:
            r = await client.request(method, path, json=body, headers=headers)
            _problem(r, 401, "unauthenticated")
            assert r.headers["www-authenticate"].startswith("Bearer")


class TestEndpoints:
    async def test_the_secret_is_shown_at_creation_only(self, client: httpx.AsyncClient) -> None:
        created = await subscribe(
            client, "http://127.0.0.1:9/hook", description="indexer", event_types=["post.created"]
        )
        assert created["secret"].startswith("whsec_")
        assert created["event_types"] == ["post.created"]
        assert (created["enabled"], created["disabled_reason"]) == (True, None)
        r = await client.get(f"/v1/event-endpoints/{created['id']}", headers=OPERATOR)
        assert r.status_code == 200
        assert "secret" not in r.json()
        r = await client.get("/v1/event-endpoints", headers=OPERATOR)
        [listed] = r.json()["items"]
        assert "secret" not in listed
        assert created["secret"] not in r.text

    async def test_change_and_delete(self, client: httpx.AsyncClient) -> None:
        created = await subscribe(client, "http://127.0.0.1:9/hook")
        path = f"/v1/event-endpoints/{created['id']}"
        r = await client.patch(
            path, json={"event_types": ["post.deleted"], "enabled": False}, headers=OPERATOR
        )
        assert r.status_code == 200, r.text
        assert (r.json()["event_types"], r.json()["enabled"]) == (["post.deleted"], False)
        assert (await client.delete(path, headers=OPERATOR)).status_code == 204
        _problem(await client.get(path, headers=OPERATOR), 404, "not_found")
        _problem(await client.delete(path, headers=OPERATOR), 404, "not_found")

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({"url": "http://127.0.0.1:9/x", "event_types": ["ping"]}, id="ping"),
            pytest.param({"url": "http://127.0.0.1:9/x", "event_types": ["nope"]}, id="type"),
            pytest.param({"url": "http://127.0.0.1:9/x", "secret": "mine"}, id="unknown-field"),
            pytest.param({"url": "ftp://127.0.0.1/x"}, id="scheme"),
            pytest.param({"url": "http://user:pw@127.0.0.1/x"}, id="credentials"),
            pytest.param({}, id="no-url"),
        ],
    )
    async def test_invalid_bodies_are_422(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        _problem(
            await client.post("/v1/event-endpoints", json=body, headers=OPERATOR),
            422,
            "validation_error",
        )

    async def test_null_is_refused_in_a_change(self, client: httpx.AsyncClient) -> None:
        created = await subscribe(client, "http://127.0.0.1:9/hook")
        r = await client.patch(
            f"/v1/event-endpoints/{created['id']}", json={"url": None}, headers=OPERATOR
        )
        _problem(r, 422, "validation_error")


@pytest.fixture
def guarded(database_url: str, tmp_path: Path) -> Settings:
    """Loopback not allowed, as in production (but http allowed: environment test)."""
    return make_settings(database_url, tmp_path / "blobs", events_allow_loopback=False)


class TestDestinations:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8000/x",
            "http://localhost/x",
            "http://[::1]/x",
            "http://10.0.0.5/x",
            "http://192.168.1.1/x",
            "http://172.16.0.1/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00:ec2::254]/x",
            "http://[fe80::1]/x",
            "http://[fc00::1]/x",
            "http://0.0.0.0/x",
            "http://224.0.0.1/x",
            "http://240.0.0.1/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://100.64.0.1/x",
        ],
    )
    async def test_private_destinations_are_refused_when_saved(
        self, guarded: Settings, url: str
    ) -> None:
        app = create_app(guarded)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                r = await client.post("/v1/event-endpoints", json={"url": url}, headers=OPERATOR)
                body = _problem(r, 422, "validation_error")
                assert body["errors"][0]["loc"] == ["body", "url"]
        finally:
            await app.state.events.stop()
            await app.state.engine.dispose()

    async def test_production_needs_https(self, guarded: Settings) -> None:
        production = guarded.model_copy(update={"environment": "production"})
        with pytest.raises(TargetRefused, match="https"):
            await target("http://93.184.215.14/x", production)
        assert (await target("https://93.184.215.14/x", production)).sni == "93.184.215.14"
        # plain http only to a loopback address, and only when loopback is allowed
        with pytest.raises(TargetRefused, match="loopback"):
            await target("http://127.0.0.1:9/x", production)
        allowed = production.model_copy(update={"events_allow_loopback": True})
        assert (await target("http://127.0.0.1:9/x", allowed)).url == "http://127.0.0.1:9/x"
        assert check_url("https://hooks.example.com/x", production)[0] == "https"

    async def test_a_send_connects_to_the_address_it_checked(self, settings: Settings) -> None:
        checked = await target("http://localhost:8123/hook?x=1", settings)
        assert checked.url in {"http://127.0.0.1:8123/hook?x=1", "http://[::1]:8123/hook?x=1"}
        assert checked.host == "localhost:8123"
        assert checked.sni is None
        secure = await target("https://127.0.0.1/hook", settings)
        assert (secure.url, secure.sni) == ("https://127.0.0.1/hook", "127.0.0.1")


class TestPull:
    async def test_events_come_in_order_page_by_page_and_never_again(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        for index in range(5):
            await send_mail(client, inbox.address, f"pull-{index}", subject=f"S{index}")
        r = await client.get("/v1/events", params={"limit": 4}, headers=OPERATOR)
        assert r.status_code == 200, r.text
        first = r.json()
        types = [e["type"] for e in first["items"]]
        assert types == ["integration.created", "post.created", "post.created", "post.created"]
        r = await client.get(
            "/v1/events", params={"limit": 4, "after": first["next_cursor"]}, headers=OPERATOR
        )
        second = r.json()
        assert [e["data"]["subject"] for e in second["items"]] == ["S3", "S4"]
        r = await client.get(
            "/v1/events", params={"after": second["next_cursor"]}, headers=OPERATOR
        )
        assert r.json() == {"items": [], "next_cursor": second["next_cursor"]}
        await send_mail(client, inbox.address, "pull-late", subject="late")
        r = await client.get(
            "/v1/events", params={"after": second["next_cursor"]}, headers=OPERATOR
        )
        assert [e["data"]["subject"] for e in r.json()["items"]] == ["late"]

    async def test_a_cursor_not_issued_is_invalid(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/v1/events", params={"after": "garbage"}, headers=OPERATOR)
        _problem(r, 422, "invalid_cursor")

    async def test_pings_are_not_pulled(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        endpoint = await subscribe(client, receiver.url)
        await client.post(f"/v1/event-endpoints/{endpoint['id']}/ping", headers=OPERATOR)
        r = await client.get("/v1/events", headers=OPERATOR)
        assert r.json()["items"] == []


class TestPullNeverSkipsALateCommit:
    async def test_an_event_committed_late_is_not_passed_over(
        self, client: httpx.AsyncClient, inbox: Inbox, settings: Settings
    ) -> None:
        if not settings.database_url.startswith("postgresql"):
            pytest.skip("SQLite has one writer: seq order is commit order")
        engine = create_engine(settings.database_url)
        try:
            async with engine.connect() as slow:
                await slow.begin()
                await emit(slow, [event(EventType.post_deleted, "p1", {"id": "slow"})])
                await send_mail(client, inbox.address, "fast", subject="fast")  # commits first
                r = await client.get("/v1/events", headers=OPERATOR)
                seen = [e["type"] for e in r.json()["items"]]
                assert "post.created" not in seen  # held back behind the running transaction
                cursor = r.json()["next_cursor"]
                await slow.commit()
            r = await client.get("/v1/events", params={"after": cursor}, headers=OPERATOR)
            later = [e["type"] for e in r.json()["items"]]
            assert later == ["post.deleted", "post.created"]
        finally:
            await engine.dispose()
