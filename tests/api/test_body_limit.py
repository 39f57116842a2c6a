"""Request bodies are capped by path before anything reads them: ``MAX_API_BODY_BYTES`` (1 MiB)
everywhere but ``/inbound/``, ``MAX_REQUEST_BYTES`` there."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.body_limit import BodyLimit
from app.config import Settings
from app.main import create_app
from tests.auth import bearer
from tests.conftest import make_settings
from tests.factories import World
from tests.inbound.payloads import basic, mime_message

KiB = 1024
MiB = 1024 * KiB


class Upload:
    """A request body streamed in chunks, counting what the server pulled."""

    def __init__(self, total: int, chunk: int = 64 * KiB, head: bytes = b"[") -> None:
        self.total, self.chunk, self.head = total, chunk, head
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        data = self.head + b"0," * (self.total // 2)
        for i in range(0, self.total, self.chunk):
            piece = data[i : i + self.chunk]
            self.sent += len(piece)
            yield piece


def assert_payload_too_large(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "payload_too_large"
    assert r.headers["x-content-type-options"] == "nosniff"


class TestApiBodies:
    async def test_a_large_unauthenticated_json_body_is_refused_before_it_is_read(
        self, client: httpx.AsyncClient
    ) -> None:
        upload = Upload(100 * MiB)
        r = await client.post(
            "/v1/groups",
            content=upload,
            headers={"Content-Type": "application/json", "Content-Length": str(100 * MiB)},
        )
        assert_payload_too_large(r)
        assert upload.sent <= 64 * KiB  # at most what the transport had in hand

    async def test_a_chunked_body_is_counted_and_stopped_just_past_the_cap(
        self, client: httpx.AsyncClient
    ) -> None:
        upload = Upload(100 * MiB)
        r = await client.post(
            "/v1/groups", content=upload, headers={"Content-Type": "application/json"}
        )
        assert_payload_too_large(r)
        assert upload.sent <= MiB + 2 * 64 * KiB  # the cap and the chunk that passed it

    async def test_a_body_at_the_cap_reaches_the_endpoint(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        name = "x" * (MiB - len(json.dumps({"name": ""})))
        body = json.dumps({"name": name}).encode()
        assert len(body) == MiB
        r = await client.post(
            "/v1/groups",
            content=body,
            headers={**bearer(), "Content-Type": "application/json"},
        )
        assert r.status_code == 422, r.text  # validated: the name is too long, not too large
        r = await client.post(
            "/v1/groups",
            content=body + b" ",
            headers={**bearer(), "Content-Type": "application/json"},
        )
        assert_payload_too_large(r)

    async def test_the_cap_is_a_setting(self, database_url: str, tmp_path: Path) -> None:
        settings = make_settings(database_url, tmp_path / "blobs", max_api_body_bytes=100)
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/v1/groups", json={"name": "n" * 100})
            assert_payload_too_large(r)
            r = await client.post("/v1/groups", json={"name": "n"})
            assert r.status_code == 401

    def test_the_setting_reads_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAILSLOT_MAX_API_BODY_BYTES", "2048")
        settings = Settings(_env_file=None, environment="test")
        assert settings.max_api_body_bytes == 2048
        assert Settings.model_fields["max_api_body_bytes"].default == MiB


class TestInboundBodies:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path) -> Settings:
        return make_settings(
            database_url,
            tmp_path / "blobs",
            inbound_username="mailslot",
            inbound_password="inbound-password-0123456789",
            max_request_bytes=3 * MiB,
        )

    async def test_inbound_bodies_may_pass_the_api_cap(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        group = await world.group("p1")
        integration = await world.integration(group, "News")
        raw = mime_message(
            integration["address"],
            attachments=[("a.bin", "application/octet-stream", b"a" * 2 * MiB)],
        )
        r = await client.post(
            "/inbound/mime",
            params={"recipient": integration["address"]},
            content=raw,
            headers={**basic(), "Content-Type": "message/rfc822"},
        )
        assert r.status_code == 200, r.text

    @pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
    async def test_inbound_bodies_over_max_request_bytes_are_413(
        self, client: httpx.AsyncClient, declared: bool
    ) -> None:
        upload = Upload(100 * MiB, head=b"x")
        headers = {**basic(), "Content-Type": "message/rfc822"}
        if declared:
            headers["Content-Length"] = str(100 * MiB)
        r = await client.post(
            "/inbound/mime",
            params={"recipient": "a@in.example.com"},
            content=upload,
            headers=headers,
        )
        assert_payload_too_large(r)
        assert upload.sent <= 3 * MiB + 2 * 64 * KiB


class TestTheMiddleware:
    """BodyLimit alone, around an app that reads the whole body."""

    @staticmethod
    def reader() -> tuple[FastAPI, list[int]]:
        app = FastAPI()
        seen: list[int] = []

        @app.post("/v1/echo")
        async def echo(body: list[int]) -> int:  # pragma: no cover - never reached when too large
            seen.append(len(body))
            return len(body)

        return app, seen

    async def test_nothing_is_received_when_content_length_is_over(self) -> None:
        app, seen = self.reader()
        middleware = BodyLimit(app, api_limit=10, inbound_limit=1000)
        received: list[dict[str, Any]] = []
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            message = {"type": "http.request", "body": b"[1,2,3,4,5,6]", "more_body": False}
            received.append(message)
            return message

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/echo",
            "raw_path": b"/v1/echo",
            "query_string": b"",
            "headers": [(b"content-length", b"13"), (b"content-type", b"application/json")],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("test", 80),
            "root_path": "",
        }
        await middleware(scope, receive, send)
        assert received == []
        assert sent[0]["status"] == 413
        assert seen == []
        assert json.loads(sent[1]["body"])["code"] == "payload_too_large"

    def test_the_inbound_prefix_takes_the_inbound_limit(self) -> None:
        middleware = BodyLimit(FastAPI(), api_limit=10, inbound_limit=1000)
        assert middleware.limit_for("/inbound/mailgun") == 1000
        assert middleware.limit_for("/inbound/mime") == 1000
        assert middleware.limit_for("/v1/groups") == 10
        assert middleware.limit_for("/inboundx") == 10
        assert middleware.limit_for("/healthz") == 10
