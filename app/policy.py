"""``python -m app postfix-policy``: refuse unknown recipients during the SMTP session.

A Postfix policy-delegation server (Postfix's SMTPD_POLICY_README): Postfix's smtpd connects to
it over TCP (``check_policy_service inet:127.0.0.1:10040`` in ``smtpd_recipient_restrictions``),
sends one request per ``RCPT TO`` as ``name=value`` lines ended by an empty line, and reads one
answer, ``action=...`` and an empty line; a connection carries many requests.

The answer comes from the database, through the service's own routing (``normalise_recipient``,
then ``InboundRepository.routes``), so there is one routing rule:

- a recipient at ``MAILSLOT_INBOUND_DOMAIN`` that no live integration has (never made, or
  deleted): ``550 5.1.1``; the client's MTA tells its sender, and nothing of ours bounces to an
  envelope sender that may be forged (backscatter);
- a live integration's address, enabled or not: ``DUNNO`` (Postfix goes on with its other
  restrictions). Mail to a disabled integration is accepted here so that the delivery log
  records it (``integration_disabled``); the relay then bounces it with 5.2.1;
- another domain: ``DUNNO`` (Postfix decides, e.g. ``reject_unauth_destination`` before this
  check), or ``550 5.1.1`` with ``--reject-other-domains`` when this Postfix receives mail for
  mailslot only;
- the database cannot answer (down, slow): ``DEFER_IF_PERMIT 4.3.0`` (a 450, the client retries);
  never a refusal because we are down.

The requests carry the SMTP client's data, so they are bounded: a line of at most
``MAX_LINE_BYTES``, a request of at most ``MAX_REQUEST_BYTES`` and ``MAX_ATTRIBUTES`` lines.
A request past a bound is answered ``DEFER_IF_PERMIT`` and its connection closed (Postfix opens
another). An idle connection is closed after ``IDLE_SECONDS`` (Postfix's own limit,
``smtpd_policy_service_max_idle``, is 300 s, so Postfix normally closes it first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.config import Settings
from app.db.engine import create_engine
from app.inbound.repository import InboundRepository
from app.inbound.rules import normalise_recipient

logger = logging.getLogger("mailslot.policy")

EX_UNAVAILABLE = 69  # sysexits.h, as every python -m app command
EX_CONFIG = 78
DEFAULT_LISTEN = "127.0.0.1:10040"
MAX_LINE_BYTES = 4096  # Postfix's own SMTP command lines stop at 2048 (line_length_limit)
MAX_REQUEST_BYTES = 32 * 1024
MAX_ATTRIBUTES = 256  # Postfix 3.7 sends about 40
MAX_CONNECTIONS = 512  # one per smtpd process; more are closed at once
IDLE_SECONDS = 330.0
LOOKUP_SECONDS = 10.0  # well under smtpd_policy_service_timeout (100 s)

DUNNO = "DUNNO"
UNKNOWN = "550 5.1.1 Unknown recipient"  # smtpd prefixes "<address>: Recipient address rejected:"
UNAVAILABLE = "DEFER_IF_PERMIT 4.3.0 Recipient lookup unavailable, try again later"
TOO_LARGE = "DEFER_IF_PERMIT 4.3.0 Policy request over its bounds"


class RequestTooLarge(Exception):
    """A line, or the whole request, passed its bound."""


@dataclass(frozen=True)
class PolicyConfig:
    inbound_domain: str
    reject_other_domains: bool = False
    lookup_seconds: float = LOOKUP_SECONDS
    idle_seconds: float = IDLE_SECONDS
    max_connections: int = MAX_CONNECTIONS


class PolicyServer:
    """Answers policy requests from the database; ``start()`` listens, ``close()`` stops."""

    def __init__(self, engine: AsyncEngine, config: PolicyConfig) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        self.config = config
        self.domain = config.inbound_domain.strip().lower().rstrip(".")
        self.server: asyncio.Server | None = None
        self.connections = 0

    async def decide(self, request: Mapping[str, str]) -> str:
        """The action for one request (without ``action=``)."""
        if request.get("request") != "smtpd_access_policy":
            return DUNNO
        address = normalise_recipient(request.get("recipient", ""))
        if address is None:
            return DUNNO  # no recipient (another protocol stage), or not an address
        if address.rpartition("@")[2] != self.domain:
            return UNKNOWN if self.config.reject_other_domains else DUNNO
        try:
            live = await asyncio.wait_for(self._live(address), self.config.lookup_seconds)
        except Exception as exc:  # the database is down or slow, or a bug: never a refusal
            logger.warning("recipient lookup failed (%s): deferring", type(exc).__name__)
            return UNAVAILABLE
        return DUNNO if live else UNKNOWN

    async def _live(self, address: str) -> bool:
        async with self.sessionmaker() as session:
            routes = await InboundRepository(session).routes([address])
        return any(route.live() for route in routes)

    async def start(self, host: str, port: int) -> asyncio.Server:
        self.server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE_BYTES)
        return self.server

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None  # noqa: S101
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
        await self.engine.dispose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections > self.config.max_connections:
                logger.warning("more than %d connections: closing one", self.config.max_connections)
                return
            while True:
                try:
                    request = await asyncio.wait_for(read_request(reader), self.config.idle_seconds)
                except RequestTooLarge:
                    logger.warning("a policy request passed its bounds: deferring, closing")
                    writer.write(answer(TOO_LARGE))
                    await writer.drain()
                    return
                if request is None:
                    return
                writer.write(answer(await self.decide(request)))
                await writer.drain()
        except (TimeoutError, ConnectionError):
            return
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def answer(action: str) -> bytes:
    return f"action={action}\n\n".encode()


async def read_request(reader: asyncio.StreamReader) -> dict[str, str] | None:
    """One request's attributes (the last of a repeated name wins); None at the end of the
    connection. Raises ``RequestTooLarge`` past a bound."""
    attributes: dict[str, str] = {}
    size = lines = 0
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None  # closed, mid-request or between requests
        except asyncio.LimitOverrunError:
            raise RequestTooLarge from None
        size += len(line)
        lines += 1
        if size > MAX_REQUEST_BYTES or lines > MAX_ATTRIBUTES + 1:
            raise RequestTooLarge
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        if not text:
            if attributes:
                return attributes
            continue  # a stray empty line between requests
        name, sep, value = text.partition("=")
        if sep:
            attributes[name.strip()] = value


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=parse_listen(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"the TCP address to listen on; keep it on loopback (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--reject-other-domains",
        action="store_true",
        help="refuse recipients at any other domain too (a Postfix that serves mailslot only)",
    )


async def serve(settings: Settings, args: argparse.Namespace) -> int:
    host, port = args.listen
    if not settings.inbound_domain:
        logger.error("MAILSLOT_INBOUND_DOMAIN is not set")
        return EX_CONFIG
    with contextlib.suppress(ValueError):
        if not ipaddress.ip_address(host).is_loopback:
            logger.warning("listening on %s, not loopback: firewall the port", host)
    server = PolicyServer(
        create_engine(settings.database_url),
        PolicyConfig(settings.inbound_domain, reject_other_domains=args.reject_other_domains),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await server.start(host, port)
        except OSError as exc:
            logger.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
            return EX_UNAVAILABLE
        bound_host, bound_port = server.address
        logger.info("listening on %s:%d for @%s", bound_host, bound_port, server.domain)
        await stop.wait()
    finally:
        await server.close()
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="mailslot postfix-policy: %(message)s")
    return asyncio.run(serve(settings, args))
