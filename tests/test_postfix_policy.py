"""The Postfix policy server over real TCP, answering from the test database."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.db.engine import create_engine
from app.policy import MAX_LINE_BYTES, MAX_REQUEST_BYTES, PolicyConfig, PolicyServer, parse_listen
from tests import databases
from tests.auth import bearer
from tests.factories import World

DOMAIN = "in.example.com"
UNKNOWN = "action=550 5.1.1 Unknown recipient"
DEFER = "action=DEFER_IF_PERMIT 4.3.0"


def request(recipient: str, **extra: str) -> bytes:
    """A request as Postfix 3.7's smtpd sends it at RCPT TO (most attributes)."""
    attributes = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": "192.0.2.7",
        "client_name": "mail.example.org",
        "reverse_client_name": "mail.example.org",
        "helo_name": "mail.example.org",
        "sender": "alice@example.org",
        "recipient": recipient,
        "recipient_count": "0",
        "queue_id": "",
        "instance": "1a2b.6789abcd.1234.0",
        "size": "1234",
        "etrn_domain": "",
        "stress": "",
        "sasl_method": "",
        "ccert_subject": "",
        "encryption_protocol": "TLSv1.3",
        "encryption_cipher": "TLS_AES_256_GCM_SHA384",
        "server_address": "127.0.0.1",
        "server_port": "25",
        "compatibility_level": "3.6",
        "mail_version": "3.7.11",
        **extra,
    }
    return "".join(f"{k}={v}\n" for k, v in attributes.items()).encode() + b"\n"


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def ask(self, data: bytes) -> str:
        self.writer.write(data)
        await self.writer.drain()
        return await self.answer()

    async def answer(self) -> str:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), 10)
        return raw.decode().removesuffix("\n\n")

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""


async def start(database_url: str, **config: Any) -> PolicyServer:
    server = PolicyServer(create_engine(database_url), PolicyConfig(DOMAIN, **config))
    await server.start("127.0.0.1", 0)
    return server


@pytest.fixture
async def policy(database_url: str) -> AsyncIterator[PolicyServer]:
    server = await start(database_url)
    try:
        yield server
    finally:
        await server.close()


async def connect(server: PolicyServer) -> Client:
    host, port = server.address
    return Client(*await asyncio.open_connection(host, port))


@pytest.fixture
async def addresses(client: httpx.AsyncClient) -> dict[str, str]:
    """Live, disabled and deleted integrations' addresses (committed: the app fixture's)."""
    world = World(client)
    await world.platform("p1")
    group = await world.group("p1")
    live = await world.integration(group, "Live")
    disabled = await world.integration(group, "Disabled")
    deleted = await world.integration(group, "Deleted")
    r = await client.patch(
        f"/v1/integrations/{disabled['id']}", json={"enabled": False}, headers=bearer("root")
    )
    assert r.status_code == 200, r.text
    await world.delete_integration(deleted["id"])
    return {
        "live": live["address"],
        "disabled": disabled["address"],
        "deleted": deleted["address"],
    }


class TestRecipients:
    async def test_a_live_address_is_left_to_postfix(
        self, policy: PolicyServer, addresses: dict[str, str]
    ) -> None:
        c = await connect(policy)
        assert await c.ask(request(addresses["live"])) == "action=DUNNO"

    async def test_case_and_a_tag_and_brackets_route_as_the_service_routes(
        self, policy: PolicyServer, addresses: dict[str, str]
    ) -> None:
        local, _, domain = addresses["live"].partition("@")
        c = await connect(policy)
        assert await c.ask(request(f"<{local.upper()}+news@{domain.upper()}>")) == "action=DUNNO"

    async def test_an_unknown_address_at_our_domain_is_refused(
        self, policy: PolicyServer, addresses: dict[str, str]
    ) -> None:
        c = await connect(policy)
        assert await c.ask(request(f"nobody.x1y2@{DOMAIN}")) == UNKNOWN

    async def test_a_deleted_integrations_address_is_unknown(
        self, policy: PolicyServer, addresses: dict[str, str]
    ) -> None:
        c = await connect(policy)
        assert await c.ask(request(addresses["deleted"])) == UNKNOWN

    async def test_a_disabled_integration_is_accepted_so_that_the_log_records_it(
        self, policy: PolicyServer, addresses: dict[str, str]
    ) -> None:
        c = await connect(policy)
        assert await c.ask(request(addresses["disabled"])) == "action=DUNNO"

    async def test_another_domain_is_left_to_postfix(
        self, policy: PolicyServer, addresses: dict[str, str]
    ) -> None:
        local = addresses["live"].partition("@")[0]
        c = await connect(policy)
        assert await c.ask(request(f"{local}@in.example.org")) == "action=DUNNO"
        assert await c.ask(request(f"{local}@sub.{DOMAIN}")) == "action=DUNNO"

    async def test_another_domain_is_refused_when_configured(
        self, database_url: str, addresses: dict[str, str]
    ) -> None:
        server = await start(database_url, reject_other_domains=True)
        try:
            c = await connect(server)
            local = addresses["live"].partition("@")[0]
            assert await c.ask(request(f"{local}@in.example.org")) == UNKNOWN
            assert await c.ask(request(addresses["live"])) == "action=DUNNO"
        finally:
            await server.close()

    @pytest.mark.parametrize(
        "data",
        [
            request("", protocol_state="DATA"),  # no recipient at this stage
            request("postmaster"),  # not an address
            request(f"nobody@{DOMAIN}", request="something_else"),
        ],
    )
    async def test_requests_without_an_address_of_ours_are_left_to_postfix(
        self, policy: PolicyServer, data: bytes
    ) -> None:
        c = await connect(policy)
        assert await c.ask(data) == "action=DUNNO"


class TestProtocol:
    async def test_one_connection_carries_many_requests(
        self, policy: PolicyServer, addresses: dict[str, str]
    ) -> None:
        c = await connect(policy)
        for _ in range(3):
            assert await c.ask(request(addresses["live"])) == "action=DUNNO"
            assert await c.ask(request(f"nobody@{DOMAIN}")) == UNKNOWN

    async def test_pipelined_requests_are_answered_in_order(
        self, policy: PolicyServer, addresses: dict[str, str]
    ) -> None:
        c = await connect(policy)
        c.writer.write(request(f"nobody@{DOMAIN}") + request(addresses["live"]))
        assert await c.answer() == UNKNOWN
        assert await c.answer() == "action=DUNNO"

    async def test_a_request_split_across_packets_is_read_whole(
        self, policy: PolicyServer, addresses: dict[str, str]
    ) -> None:
        c = await connect(policy)
        data = request(f"nobody@{DOMAIN}")
        for i in range(0, len(data), 7):
            c.writer.write(data[i : i + 7])
            await c.writer.drain()
            await asyncio.sleep(0)
        assert await c.answer() == UNKNOWN

    async def test_an_over_long_line_is_deferred_and_the_connection_closed(
        self, policy: PolicyServer
    ) -> None:
        c = await connect(policy)
        huge = b"helo_name=" + b"x" * (MAX_LINE_BYTES + 10) + b"\n"
        answer = await c.ask(huge + request(f"nobody@{DOMAIN}"))
        assert answer.startswith(DEFER)
        assert await c.closed()

    async def test_an_over_large_request_is_deferred_and_the_connection_closed(
        self, policy: PolicyServer
    ) -> None:
        c = await connect(policy)
        line = b"x_attribute=" + b"y" * 1000 + b"\n"
        many = line * (MAX_REQUEST_BYTES // len(line) + 1)
        answer = await c.ask(many + request(f"nobody@{DOMAIN}"))
        assert answer.startswith(DEFER)
        assert await c.closed()

    async def test_too_many_attributes_are_deferred(self, policy: PolicyServer) -> None:
        c = await connect(policy)
        answer = await c.ask(b"a=b\n" * 1000 + request(f"nobody@{DOMAIN}"))
        assert answer.startswith(DEFER)
        assert await c.closed()

    async def test_an_idle_connection_is_closed(self, database_url: str) -> None:
        server = await start(database_url, idle_seconds=0.2)
        try:
            c = await connect(server)
            assert await c.closed()
        finally:
            await server.close()

    async def test_connections_past_the_cap_are_closed(
        self, database_url: str, addresses: dict[str, str]
    ) -> None:
        server = await start(database_url, max_connections=1)
        try:
            first = await connect(server)
            assert await first.ask(request(addresses["live"])) == "action=DUNNO"
            assert await (await connect(server)).closed()
            assert await first.ask(request(addresses["live"])) == "action=DUNNO"
        finally:
            await server.close()

    async def test_a_client_that_leaves_mid_request_does_not_stop_the_server(
        self, policy: PolicyServer, addresses: dict[str, str]
    ) -> None:
        c = await connect(policy)
        c.writer.write(b"request=smtpd_access_policy\nrecipient=")
        await c.writer.drain()
        c.writer.close()
        c = await connect(policy)
        assert await c.ask(request(addresses["live"])) == "action=DUNNO"


class TestDatabaseDown:
    async def test_a_lookup_that_fails_defers_never_refuses(
        self, database_url: str, tmp_path: Path
    ) -> None:
        if databases.kind() == "sqlite":
            broken = tmp_path / "broken.db"
            broken.write_bytes(b"this is not a database" * 100)
            url = f"sqlite:///{broken}"
        else:
            with socket.socket() as sock:  # a port nothing listens on
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            url = f"postgresql://postgres@127.0.0.1:{port}/test"
        server = await start(url)
        try:
            c = await connect(server)
            answer = await c.ask(request(f"nobody@{DOMAIN}"))
            assert answer.startswith(DEFER), answer
            # Other domains need no lookup; the connection stays usable.
            assert await c.ask(request("someone@example.org")) == "action=DUNNO"
        finally:
            await server.close()

    async def test_a_slow_lookup_defers(self, database_url: str) -> None:
        server = await start(database_url, lookup_seconds=0.1)

        async def slow(address: str) -> bool:
            await asyncio.sleep(5)
            return True

        server._live = slow  # type: ignore[method-assign]
        try:
            c = await connect(server)
            assert (await c.ask(request(f"nobody@{DOMAIN}"))).startswith(DEFER)
        finally:
            await server.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:10040", ("127.0.0.1", 10040)), ("[::1]:0", ("::1", 0))],
)
def test_listen_address(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["10040", "127.0.0.1", "127.0.0.1:http", "h:70000"])
def test_bad_listen_address(value: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_listen(value)


async def test_the_command_serves_until_sigterm(
    database_url: str, addresses: dict[str, str], tmp_path: Path
) -> None:
    """``python -m app postfix-policy`` as a service runs it: the settings from the environment,
    the bound address logged, a clean exit on SIGTERM."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MAILSLOT_ENVIRONMENT": "development",
        "MAILSLOT_DATABASE_URL": database_url,
        "MAILSLOT_INBOUND_DOMAIN": DOMAIN,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "postfix-policy",
        "--listen",
        "127.0.0.1:0",
        env=environment,
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        found = re.search(r"listening on 127\.0\.0\.1:(\d+) for @in\.example\.com", line)
        assert found, line
        reader, writer = await asyncio.open_connection("127.0.0.1", int(found[1]))
        c = Client(reader, writer)
        assert await c.ask(request(f"nobody@{DOMAIN}")) == UNKNOWN
        assert await c.ask(request(addresses["live"])) == "action=DUNNO"
        writer.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
