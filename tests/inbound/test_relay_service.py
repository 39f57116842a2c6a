"""The relay command against the real service (uvicorn on 127.0.0.1), on the test database."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from app.main import create_app
from app.relay import EX_NOUSER, EX_OK, main
from tests.auth import OPERATOR
from tests.conftest import make_settings
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import INBOUND_PASSWORD, INBOUND_USER, mime_message


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[str]:
    """The service on a loopback port, in a thread with its own event loop and engine."""
    settings = make_settings(
        database_url,
        tmp_path / "service-blobs",
        inbound_username=INBOUND_USER,
        inbound_password=INBOUND_PASSWORD,
        rate_limits="",
    )
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def relay_environment(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSLOT_RELAY_URL", service)
    monkeypatch.setenv("MAILSLOT_RELAY_USERNAME", INBOUND_USER)
    monkeypatch.setenv("MAILSLOT_RELAY_PASSWORD", INBOUND_PASSWORD)
    monkeypatch.delenv("MAILSLOT_RELAY_PASSWORD_FILE", raising=False)


async def relay(argv: list[str], message: bytes) -> int:
    return await asyncio.to_thread(main, argv, io.BytesIO(message))


class TestThroughTheService:
    async def test_mail_to_a_live_address_is_posted(
        self, relay_environment: None, inbox: Inbox
    ) -> None:
        message = mime_message(inbox.address, subject="Through the relay")
        argv = ["--sender=alice@example.org", f"--recipient={inbox.address}"]
        assert await relay(argv, message) == EX_OK
        assert [p["subject"] for p in await inbox.posts()] == ["Through the relay"]

    async def test_a_domain_that_is_not_ours_bounces_and_is_logged(
        self,
        relay_environment: None,
        inbox: Inbox,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        wrong = inbox.address.split("@")[0] + "@alias.example.net"
        argv = ["--sender=alice@example.org", f"--recipient={wrong}"]
        assert await relay(argv, mime_message(wrong)) == EX_NOUSER
        # The service runs in this process here: its own log line is on stderr too.
        [said] = [line for line in capsys.readouterr().err.splitlines() if "relay:" in line]
        assert said.startswith("5.1.1 mailslot relay: HTTP 422 rejected (unknown_recipient)")
        listed = await inbox.client.get("/v1/unrouted-deliveries", headers=OPERATOR)
        [logged] = listed.json()["items"]
        assert (logged["reason"], logged["envelope_to"]) == ("unknown_recipient", wrong)
        assert await inbox.posts() == []
