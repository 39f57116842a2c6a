"""Hostile input against the real server: MIME bombs and a zip bomb (issue 4, point 4), and
floods that cost memory or block a worker's event loop (issue 10, item 7).

Bombs go to ``/inbound/mime`` over HTTP with basic auth, as an MTA would relay them: nesting
thousands of levels deep, tens of thousands of parts, a 100 KB parameter list in Content-Type,
100,000 recipients (in To, in Cc, and as envelope recipients: query, X-Envelope-To, and the
Mailgun and SendGrid envelope fields), megabyte headers, a body over the request cap. Each must
be refused (``message_too_complex`` in each provider's refusal code; ``413`` over the cap; the
HTTP server's own 4xx for a request line it does not accept at all) in under two seconds at the
client, with no 5xx and no post, while a background sender keeps delivering normal mail that
all succeeds with normal latency. A zip bomb stays an opaque attachment of its compressed size,
byte-identical on download.

The floods (an unsigned Mailgun form of millions of empty fields at 8 MiB and at the 64 MiB request
cap, a 100 MB JSON body to ``/v1`` with and without Content-Length, a SendGrid field in charset
punycode) are measured while they run: each worker's peak RSS growth, the longest ``/healthz``
answer, the answer and how long it took; each must stay under 50 MB and 200 ms, and be answered
401, 413 or the provider's own answer in under two seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import io
import json
import os
import signal
import socket
import statistics
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from tests.inbound.payloads import basic, mailgun_form
from tests.reliability.conftest import TenantFactory
from tests.reliability.harness import (
    HTTP_TIMEOUT,
    SERVER_START_SECONDS,
    Database,
    Server,
    Summary,
    Tenant,
    build_mail,
    multipart,
    send,
)

KiB = 1024
MiB = 1024 * KiB
REFUSAL_SECONDS = 2.0  # DESIGN.md: refused "in well under a second"; the issue allows 2 s
# What the HTTP server itself answers a request line or header section it will not read at all.
SERVER_REFUSALS = {400, 413, 414, 431}
TOO_COMPLEX = "message_too_complex"
# Normal mail flowing while the bombs are sent goes round-robin over this many integrations:
# at 50 a minute each (the production default) that is 500 a minute, several times what one
# sender sending one mail after another gets through while the bombs are sent (27 in a run).
BACKGROUND_INTEGRATIONS = 10


# --- the bombs ----------------------------------------------------------------------------------


def _top(extra: bytes = b"") -> bytes:
    return (
        b"From: Mallory <mallory@example.org>\r\nSubject: bomb\r\nMessage-ID: "
        + make_msgid(domain="example.org").encode()
        + b"\r\n"
        + extra
    )


def deep_multipart(levels: int) -> bytes:
    """``levels`` multiparts, each the only part of the one around it."""
    out = [_top()]
    for i in range(levels):
        out.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\nbottom\r\n")
    out += [b"--b%d--\r\n" % i for i in reversed(range(levels))]
    return b"".join(out)


def deep_messages(levels: int) -> bytes:
    """``levels`` forwarded messages, each inside the one around it."""
    return _top() + b"Content-Type: message/rfc822\r\n\r\n" * levels + b"\r\nbottom\r\n"


def many_parts(count: int) -> bytes:
    head = _top(b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n')
    return head + b"--p\r\n\r\nx\r\n" * count + b"--p--\r\n"


def parameter_list(size: int) -> bytes:
    params = b"".join(b"; p%d=v%d" % (i, i) for i in range(size // 10))[:size]
    return _top(b"Content-Type: multipart/mixed; boundary=b" + params + b"\r\n\r\n--b--\r\n")


def recipients_header(name: bytes, count: int) -> bytes:
    addresses = b", ".join(b"user%d@example.org" % i for i in range(count))
    return _top(name + b": " + addresses + b"\r\nContent-Type: text/plain\r\n\r\nhello\r\n")


def long_header(size: int) -> bytes:
    return _top(b"X-Long: " + b"x" * size + b"\r\n\r\nhello\r\n")


def folded_header(size: int) -> bytes:
    line = b" " + b"y" * 70 + b"\r\n"
    return _top(b"X-Folded: start\r\n" + line * (size // len(line)) + b"\r\nhello\r\n")


def many_header_lines(count: int) -> bytes:
    return _top(b"".join(b"X-H%d: v\r\n" % i for i in range(count)) + b"\r\nhello\r\n")


@dataclass
class Bomb:
    """One hostile request: by default a raw message to ``/inbound/mime`` for ``address``."""

    name: str
    body: bytes
    path: str = "/inbound/mime"
    query: list[tuple[str, str]] | None = None  # None: recipient=address (for /inbound/mime)
    headers: list[tuple[str, str]] = field(default_factory=list)  # default: message/rfc822
    expected: frozenset[int] = frozenset({422})  # /inbound/mime's refusal for good


def bombs(address: str) -> list[Bomb]:
    many = [f"user{i}@example.org" for i in range(100_000)]
    hello = _top(b"Content-Type: text/plain\r\n\r\nhello\r\n")
    mime = [("Content-Type", "message/rfc822"), *basic().items()]
    either = frozenset({422, *SERVER_REFUSALS})  # the app's refusal, or the HTTP server's
    mailgun_fields = {**mailgun_form(address), "recipient": ", ".join([address, *many])}
    sendgrid_body, sendgrid_headers = multipart(
        {
            "envelope": json.dumps({"to": [address, *many], "from": "mallory@example.org"}),
            "from": "Mallory <mallory@example.org>",
            "subject": "bomb",
            "text": "hello",
        },
        [],
    )
    return [
        Bomb("multipart nesting 5,000 deep", deep_multipart(5_000)),
        Bomb("message/rfc822 nesting 20,000 deep", deep_messages(20_000)),
        Bomb("50,000 parts", many_parts(50_000)),
        Bomb("100 KB Content-Type parameter list", parameter_list(100 * KiB)),
        Bomb("100,000 recipients in To", recipients_header(b"To", 100_000)),
        Bomb("100,000 recipients in Cc", recipients_header(b"Cc", 100_000)),
        Bomb("600 recipients in To (under the header cap)", recipients_header(b"To", 600)),
        Bomb("a 1 MiB header line", long_header(MiB)),
        Bomb("a 1 MiB folded header", folded_header(MiB)),
        Bomb("100,000 header lines", many_header_lines(100_000)),
        Bomb(
            "100,000 envelope recipients in the query (3 MB URL)",
            hello,
            query=[("recipient", a) for a in [address, *many]],
            headers=mime,
            expected=either,
        ),
        Bomb(
            "2,000 envelope recipients in the query (70 KB URL)",
            hello,
            query=[("recipient", a) for a in [address, *many[:2_000]]],
            headers=mime,
        ),
        Bomb(
            "100,000 envelope recipients in one X-Envelope-To",
            hello,
            query=[],
            headers=[*mime, ("X-Envelope-To", ", ".join([address, *many]))],
            expected=either,
        ),
        Bomb(
            "100,000 X-Envelope-To headers",
            hello,
            query=[],
            headers=[*mime, *(("X-Envelope-To", a) for a in [address, *many])],
            expected=either,
        ),
        Bomb(
            "100,000 Mailgun recipients",
            urlencode(mailgun_fields).encode(),
            path="/inbound/mailgun",
            query=[],
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            expected=frozenset({406}),
        ),
        Bomb(
            "100,000 SendGrid envelope recipients",
            sendgrid_body,
            path="/inbound/sendgrid",
            query=[],
            headers=[*sendgrid_headers.items(), *basic().items()],
            expected=frozenset({200}),  # SendGrid refusals answer 200 (no retry)
        ),
    ]


# --- sending ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    status: int | None
    reason: str | None
    seconds: float
    error: str | None = None


async def send_bomb(base_url: str, address: str, bomb: Bomb) -> Outcome:
    """POST the bomb on a connection of its own, written by hand: an HTTP client library would
    refuse to send a 3 MB request line at all."""
    query = [("recipient", address)] if bomb.query is None else bomb.query
    target = f"{bomb.path}?{urlencode(query)}" if query else bomb.path
    headers = bomb.headers or [("Content-Type", "message/rfc822"), *basic().items()]
    started = time.monotonic()
    try:
        status, body = await raw_post(base_url, target, headers, bomb.body)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        # The server closed the connection on a request it would not read.
        return Outcome(bomb.name, None, None, time.monotonic() - started, repr(exc))
    elapsed = time.monotonic() - started
    reason = None
    with contextlib.suppress(ValueError, AttributeError):
        reason = json.loads(body).get("reason")
    error = None if reason == TOO_COMPLEX else body[:200].decode("utf-8", "replace")
    return Outcome(bomb.name, status, reason, elapsed, error)


async def raw_post(
    base_url: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> tuple[int, bytes]:
    """One HTTP/1.1 POST; ``(status, body)`` of the answer (the body by its Content-Length)."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        writer.write(body)
        with contextlib.suppress(ConnectionError):  # an early answer may cut the upload short
            await writer.drain()
        async with asyncio.timeout(30):
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            answer = await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return status, answer


async def over_the_cap(base_url: str, address: str, length: int) -> Outcome:
    """A request announcing more than MAX_REQUEST_BYTES: the answer comes before the body."""
    parts = urlsplit(base_url)
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        head = (
            f"POST /inbound/mime?recipient={address} HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\nContent-Type: message/rfc822\r\n"
            f"Authorization: {basic()['Authorization']}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        writer.write(head.encode() + _top(b"\r\n") + b"x" * 64 * KiB)  # then nothing more
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    status = int(status_line.split()[1]) if status_line.startswith(b"HTTP/1.1 ") else None
    return Outcome(
        "a body announced over the request cap", status, None, time.monotonic() - started
    )


@dataclass
class Background:
    """Normal deliveries sent one after another; latency of each, in seconds."""

    tenant: Tenant
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def deliver(self, client: httpx.AsyncClient, index: int) -> None:
        address, integration_id = self.tenant.route(index)  # under the rate limits
        mail = build_mail(
            "mime",
            [address],
            [integration_id],
            attachments=[(f"normal-{index}.txt", b"normal mail %d\n" % index * 20)],
        )
        started = time.monotonic()
        attempt = await send(client, self.tenant.base_url, mail)
        self.latencies.append(time.monotonic() - started)
        if not attempt.posted:
            self.failures.append(f"{attempt.status_code} {attempt.status} {attempt.error}")

    async def run(self, client: httpx.AsyncClient, start: int) -> None:
        index = start
        while not self.stop.is_set():
            await self.deliver(client, index)
            index += 1


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


# --- the tests ----------------------------------------------------------------------------------


async def test_mime_bombs_are_refused_fast_while_mail_keeps_flowing(
    server: Server, tenant: TenantFactory, db: Database, summary: Summary
) -> None:
    target = await tenant()  # the bombs' recipient: must end with no post
    # the background sender's: mail one after another for as long as the bombs take, spread
    # over enough integrations to stay under the production rate limits
    flowing = await tenant(integrations=BACKGROUND_INTEGRATIONS)
    background = Background(flowing)
    outcomes: list[Outcome] = []
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        for i in range(10):  # the latency of normal mail on an idle server
            await background.deliver(client, i)
        baseline = list(background.latencies)
        background.latencies.clear()
        sender = asyncio.create_task(background.run(client, 10))
        try:
            for bomb in bombs(target.address):
                outcomes.append(await send_bomb(server.base_url, target.address, bomb))
            outcomes.append(await over_the_cap(server.base_url, target.address, 100 * MiB))
            await asyncio.sleep(0.3)  # a few more normal mails after the last bomb
        finally:
            background.stop.set()
            await sender
    report = "\n".join(
        f"{o.name}: {o.status} {o.reason} {o.seconds:.3f}s {o.error or ''}"[:300] for o in outcomes
    )
    expected: dict[str, frozenset[int]] = {b.name: b.expected for b in bombs(target.address)}
    expected["a body announced over the request cap"] = frozenset({413})
    for outcome in outcomes:
        assert outcome.status in expected[outcome.name], report
        if outcome.status in (422, 406, 200):  # answered by the service: our refusal
            assert outcome.reason == TOO_COMPLEX, report
        assert outcome.seconds < REFUSAL_SECONDS, report

    # Nothing posted for a bomb; every bomb the service read is in its delivery log as refused.
    posts = await db.count(
        "SELECT count(*) FROM posts WHERE platform_id = :p", p=target.platform_id
    )
    assert posts == 0, report
    refused = await db.count(
        "SELECT count(*) FROM deliveries WHERE platform_id = :p AND status = 'rejected' "
        "AND reason = 'message_too_complex'",
        p=target.platform_id,
    )
    assert refused == sum(1 for o in outcomes if o.reason == TOO_COMPLEX), report

    # The background mail all went through, at the latency it has on an idle server.
    summary.record("hostile: normal mails sent while the bombs were", len(background.latencies))
    assert not background.failures, background.failures
    assert background.latencies, "no normal mail was sent while the bombs were"
    limit = max(1.0, 5 * p95(baseline))
    assert max(background.latencies) < limit, (baseline, background.latencies, report)
    delivered = await db.count(
        "SELECT count(*) FROM posts WHERE platform_id = :p", p=flowing.platform_id
    )
    assert delivered == len(baseline) + len(background.latencies)

    summary.record("hostile: bombs refused", len(outcomes))
    summary.record(
        "hostile: bombs answered 5xx", sum(1 for o in outcomes if (o.status or 0) >= 500)
    )
    summary.record("hostile: bombs posted", posts)
    summary.record(
        "hostile: slowest bomb refusal (ms)", round(1000 * max(o.seconds for o in outcomes))
    )
    summary.record("hostile: normal deliveries during bombs", len(background.latencies))
    summary.record("hostile: normal deliveries failed", len(background.failures))
    summary.record(
        "hostile: normal delivery median during bombs (ms)",
        round(1000 * statistics.median(background.latencies)),
    )
    summary.record(
        "hostile: normal delivery median idle (ms)", round(1000 * statistics.median(baseline))
    )


def zip_bomb(size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("zeros.bin", b"\0" * size)
    return buffer.getvalue()


async def test_a_zip_bomb_stays_an_opaque_attachment(
    server: Server, tenant: TenantFactory, db: Database, summary: Summary
) -> None:
    target = await tenant()
    bomb = zip_bomb(10 * MiB)
    assert len(bomb) < 64 * KiB
    message = EmailMessage()
    message["From"] = "Mallory <mallory@example.org>"
    message["To"] = target.address
    message["Subject"] = "quarterly figures"
    message["Message-ID"] = make_msgid(domain="example.org")
    message.set_content("see attached")
    message.add_attachment(bomb, maintype="application", subtype="zip", filename="figures.zip")
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        started = time.monotonic()
        r = await client.post(
            f"{server.base_url}/inbound/mime",
            params={"recipient": target.address},
            content=message.as_bytes(),
            headers={"Content-Type": "message/rfc822", **basic()},
        )
        elapsed = time.monotonic() - started
        assert r.status_code == 200, r.text
        (post_id,) = r.json()["post_ids"]
        r = await client.get(f"{server.base_url}/v1/posts/{post_id}", headers=target.admin)
        assert r.status_code == 200, r.text
        (attachment,) = r.json()["attachments"]
        assert attachment["filename"] == "figures.zip"
        assert attachment["content_type"] == "application/zip"
        assert attachment["size"] == len(bomb)
        assert attachment["sha256"] == hashlib.sha256(bomb).hexdigest()
        download = await client.get(
            f"{server.base_url}/v1/attachments/{attachment['id']}/content", headers=target.admin
        )
        assert download.status_code == 200
        assert download.content == bomb
        assert download.headers["content-length"] == str(len(bomb))
        url = attachment["url"]
        signed = await client.get(url if url.startswith("http") else f"{server.base_url}{url}")
        assert signed.status_code == 200
        assert signed.content == bomb
    stored = await db.count(
        "SELECT count(*) FROM attachments WHERE platform_id = :p AND size = :n",
        p=target.platform_id,
        n=len(bomb),
    )
    assert stored == 1
    blob = server.blob_dir / "objects" / attachment["sha256"][:2] / attachment["sha256"][2:4]
    assert (blob / attachment["sha256"]).stat().st_size == len(bomb)
    summary.record("hostile: zip bombs kept opaque", 1)
    summary.record("hostile: zip bomb stored bytes", len(bomb))
    summary.record("hostile: zip bomb delivery (ms)", round(1000 * elapsed))


# --- floods: memory and a blocked event loop (issue 10) -----------------------------------------
#
# Each attack goes to the shared server (2 workers, production settings) while every worker's RSS
# is sampled every 20 ms and /healthz is polled on a kept-alive connection to each worker (a
# connection is pinned to a worker by its port in the worker's socket table), so a worker whose
# event loop is blocked shows whichever worker the attack landed on. Bodies are generated as they
# are sent, never held whole here.

RSS_GROWTH_LIMIT = 50 * 1_000_000  # bytes: peak RSS during the attack minus RSS just before
HEALTHZ_LIMIT = 0.2  # seconds: the longest /healthz answer during the attack
SAMPLE_SECONDS = 0.02
POLL_PAUSE_SECONDS = 0.01
ATTACK_SECONDS = 30.0  # the longest an attack may take to be answered at all
SETTLE_SECONDS = 0.3  # measured on after the answer: work the server does after answering
# A worker this much over its RSS before the attack is killed: an unfixed server would take the
# machine's memory with it (4 million empty fields took one worker from 95 MB to 3.5 GB).
RSS_GUARD = 1024 * MiB
CHUNK = 256 * KiB
# As punycode, this decodes in time quadratic in its length (600 KB: seconds of a blocked worker).
PUNYCODE_TEXT = "a" * (600 * 1000)


def repeated(
    unit: bytes, total: int, *, prefix: bytes = b"", suffix: bytes = b""
) -> Callable[[], Iterator[bytes]]:
    """A body of ``total`` bytes, ``prefix`` + ``unit`` repeated + ``suffix``, in chunks."""
    middle = total - len(prefix) - len(suffix)
    assert middle >= 0, (total, unit)
    assert middle % len(unit) == 0, (total, unit)
    block = unit * (CHUNK // len(unit))

    def chunks() -> Iterator[bytes]:
        yield prefix
        left = middle
        while left > 0:
            piece = block[:left]
            left -= len(piece)
            yield piece
        yield suffix

    return chunks


@dataclass
class Flood:
    """One attack: ``body()`` yields the request body; sent chunked when ``length`` is None."""

    name: str
    path: str
    headers: list[tuple[str, str]]
    body: Callable[[], Iterator[bytes]]
    length: int | None
    expected: frozenset[int]


def floods(address: str) -> dict[str, Flood]:
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    json_body = [("Content-Type", "application/json")]
    array = {"prefix": b"[ ", "suffix": b"0]"}
    sendgrid_body, sendgrid_headers = multipart(
        {
            "envelope": json.dumps({"to": [address], "from": "mallory@example.org"}),
            "from": "Mallory <mallory@example.org>",
            "subject": "punycode",
            "text": PUNYCODE_TEXT,
            "charsets": json.dumps({"text": "punycode"}),
        },
        [],
    )
    # Unsigned: 401, or 413 past the form bounds before the signature arrived (never a refusal,
    # which would mean an unauthenticated body was read as a mail).
    mailgun = frozenset({401, 413})
    v1 = frozenset({401, 413})
    found = [
        Flood(
            "mailgun unsigned 8 MiB a&a&...",
            "/inbound/mailgun",
            form,
            repeated(b"a&", 8 * MiB),
            8 * MiB,
            mailgun,
        ),
        Flood(
            "mailgun unsigned 64 MiB a&a&... (the request cap)",
            "/inbound/mailgun",
            form,
            repeated(b"a&", 64 * MiB),
            64 * MiB,
            mailgun,
        ),
        Flood(
            "/v1/groups 100 MB JSON array, Content-Length",
            "/v1/groups",
            json_body,
            repeated(b"0,", 100_000_000, **array),
            100_000_000,
            v1,
        ),
        Flood(
            "/v1/groups 100 MB JSON array, chunked",
            "/v1/groups",
            json_body,
            repeated(b"0,", 100_000_000, **array),
            None,
            v1,
        ),
        Flood(
            "sendgrid 600 KB text in charset punycode",
            "/inbound/sendgrid",
            [*sendgrid_headers.items(), *basic().items()],
            lambda: iter([sendgrid_body]),
            len(sendgrid_body),
            frozenset({200}),  # posted with the text decoded safely, or refused (200 too)
        ),
    ]
    return {flood.name: flood for flood in found}


FLOODS = list(floods("nobody@example.org"))


@dataclass
class Answer:
    status: int | None
    body: bytes
    seconds: float
    error: str | None = None


def flood_request(base_url: str, flood: Flood) -> Answer:
    """POST the flood on a connection of its own, the body sent from another thread while this
    one reads the answer, as an HTTP client does: an early answer (a 413 before the body is read,
    the connection closed) ends the upload, and the answer is still read."""
    parts = urlsplit(base_url)
    framing = (
        [("Transfer-Encoding", "chunked")]
        if flood.length is None
        else [("Content-Length", str(flood.length))]
    )
    lines = [f"POST {flood.path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in [*flood.headers, *framing]]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    started = time.monotonic()
    sock = socket.create_connection((parts.hostname, parts.port), timeout=ATTACK_SECONDS)
    answered = threading.Event()

    def upload() -> None:
        with contextlib.suppress(OSError):  # the server stopped reading: it answered, or closed
            sock.sendall(head)
            for chunk in flood.body():
                if answered.is_set():
                    return
                if chunk:
                    sock.sendall(
                        b"%x\r\n%s\r\n" % (len(chunk), chunk) if flood.length is None else chunk
                    )
            if flood.length is None:
                sock.sendall(b"0\r\n\r\n")

    sender = threading.Thread(target=upload, name="flood", daemon=True)
    sender.start()
    status: int | None = None
    body = b""
    error = None
    try:
        with sock.makefile("rb") as answer:
            status = int(answer.readline(1024).split()[1])
            length = None
            while (line := answer.readline(65536)) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = answer.read(length) if length is not None else answer.read()
    except (OSError, ValueError, IndexError) as exc:
        error = repr(exc)
    seconds = time.monotonic() - started
    answered.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # a send still blocked ends now
    sender.join(timeout=5.0)
    sock.close()
    return Answer(status, body, seconds, error)


class Poller:
    """GET /healthz again and again on one kept-alive connection (a thread of its own)."""

    def __init__(self, conn: http.client.HTTPConnection, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.longest = 0.0
        self.polls = 0
        self.errors: list[str] = []
        self.in_flight: float | None = None  # when the pending request was sent
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"healthz-{pid}", daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            started = self.in_flight = time.monotonic()
            try:
                self.conn.request("GET", "/healthz")
                answer = self.conn.getresponse()
                answer.read()
                if answer.status != 200:
                    self.errors.append(f"/healthz answered {answer.status}")
            except (OSError, http.client.HTTPException) as exc:
                if not self.stop.is_set():
                    self.errors.append(repr(exc))
                self.conn.close()  # the next request connects again (to either worker)
            finally:
                self.in_flight = None
            self.longest = max(self.longest, time.monotonic() - started)
            self.polls += 1
            self.stop.wait(POLL_PAUSE_SECONDS)

    def finish(self) -> None:
        """Stop; a request still unanswered after a moment counts with its time so far."""
        self.stop.set()
        self.thread.join(timeout=2.0)
        pending = self.in_flight
        if pending is not None:
            self.longest = max(self.longest, time.monotonic() - pending)
            self.errors.append(f"/healthz unanswered after {time.monotonic() - pending:.1f}s")
        self.conn.close()
        self.thread.join(timeout=5.0)


def pin_connections(server: Server, seconds: float = 10.0) -> dict[int, http.client.HTTPConnection]:
    """One kept-alive connection to each worker (which worker accepted a connection: the one
    whose socket table holds our port)."""
    parts = urlsplit(server.base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    pinned: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = server.worker_pids()
        if len(pids) == server.workers and all(pid in pinned for pid in pids):
            return pinned
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=ATTACK_SECONDS)
        try:
            conn.request("GET", "/healthz")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            conn.close()
            time.sleep(0.1)
            continue
        assert conn.sock is not None
        port = conn.sock.getsockname()[1]
        holder = None
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                for c in psutil.Process(pid).net_connections(kind="tcp"):
                    if c.raddr and c.raddr.port == port and c.laddr.port == parts.port:
                        holder = pid
        if holder is None or holder in pinned:
            conn.close()
        else:
            pinned[holder] = conn
    for conn in pinned.values():
        conn.close()
    raise AssertionError(f"could not reach every worker of {server.name}: {sorted(pinned)}")


def rss(pid: int) -> int | None:
    with contextlib.suppress(psutil.Error):
        return int(psutil.Process(pid).memory_info().rss)
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's RSS high-water mark of ``pid`` to its RSS now (Linux; needs the right
    to write /proc/PID/clear_refs): what a 20 ms sampler could miss, the kernel does not."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss(pid: int) -> int | None:
    """The kernel's RSS high-water mark of ``pid`` (VmHWM), in bytes."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


class Watch:
    """While an attack runs: every worker's RSS every 20 ms (and the kernel's high-water mark at
    the end), /healthz on each worker."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.before: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.killed: list[int] = []  # workers past RSS_GUARD
        self.high_water: set[int] = set()  # workers whose RSS high-water mark was reset
        self.pollers: list[Poller] = []
        self.stop = threading.Event()
        self.sampler = threading.Thread(target=self.sample, name="rss", daemon=True)

    def __enter__(self) -> Watch:
        connections = pin_connections(self.server)
        for pid in connections:
            size = rss(pid)
            assert size is not None, f"worker {pid} is gone"
            self.before[pid] = self.peak[pid] = size
            if reset_peak_rss(pid):
                self.high_water.add(pid)
        self.pollers = [Poller(conn, pid) for pid, conn in connections.items()]
        self.sampler.start()
        for poller in self.pollers:
            poller.thread.start()
        return self

    def sample(self) -> None:
        while not self.stop.is_set():
            for pid, before in self.before.items():
                size = rss(pid)
                if size is None:
                    continue
                self.peak[pid] = max(self.peak[pid], size)
                if size - before > RSS_GUARD and pid not in self.killed:
                    self.killed.append(pid)
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            self.stop.wait(SAMPLE_SECONDS)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sampler.join(timeout=5.0)
        for poller in self.pollers:
            poller.finish()
        for pid in self.high_water:
            mark = peak_rss(pid)
            if mark is not None and pid not in self.killed:
                self.peak[pid] = max(self.peak[pid], mark)

    @property
    def rss_growth(self) -> int:
        return max(self.peak[pid] - before for pid, before in self.before.items())

    @property
    def longest_healthz(self) -> float:
        return max(p.longest for p in self.pollers)

    @property
    def healthz_errors(self) -> list[str]:
        return [f"worker {p.pid}: {e}" for p in self.pollers for e in p.errors]

    @property
    def polls(self) -> int:
        return sum(p.polls for p in self.pollers)


def recover(server: Server) -> None:
    """Every worker alive and answering (a worker killed by the guard is replaced)."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while len(server.worker_pids()) < server.workers and time.monotonic() < deadline:
        time.sleep(0.1)
    pin_connections(server, seconds=max(1.0, deadline - time.monotonic()))


@pytest.mark.parametrize("name", FLOODS)
async def test_flood_costs_no_memory_and_blocks_no_worker(
    name: str, server: Server, tenant: TenantFactory, db: Database, summary: Summary
) -> None:
    target = await tenant()
    flood = floods(target.address)[name]
    await asyncio.to_thread(recover, server)
    with Watch(server) as watch:
        answer = await asyncio.to_thread(flood_request, server.base_url, flood)
        await asyncio.sleep(SETTLE_SECONDS)
    status = None
    with contextlib.suppress(ValueError, AttributeError):
        status = json.loads(answer.body).get("status")
    posted = await db.count(
        "SELECT count(*) FROM posts WHERE platform_id = :p", p=target.platform_id
    )
    growth_mb = round(watch.rss_growth / 1_000_000, 1)
    longest_ms = round(1000 * watch.longest_healthz)
    figures = (
        f"{name}: answered {answer.status} {status or ''} in {answer.seconds:.3f}s; "
        f"peak RSS growth {growth_mb} MB (before {sorted(watch.before.values())}, peak "
        f"{sorted(watch.peak.values())}, kernel high-water mark of {len(watch.high_water)} "
        f"workers); longest /healthz {longest_ms} ms over {watch.polls} "
        f"polls; posts {posted}; {answer.error or ''} {answer.body[:200]!r}"
    )
    summary.record(f"hostile flood: {name}: peak RSS growth (MB)", growth_mb)
    summary.record(f"hostile flood: {name}: longest /healthz (ms)", longest_ms)
    summary.record(f"hostile flood: {name}: answer (HTTP status)", answer.status or 0)
    summary.record(f"hostile flood: {name}: duration (ms)", round(1000 * answer.seconds))
    if flood.path == "/inbound/sendgrid":
        summary.record(f"hostile flood: {name}: posts", posted)
    await asyncio.to_thread(recover, server)  # the next test finds every worker answering

    assert not watch.killed, f"workers killed past {RSS_GUARD} bytes of growth: {figures}"
    assert answer.error is None, figures
    assert answer.status in flood.expected, figures
    assert answer.seconds < REFUSAL_SECONDS, figures
    assert watch.rss_growth < RSS_GROWTH_LIMIT, figures
    assert watch.longest_healthz < HEALTHZ_LIMIT, figures
    assert not watch.healthz_errors, (watch.healthz_errors, figures)
    if flood.path == "/inbound/sendgrid":
        # A codec that is no mail charset is refused: the field reads as UTF-8 and is posted.
        assert status == "accepted", figures
        texts = await db.rows("SELECT text FROM posts WHERE platform_id = :p", p=target.platform_id)
        assert texts == [(PUNYCODE_TEXT,)], figures
    else:
        assert posted == 0, figures
