"""``python -m bench``: the service and the baseline under the same wrk load, in turns.

Starts a PostgreSQL cluster of its own (the reliability harness's), the service twice (with its
production defaults, rate limits included, and with rate limits off) and the baseline, each
under uvicorn with 2 workers, creates 1,000 integrations on 10 platforms, replays pre-signed
Mailgun mails whose recipients rotate over those integrations with wrk over 127.0.0.1 (16
connections), and prints one table. Every figure is measured in this run.
"""

# ruff: noqa: S603, T201
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]

from app.config import DEFAULT_RATE_LIMITS, parse_rate_limits
from app.db.repository import encode_cursor
from bench import payloads
from tests.inbound.payloads import MAILGUN_KEY
from tests.reliability.harness import (
    ROOT,
    VENV_BIN,
    Cluster,
    Server,
    Tenant,
    create_tenant,
    server_env,
)

CONNECTIONS = 16
THREADS = 2
MIB = 1 << 20
MAX_REQUEST_BYTES = 16 * MIB
MAX_ATTACHMENT_BYTES = 5 * MIB
SMALL_SECONDS = float(os.environ.get("BENCH_SMALL_SECONDS", "10"))
ATTACH_SECONDS = float(os.environ.get("BENCH_ATTACH_SECONDS", "20"))
SEED_POSTS = int(os.environ.get("BENCH_SEED_POSTS", "1000000"))
SOAK_SECONDS = float(os.environ.get("BENCH_SOAK_SECONDS", "60"))
# BENCH_ONLY=small (or attach): only that payload's turns, no other check (a quick look).
ONLY = os.environ.get("BENCH_ONLY", "")
# The load's recipients rotate over this many integrations, spread evenly over the platforms.
PLATFORMS = int(os.environ.get("BENCH_PLATFORMS", "10"))
INTEGRATIONS = int(os.environ.get("BENCH_INTEGRATIONS", "1000"))
HERE = Path(__file__).resolve().parent
PRODUCTION = "service"  # production defaults, rate limits included: these targets decide
NO_LIMITS = "service-nolimit"  # the same service with MAILSLOT_RATE_LIMITS="": informational
# The baseline that also sanitises the HTML (nh3), small payload only: informational. The
# service must sanitise before it stores (DESIGN.md); the baseline does not.
SANITISING = "baseline-nh3"


class Baseline(Server):
    """``uvicorn bench.baseline:app --workers 2``, managed like the harness's servers."""

    def start(self) -> Server:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "uvicorn"), "bench.baseline:app", "--workers", str(self.workers),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.wait_ready(self.workers)
        return self


class RssSampler:
    """Peak RSS per worker and worker CPU, sampled every 0.1 s while running."""

    def __init__(self, server: Server) -> None:
        self.pids = server.worker_pids()
        self.procs = [psutil.Process(p) for p in self.pids]
        self.samples: list[tuple[float, int]] = []  # (time, max rss over workers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = 0
            for proc in self.procs:
                with contextlib.suppress(psutil.Error):
                    rss = max(rss, proc.memory_info().rss)
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(0.1)

    def cpu(self) -> float:
        total = 0.0
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def __enter__(self) -> RssSampler:
        self.cpu_start = self.cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_used = self.cpu() - self.cpu_start

    @property
    def peak(self) -> int:
        return max((s for _, s in self.samples), default=0)


@dataclass
class Turn:
    payload: str
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float
    gen_cpu: float  # wrk's CPU, % of one core
    server_cpu: float  # the two workers' CPU, % of one core
    reused: int
    ok: int  # answers 2xx
    limited: int  # answers 429
    other: int  # any other answer that is not 2xx
    first_other: int  # the first such status (0: none)
    unanswered: int  # requests sent without an answer when wrk stopped (at most one a connection)
    rows: int  # posts (service) or rows (baseline) written during the turn
    rss_samples: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class Load:
    """The integration addresses the load rotates over, continuing from one turn to the next."""

    addresses: list[str]
    next: int = 0


def settled(count: Callable[[], int], quiet: float = 0.3, seconds: float = 10.0) -> int:
    """``count()`` once it has stopped changing (requests still being written after wrk)."""
    deadline = time.monotonic() + seconds
    last = count()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = count()
        if now == last:
            return now
        last = now
    return last


def run_wrk(
    server: Server, payload: str, template: bytes, ctype: str, seconds: float, count: int,
    work: Path, load: Load, rows: Callable[[], int],
) -> Turn:  # fmt: skip
    tpl = work / f"{payload}.tpl"
    if not tpl.exists():
        tpl.write_bytes(template)
    values = work / f"values-{uuid.uuid4().hex[:8]}.tsv"
    payloads.write_values(
        values, count, load.addresses, urlencoded=payload == "small", start=load.next
    )
    profile = os.environ.get("BENCH_PYSPY")
    spy = None
    if profile and server.name == PRODUCTION and seconds > 2 and not Path(profile).exists():
        spy = subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "--pid", str(server.worker_pids()[0]),
             "--duration", str(int(seconds)), "--format", "raw", "--output", profile,
             "--nonblocking", "--rate", os.environ.get("BENCH_PYSPY_RATE", "100")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    rows_before = rows()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with RssSampler(server) as sampler:
        started = time.monotonic()
        result = subprocess.run(
            [shutil.which("wrk") or "wrk", "-t", str(THREADS), "-c", str(CONNECTIONS),
             "-d", f"{int(seconds)}s", "--timeout", "30s", "-s", str(HERE / "replay.lua"),
             f"{server.base_url}/inbound/mailgun", "--", str(tpl), str(values), str(THREADS),
             ctype],
            capture_output=True, text=True, timeout=seconds + 120, check=False,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    if spy is not None:
        spy.wait(timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    values.unlink()
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {result.stdout}\n{result.stderr}")
    data = json.loads(line.removeprefix("BENCHJSON "))
    written = settled(rows) - rows_before
    load.next += data["generated"]
    gen_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    errors = sum(data[k] for k in ("status_errors", "connect", "read", "write", "timeout"))
    answered = data["ok"] + data["limited"] + data["other"]
    return Turn(
        payload, server.name,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, errors=errors,
        rss_mb=sampler.peak / MIB, gen_cpu=100 * gen_cpu / elapsed,
        server_cpu=100 * sampler.cpu_used / elapsed, reused=data["reused"],
        ok=data["ok"], limited=data["limited"], other=data["other"],
        first_other=data["first_other"], unanswered=data["generated"] - answered, rows=written,
        rss_samples=sampler.samples,
    )  # fmt: skip


def combine(turns: list[Turn]) -> dict[str, float]:
    return {
        "rps": statistics.mean(t.rps for t in turns),
        "p50": statistics.mean(t.p50_ms for t in turns),
        "p99": statistics.mean(t.p99_ms for t in turns),
        "errors": sum(t.errors for t in turns),
        "rss": max(t.rss_mb for t in turns),
        "gen_cpu": max(t.gen_cpu for t in turns),
        "server_cpu": statistics.mean(t.server_cpu for t in turns),
        "reused": sum(t.reused for t in turns),
        "non2xx": sum(t.limited + t.other for t in turns),
    }


class Ledger:
    """Every turn of a target (warm-ups and the soak included): its answers and rows written."""

    def __init__(self) -> None:
        self.turns: dict[str, list[Turn]] = {}

    def add(self, turn: Turn) -> Turn:
        self.turns.setdefault(turn.target, []).append(turn)
        if turn.limited or turn.other:
            print(
                f"  !! {turn.target} answered {turn.limited} x 429 and {turn.other} other non-2xx"
                f" (first: {turn.first_other or 429}) in a {turn.payload} turn: the load must"
                " stay under the rate limits and every request must be answered 2xx",
                flush=True,
            )
        return turn

    def totals(self, target: str) -> dict[str, int]:
        turns = self.turns.get(target, [])
        return {
            "ok": sum(t.ok for t in turns),
            "limited": sum(t.limited for t in turns),
            "other": sum(t.other for t in turns),
            "unanswered": sum(t.unanswered for t in turns),
            "rows": sum(t.rows for t in turns),
            "first_other": next((t.first_other for t in turns if t.first_other), 0),
        }


# --------------------------------------------------------------------------------------------
# Checks


async def check_attachments(tenant: Tenant, sample: int = 4) -> tuple[int, int]:
    """(attachments checked, mismatches) on the newest post of ``sample`` groups (the load
    rotates over the integrations), downloaded through the API."""
    tails = {i: payloads.attachment_tail(i) for i in (1, 2, 3)}
    checked = bad = 0
    async with httpx.AsyncClient(base_url=tenant.base_url, timeout=60) as client:
        newest = []
        for group_id in tenant.group_ids[:sample]:
            r = await client.get(
                f"/v1/groups/{group_id}/posts", params={"limit": 1}, headers=tenant.admin
            )
            r.raise_for_status()
            newest += r.json()["items"]
        for post in newest:
            for att in post["attachments"]:
                index = int(att["filename"].split("-")[1].split(".")[0])
                got = (await client.get(att["url"], headers=tenant.admin)).content
                token = got[: payloads.TOKEN_LEN]
                expected = token + tails[index]
                ok = (
                    got == expected
                    and all(c in b"0123456789abcdef" for c in token)
                    and hashlib.sha256(got).hexdigest() == att["sha256"]
                )
                checked += 1
                bad += 0 if ok else 1
    return checked, bad


def folder_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def check_oversize(server: Server, tenant: Tenant, mails: int = 3) -> dict[str, Any]:
    """One 6 MiB attachment, streamed slowly; the peak of what the service keeps on disk."""
    blob_dir = server.blob_dir
    base = folder_bytes(blob_dir)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], folder_bytes(blob_dir) - base)
            stop.wait(0.005)

    rss_before = max(psutil.Process(p).memory_info().rss for p in server.worker_pids())
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    answers = []
    try:
        for _ in range(mails):
            data = os.urandom(6 * MIB)
            body, ctype, _token = payloads.one_mail(
                tenant.address, [("attachment-1", "big.bin", data)]
            )

            def chunks(body: bytes = body) -> Any:
                for i in range(0, len(body), 256 * 1024):
                    yield body[i : i + 256 * 1024]
                    time.sleep(0.01)

            r = httpx.post(
                f"{server.base_url}/inbound/mailgun", content=chunks(),
                headers={"Content-Type": ctype, "Content-Length": str(len(body))}, timeout=60,
            )  # fmt: skip
            answers.append((r.status_code, r.json()))
    finally:
        stop.set()
        thread.join()
    rss_after = max(psutil.Process(p).memory_info().rss for p in server.worker_pids())
    return {
        "answers": [(c, b.get("status"), b.get("reason")) for c, b in answers],
        "peak_kept": peak[0],
        "rss_delta": rss_after - rss_before,
    }


def _raw_request(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    return sock


def _read_status(sock: socket.socket, timeout: float) -> int | None:
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except (TimeoutError, OSError):
        return None
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data[9:12])


def check_overcap(server: Server, tenant: Tenant) -> dict[str, Any]:
    size = MAX_REQUEST_BYTES + MIB
    body, ctype, _ = payloads.one_mail(tenant.address, [("attachment-1", "cap.bin", b"x" * size)])
    rss_before = max(psutil.Process(p).memory_info().rss for p in server.worker_pids())
    # With Content-Length: the answer must come before a single body byte is sent.
    head = (
        f"POST /inbound/mailgun HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = _raw_request(server.port, head)
    started = time.monotonic()
    length_status = _read_status(sock, 10)
    length_seconds = time.monotonic() - started
    sock.close()
    # Chunked: the service must count, and answer 413 once past the cap.
    head = (
        f"POST /inbound/mailgun HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    sock = _raw_request(server.port, head)
    sent = 0
    chunked_status = None
    step = 256 * 1024
    sock.setblocking(True)
    try:
        for i in range(0, len(body), step):
            piece = body[i : i + step]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
        sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the service answered and closed
    chunked_status = _read_status(sock, 10)
    sock.close()
    rss_after = max(psutil.Process(p).memory_info().rss for p in server.worker_pids())
    return {
        "body": len(body),
        "length_status": length_status,
        "length_seconds": length_seconds,
        "chunked_status": chunked_status,
        "chunked_sent": sent,
        "rss_delta": rss_after - rss_before,
    }


# --------------------------------------------------------------------------------------------
# Set-up: the integrations the load rotates over; the rate windows afterwards; wrk


async def create_tenants(base_url: str, platforms: int, integrations: int) -> list[Tenant]:
    """``platforms`` premium platforms with ``integrations`` in all, one group each, over HTTP."""
    per = [integrations // platforms + (i < integrations % platforms) for i in range(platforms)]
    return list(await asyncio.gather(*(create_tenant(base_url, integrations=n) for n in per)))


def count_rows(database_url: str, table: str) -> int:
    async def query() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608
        finally:
            await conn.close()

    return asyncio.run(query())


def busiest_windows(database_url: str) -> dict[int, tuple[int, int]]:
    """Per window length: (the busiest integration's count in one window, integrations counted)."""

    async def query() -> dict[int, tuple[int, int]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT window_seconds, max(count) AS busiest,"
                " count(DISTINCT integration_id) AS integrations"
                " FROM rate_counters GROUP BY window_seconds"
            )
        finally:
            await conn.close()
        return {int(r["window_seconds"]): (int(r["busiest"]), int(r["integrations"])) for r in rows}

    return asyncio.run(query())


def ensure_wrk() -> bool:
    """wrk on PATH; when missing and we are root with apt-get (Debian, Ubuntu), installed
    without questions; otherwise one line saying how to install it."""
    if shutil.which("wrk"):
        return True
    apt = shutil.which("apt-get")
    if os.geteuid() == 0 and apt:
        print("wrk is not installed: installing it (apt-get install -y wrk) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [apt, "install", "-y", "-q", "--no-install-recommends", "wrk"]
        if subprocess.run(install, env=env, check=False).returncode != 0:
            subprocess.run([apt, "update", "-q"], env=env, check=False)
            subprocess.run(install, env=env, check=False)
        if shutil.which("wrk"):
            return True
    print(
        "wrk is not installed: apt-get install wrk (Debian, Ubuntu) or brew install wrk (macOS),"
        " then make bench again",
        file=sys.stderr,
    )
    return False


# --------------------------------------------------------------------------------------------
# Pagination over a million posts


async def seed_posts(database_url: str, tenant: Tenant, count: int) -> tuple[list[Any], datetime]:
    """COPY ``count`` posts into one group; returns (ids newest first, newest created_at)."""
    conn = await asyncpg.connect(database_url)
    newest = datetime.now(UTC) - timedelta(days=1)
    ids = [uuid.uuid4() for _ in range(count)]
    group = uuid.UUID(tenant.group_id)
    integration = uuid.UUID(tenant.integration_id)
    columns = [
        "id", "created_at", "received_at", "platform_id", "group_id", "integration_id",
        "dedupe_key", "source", "author_email", "author_name", "author_verified", "subject",
        "text", "html", "omitted_attachments",
    ]  # fmt: skip
    try:
        batch = 100_000
        for start in range(0, count, batch):
            records = []
            for i in range(start, min(count, start + batch)):
                moment = newest - timedelta(milliseconds=i)
                records.append((
                    ids[i], moment, moment, tenant.platform_id, group, integration,
                    f"seed-{i}", "email", "alice@example.org", "Alice", False, f"Seed {i}",
                    "seeded post", None, "[]",
                ))  # fmt: skip
            await conn.copy_records_to_table("posts", records=records, columns=columns)
        await conn.execute("ANALYZE posts")
    finally:
        await conn.close()
    return ids, newest


async def page_p50(tenant: Tenant, cursor: str | None, times: int = 40) -> float:
    params = {"cursor": cursor} if cursor else {}
    samples = []
    async with httpx.AsyncClient(base_url=tenant.base_url, timeout=60) as client:
        for i in range(times + 5):
            started = time.perf_counter()
            r = await client.get(
                f"/v1/groups/{tenant.group_id}/posts", params=params, headers=tenant.admin
            )
            took = time.perf_counter() - started
            r.raise_for_status()
            if not r.json()["items"]:
                raise RuntimeError("an empty page")
            if i >= 5:
                samples.append(took)
    return statistics.median(samples) * 1000


async def pagination(cluster: Cluster, server: Server) -> dict[str, float]:
    tenant = await create_tenant(server.base_url)
    started = time.monotonic()
    ids, newest = await seed_posts(cluster.database_url, tenant, SEED_POSTS)
    seeded = time.monotonic() - started

    def cursor(position: int) -> str:  # 1-based, newest first
        return encode_cursor(newest - timedelta(milliseconds=position - 1), ids[position - 1])

    deep = min(999_950, SEED_POSTS - 10)
    first = await page_p50(tenant, None)
    at_1000 = await page_p50(tenant, cursor(1000))
    at_deep = await page_p50(tenant, cursor(deep))
    return {"seeded": SEED_POSTS, "seed_seconds": seeded, "first": first, "at_1000": at_1000,
            "at_deep": at_deep, "deep": deep}  # fmt: skip


# --------------------------------------------------------------------------------------------


def fmt_table(rows: list[tuple[str, str, dict[str, float], str]]) -> str:
    head = (
        f"{'payload':<8} {'target':<16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'non-2xx':>7} {'errors':>6} {'RSS/worker MB':>13} {'workers CPU%':>12} "
        f"{'wrk CPU%':>8}  ratio"
    )
    lines = [head, "-" * len(head)]
    for payload, target, c, ratio in rows:
        lines.append(
            f"{payload:<8} {target:<16} {c['rps']:>8.1f} {c['p50']:>8.1f} {c['p99']:>8.1f} "
            f"{int(c['non2xx']):>7} {int(c['errors']):>6} {c['rss']:>13.1f} "
            f"{c['server_cpu']:>12.0f} {c['gen_cpu']:>8.0f}  {ratio}"
        )
    return "\n".join(lines)


def speed_rows(
    results: dict[tuple[str, str], list[Turn]], payload: str
) -> tuple[list[tuple[str, str, dict[str, float], str]], dict[str, tuple[float, float]]]:
    """The payload's rows (each service against the baseline) and, per service, its
    (req/s ratio, p99 ratio)."""
    b = combine(results[(payload, "baseline")])
    rows, ratios = [], {}
    for target in (PRODUCTION, NO_LIMITS):
        s = combine(results[(payload, target)])
        ratios[target] = (s["rps"] / b["rps"], s["p99"] / b["p99"])
        text = f"{ratios[target][0]:.2f}x req/s, {ratios[target][1]:.2f}x p99"
        rows.append((payload, target, s, text))
    rows.append((payload, "baseline" if payload == "small" else "attach-baseline", b, ""))
    if (payload, SANITISING) in results:
        z = combine(results[(payload, SANITISING)])
        for _, target, s, _ in rows[:2]:
            ratios[f"{target} vs {SANITISING}"] = (s["rps"] / z["rps"], s["p99"] / z["p99"])
        service = ratios[f"{PRODUCTION} vs {SANITISING}"]
        rows.append((payload, SANITISING, z, f"{PRODUCTION} {service[0]:.2f}x req/s of it"))
    return rows, ratios


def answers_verdict(ledger: Ledger, target: str) -> list[tuple[str, bool]]:
    """Every request answered 2xx; as many posts (rows) as 2xx answers, give or take the
    requests wrk left unanswered when it stopped (written, but their answers never read)."""
    t = ledger.totals(target)
    non2xx = t["limited"] + t["other"]
    first = f", the first other {t['first_other']}" if t["other"] else ""
    what = "rows" if target.startswith("baseline") else "posts"
    return [
        (
            f"{target}: every answer 2xx ({t['ok']:,} 2xx, {t['limited']} x 429, "
            f"{t['other']} other non-2xx{first})",
            non2xx == 0 and t["ok"] > 0,
        ),
        (
            f"{target}: {what} written == 2xx answers ({t['rows']:,} {what}, {t['ok']:,} 2xx, "
            f"{t['unanswered']} requests in flight when wrk stopped)",
            t["ok"] <= t["rows"] <= t["ok"] + t["unanswered"],
        ),
    ]


def main() -> int:
    if not ensure_wrk():
        return 2
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mailslot-bench-"))
    (work / "logs").mkdir()
    cluster = Cluster()
    servers: list[Server] = []
    limits = parse_rate_limits(DEFAULT_RATE_LIMITS)
    try:
        print("starting PostgreSQL, the service (twice) and the baseline (twice) ...", flush=True)
        cluster.init()
        cluster.start()
        url = cluster.create_database("mailslot")
        cluster.psql(
            "CREATE TABLE bench_baseline (token text PRIMARY KEY, recipient text, subject text,"
            " body_plain text, body_html text, sha256s text[], at timestamptz DEFAULT now())"
        )
        sizes = {
            "MAILSLOT_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
            "MAILSLOT_MAX_ATTACHMENT_BYTES": str(MAX_ATTACHMENT_BYTES),
        }
        # server_env sets no MAILSLOT_RATE_LIMITS: the production default applies
        env = server_env(url, work / "blobs-service", **sizes)
        service = Server(PRODUCTION, env, work / "logs")
        servers.append(service)
        service.start()
        env_off = server_env(url, work / "blobs-nolimit", MAILSLOT_RATE_LIMITS="", **sizes)
        nolimit = Server(NO_LIMITS, env_off, work / "logs")
        servers.append(nolimit)
        nolimit.start()
        base_env = {
            **env,
            "BENCH_MAILGUN_KEY": MAILGUN_KEY,
            "BENCH_DATABASE_URL": url,
            "BENCH_BLOB_DIR": str(work / "blobs-baseline"),
        }
        baseline = Baseline("baseline", base_env, work / "logs")
        servers.append(baseline)
        baseline.start()
        sanitising = Baseline(
            SANITISING,
            {**base_env, "BENCH_SANITISE": "1", "BENCH_BLOB_DIR": str(work / "blobs-nh3")},
            work / "logs",
        )
        servers.append(sanitising)
        sanitising.start()
        started = time.monotonic()
        tenants = asyncio.run(create_tenants(service.base_url, PLATFORMS, INTEGRATIONS))
        tenant = tenants[0]
        load = Load([address for t in tenants for address in t.addresses])
        budget = ", ".join(
            f"{limit.count * len(load.addresses):,} per {limit.seconds} s" for limit in limits
        )
        print(
            f"{len(load.addresses):,} integrations on {len(tenants)} platforms created in "
            f"{time.monotonic() - started:.0f} s; rate limits {DEFAULT_RATE_LIMITS} per "
            f"integration, so at most {budget} with the recipients in rotation",
            flush=True,
        )

        ledger = Ledger()

        def rows_of(server: Server) -> Callable[[], int]:
            table = "bench_baseline" if isinstance(server, Baseline) else "posts"
            return lambda: count_rows(url, table)

        results: dict[tuple[str, str], list[Turn]] = {}
        plans = [
            ("small", payloads.small_template(), SMALL_SECONDS, 6000),
            ("attach", payloads.attach_template(), ATTACH_SECONDS, 400),
        ]
        # In turns that cancel the shared machine's drift for both services:
        # service, no-limit service, baseline, baseline, no-limit service, service (small: the
        # sanitising baseline's two turns in the middle).
        for payload, (template, ctype), seconds, max_rate in plans:
            if ONLY and payload != ONLY:
                continue
            order = (service, nolimit, baseline, baseline, nolimit, service)
            if payload == "small":
                order = (service, nolimit, baseline, sanitising, sanitising, baseline, nolimit,
                         service)  # fmt: skip
            count = int(max_rate * seconds)
            # warm-up, not counted in the figures (its answers and posts are)
            for server in dict.fromkeys(order):
                ledger.add(
                    run_wrk(server, payload, template, ctype, 2, count // 4, work, load,
                            rows_of(server))
                )  # fmt: skip
            for server in order:
                turn = ledger.add(
                    run_wrk(server, payload, template, ctype, seconds, count, work, load,
                            rows_of(server))
                )  # fmt: skip
                results.setdefault((payload, server.name), []).append(turn)
                print(
                    f"  {payload:<7} {server.name:<16} {turn.rps:8.1f} req/s  p50 "
                    f"{turn.p50_ms:.1f} ms  p99 {turn.p99_ms:.1f} ms  non-2xx "
                    f"{turn.limited + turn.other}  errors {turn.errors}  RSS {turn.rss_mb:.1f} MB"
                    f"  wrk CPU {turn.gen_cpu:.0f}%",
                    flush=True,
                )

        if ONLY:
            rows, _ = speed_rows(results, ONLY)
            print(fmt_table(rows))
            failed = [
                t for t in ledger.turns if ledger.totals(t)["limited"] + ledger.totals(t)["other"]
            ]
            return 1 if failed else 0

        # The attach turns' template (its multipart boundary is in the content type).
        template, ctype = next(p[1] for p in plans if p[0] == "attach")
        soak = ledger.add(
            run_wrk(service, "attach", template, ctype, SOAK_SECONDS, int(400 * SOAK_SECONDS),
                    work, load, rows_of(service))
        )  # fmt: skip
        print(f"  attach  service soak {soak.rps:8.1f} req/s over {SOAK_SECONDS:.0f} s, "
              f"RSS {soak.rss_mb:.1f} MB, errors {soak.errors}", flush=True)  # fmt: skip
        for server in servers:
            if any(t.limited or t.other or t.errors for t in ledger.turns.get(server.name, [])):
                lines = server.log_path.read_text(errors="replace").splitlines()
                print("\n".join([f"  {server.name}'s log ends:", *lines[-15:]]), flush=True)
        windows = busiest_windows(url)
        checked, mismatched = asyncio.run(check_attachments(tenant))
        oversize = check_oversize(service, tenant)
        overcap = check_overcap(service, tenant)
        pages = asyncio.run(pagination(cluster, service))

        rows = []
        verdicts: list[tuple[str, bool]] = []  # decide the exit status
        informational: list[tuple[str, bool]] = []  # printed, do not decide
        for payload in ("small", "attach"):
            payload_rows, ratios = speed_rows(results, payload)
            rows += payload_rows
            for target, into in ((PRODUCTION, verdicts), (NO_LIMITS, informational)):
                rps_ratio, p99_ratio = ratios[target]
                if payload == "small":
                    into.append((f"{target}: small req/s >= 0.5x baseline ({rps_ratio:.2f}x)",
                                 rps_ratio >= 0.5))  # fmt: skip
                    into.append((f"{target}: small p99 <= 3x baseline ({p99_ratio:.2f}x)",
                                 p99_ratio <= 3))  # fmt: skip
                else:
                    into.append((
                        f"{target}: attach req/s >= 0.8x attach-baseline ({rps_ratio:.2f}x)",
                        rps_ratio >= 0.8,
                    ))  # fmt: skip
            if payload == "small":
                rps_ratio, _ = ratios[f"{PRODUCTION} vs {SANITISING}"]
                informational.append((
                    f"{PRODUCTION}: small req/s >= 0.5x {SANITISING}, the baseline that also "
                    f"sanitises its HTML ({rps_ratio:.2f}x)",
                    rps_ratio >= 0.5,
                ))  # fmt: skip
            if any(t.reused for t in ledger.turns.get(PRODUCTION, []) + ledger.turns["baseline"]):
                print(f"note: {payload}: pre-signed requests ran out; tokens re-sent", flush=True)

        attach_rss = max(combine(results[("attach", PRODUCTION)])["rss"], soak.rss_mb)
        verdicts.append((f"{PRODUCTION}: RSS/worker < 150 MB under attach, soak included "
                         f"({attach_rss:.1f} MB)", attach_rss < 150))  # fmt: skip
        off_rss = combine(results[("attach", NO_LIMITS)])["rss"]
        informational.append((f"{NO_LIMITS}: RSS/worker < 150 MB under attach "
                              f"({off_rss:.1f} MB)", off_rss < 150))  # fmt: skip
        # Correctness holds for every target, the no-limit service and the baseline included.
        for target in (PRODUCTION, NO_LIMITS, "baseline", SANITISING):
            verdicts += answers_verdict(ledger, target)
        for rate in limits:
            busiest, counted = windows.get(rate.seconds, (0, 0))
            verdicts.append((
                f"{PRODUCTION}: rate limit {rate.count}/{rate.seconds}: the busiest integration "
                f"counted {busiest} in one window ({counted:,} integrations counted)",
                0 < busiest <= rate.count,
            ))  # fmt: skip
        # One continuous run of `attach` on the service: the peak of its last quarter against
        # the peak of its first quarter (after the warm-up turns above).
        samples = soak.rss_samples
        start, end = samples[0][0], samples[-1][0]
        quarter = (end - start) / 4
        first_peak = max(r for t, r in samples if t <= start + quarter) / MIB
        last_peak = max(r for t, r in samples if t >= end - quarter) / MIB
        growth = last_peak - first_peak
        verdicts.append((
            f"no RSS growth over a {end - start:.0f} s attach run on the service at "
            f"{soak.rps:.1f} req/s (peak of the first quarter {first_peak:.1f} MB, of the last "
            f"{last_peak:.1f} MB, {growth:+.1f} MB; errors {soak.errors})",
            growth < 5 and soak.errors == 0,
        ))  # fmt: skip
        verdicts.append((f"attachments byte-identical ({checked} checked, {mismatched} differ)",
                         checked > 0 and mismatched == 0))  # fmt: skip
        limit = MAX_ATTACHMENT_BYTES + 1 * MIB
        verdicts.append((
            f"oversize 6 MiB: answers {oversize['answers']}, peak kept on disk "
            f"{oversize['peak_kept'] / MIB:.2f} MiB (limit 5 MiB + one buffer), RSS "
            f"{oversize['rss_delta'] / MIB:+.1f} MB",
            oversize["peak_kept"] <= limit
            and all(a[0] == 406 and a[2] == "attachment_too_large" for a in oversize["answers"]),
        ))  # fmt: skip
        verdicts.append((
            f"overcap with Content-Length: {overcap['length_status']} after "
            f"{overcap['length_seconds'] * 1000:.0f} ms, no body sent",
            overcap["length_status"] == 413,
        ))  # fmt: skip
        verdicts.append((
            f"overcap chunked: {overcap['chunked_status']} after "
            f"{overcap['chunked_sent'] / MIB:.1f} MiB sent of {overcap['body'] / MIB:.1f} MiB; "
            f"RSS {overcap['rss_delta'] / MIB:+.1f} MB",
            overcap["chunked_status"] == 413,
        ))  # fmt: skip
        ratio = pages["at_deep"] / pages["at_1000"]
        verdicts.append((
            f"posts p50: first page {pages['first']:.1f} ms, after post 1,000 "
            f"{pages['at_1000']:.1f} ms, after post {pages['deep']:,} {pages['at_deep']:.1f} ms"
            f" ({ratio:.2f}x; {pages['seeded']:,} posts seeded in {pages['seed_seconds']:.0f} s)",
            ratio <= 1.5,
        ))  # fmt: skip

        print()
        print(
            f"mailslot inbound benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{os.cpu_count()} CPUs, uvicorn 2 workers each, wrk {THREADS} threads "
            f"{CONNECTIONS} connections, {SMALL_SECONDS:.0f} s (small) / {ATTACH_SECONDS:.0f} s "
            f"(attach) turns in order {', '.join(s.name for s in order)} (small: "
            f"{SANITISING}'s two turns in the middle); then "
            f"{SOAK_SECONDS:.0f} s of attach on the service alone. {PRODUCTION}: production "
            f"defaults (rate limits {DEFAULT_RATE_LIMITS}); {NO_LIMITS}: rate limits off; "
            f"{SANITISING}: the baseline with nh3 on its HTML; "
            f"recipients rotating over {len(load.addresses):,} integrations on "
            f"{len(tenants)} platforms"
        )
        print()
        print(fmt_table(rows))
        print()
        for text, ok in verdicts:
            print(f"[{'PASS' if ok else 'FAIL'}] {text}")
        print("informational (rate limits off, baseline-nh3; they do not set the exit status):")
        for text, ok in informational:
            print(f"[{'PASS' if ok else 'FAIL'}] {text}")
        print(f"\ntotal {time.monotonic() - t0:.0f} s")
        return 0 if all(ok for _, ok in verdicts) else 1
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
