"""``python -m bench``: the service and the baseline under the same wrk load, in turns.

Starts a PostgreSQL cluster of its own (the reliability harness's), the service and the
baseline under uvicorn with 2 workers each, replays pre-signed Mailgun mails with wrk over
127.0.0.1 (16 connections), and prints one table. Every figure is measured in this run.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]

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
HERE = Path(__file__).resolve().parent


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
    rss_samples: list[tuple[float, int]] = field(default_factory=list)


def run_wrk(
    server: Server, payload: str, template: bytes, ctype: str, seconds: float, count: int,
    work: Path,
) -> Turn:  # fmt: skip
    tpl = work / f"{payload}.tpl"
    if not tpl.exists():
        tpl.write_bytes(template)
    values = work / f"values-{uuid.uuid4().hex[:8]}.tsv"
    payloads.write_values(values, count, urlencoded=payload == "small")
    profile = os.environ.get("BENCH_PYSPY")
    spy = None
    if profile and server.name == "service" and seconds > 2 and not Path(profile).exists():
        spy = subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "--pid", str(server.worker_pids()[0]),
             "--duration", str(int(seconds)), "--format", "raw", "--output", profile,
             "--nonblocking", "--rate", os.environ.get("BENCH_PYSPY_RATE", "100")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
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
    gen_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    errors = sum(data[k] for k in ("status_errors", "connect", "read", "write", "timeout"))
    return Turn(
        payload, server.name,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, errors=errors,
        rss_mb=sampler.peak / MIB, gen_cpu=100 * gen_cpu / elapsed,
        server_cpu=100 * sampler.cpu_used / elapsed, reused=data["reused"],
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
    }


# --------------------------------------------------------------------------------------------
# Checks


async def check_attachments(tenant: Tenant, sample: int = 4) -> tuple[int, int]:
    """(attachments checked, mismatches) on the newest posts, downloaded through the API."""
    tails = {i: payloads.attachment_tail(i) for i in (1, 2, 3)}
    checked = bad = 0
    async with httpx.AsyncClient(base_url=tenant.base_url, timeout=60) as client:
        r = await client.get(
            f"/v1/groups/{tenant.group_id}/posts", params={"limit": sample}, headers=tenant.admin
        )
        r.raise_for_status()
        for post in r.json()["items"]:
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
        f"{'errors':>6} {'RSS/worker MB':>13} {'workers CPU%':>12} {'wrk CPU%':>8}  ratio"
    )
    lines = [head, "-" * len(head)]
    for payload, target, c, ratio in rows:
        lines.append(
            f"{payload:<8} {target:<16} {c['rps']:>8.1f} {c['p50']:>8.1f} {c['p99']:>8.1f} "
            f"{int(c['errors']):>6} {c['rss']:>13.1f} {c['server_cpu']:>12.0f} "
            f"{c['gen_cpu']:>8.0f}  {ratio}"
        )
    return "\n".join(lines)


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mailslot-bench-"))
    (work / "logs").mkdir()
    cluster = Cluster()
    servers: list[Server] = []
    try:
        print("starting PostgreSQL, the service and the baseline ...", flush=True)
        cluster.init()
        cluster.start()
        url = cluster.create_database("mailslot")
        cluster.psql(
            "CREATE TABLE bench_baseline (token text PRIMARY KEY, recipient text, subject text,"
            " body_plain text, body_html text, sha256s text[], at timestamptz DEFAULT now())"
        )
        env = server_env(
            url, work / "blobs-service",
            MAILSLOT_RATE_LIMITS="",
            MAILSLOT_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES),
            MAILSLOT_MAX_ATTACHMENT_BYTES=str(MAX_ATTACHMENT_BYTES),
        )  # fmt: skip
        service = Server("service", env, work / "logs")
        servers.append(service)
        service.start()
        base_env = {
            **env,
            "BENCH_MAILGUN_KEY": MAILGUN_KEY,
            "BENCH_DATABASE_URL": url,
            "BENCH_BLOB_DIR": str(work / "blobs-baseline"),
        }
        baseline = Baseline("baseline", base_env, work / "logs")
        servers.append(baseline)
        baseline.start()
        tenant = asyncio.run(create_tenant(service.base_url))

        results: dict[tuple[str, str], list[Turn]] = {}
        plans = [
            ("small", payloads.small_template(tenant.address), SMALL_SECONDS, 6000),
            ("attach", payloads.attach_template(tenant.address), ATTACH_SECONDS, 400),
        ]
        for payload, (template, ctype), seconds, max_rate in plans:
            if ONLY and payload != ONLY:
                continue
            count = int(max_rate * seconds)
            # warm-up, not counted
            for server in (service, baseline):
                run_wrk(server, payload, template, ctype, 2, count // 4, work)
            for server in (service, baseline, baseline, service):
                turn = run_wrk(server, payload, template, ctype, seconds, count, work)
                results.setdefault((payload, server.name), []).append(turn)
                print(
                    f"  {payload:<7} {server.name:<9} {turn.rps:8.1f} req/s  p50 {turn.p50_ms:.1f}"
                    f" ms  p99 {turn.p99_ms:.1f} ms  errors {turn.errors}  RSS {turn.rss_mb:.1f}"
                    f" MB  wrk CPU {turn.gen_cpu:.0f}%",
                    flush=True,
                )

        soak = None
        if not ONLY:
            # The attach turns' template (its multipart boundary is in the content type).
            template, ctype = next(p[1] for p in plans if p[0] == "attach")
            soak = run_wrk(service, "attach", template, ctype, SOAK_SECONDS,
                           int(400 * SOAK_SECONDS), work)  # fmt: skip
            print(f"  attach  service soak {soak.rps:8.1f} req/s over {SOAK_SECONDS:.0f} s, "
                  f"RSS {soak.rss_mb:.1f} MB, errors {soak.errors}", flush=True)  # fmt: skip
            if soak.errors:
                lines = service.log_path.read_text(errors="replace").splitlines()
                print("\n".join(["  the service's log ends:", *lines[-15:]]), flush=True)
        if ONLY:
            s, b = combine(results[(ONLY, "service")]), combine(results[(ONLY, "baseline")])
            print(
                fmt_table(
                    [
                        (
                            ONLY,
                            "service",
                            s,
                            f"{s['rps'] / b['rps']:.2f}x req/s, {s['p99'] / b['p99']:.2f}x p99",
                        ),
                        (ONLY, "baseline", b, ""),
                    ]
                )
            )
            return 0
        assert soak is not None  # noqa: S101
        checked, mismatched = asyncio.run(check_attachments(tenant))
        oversize = check_oversize(service, tenant)
        overcap = check_overcap(service, tenant)
        pages = asyncio.run(pagination(cluster, service))

        rows = []
        verdicts = []
        for payload in ("small", "attach"):
            s = combine(results[(payload, "service")])
            b = combine(results[(payload, "baseline")])
            rps_ratio = s["rps"] / b["rps"]
            p99_ratio = s["p99"] / b["p99"]
            base_name = "baseline" if payload == "small" else "attach-baseline"
            rows.append((payload, "service", s, f"{rps_ratio:.2f}x req/s, {p99_ratio:.2f}x p99"))
            rows.append((payload, base_name, b, ""))
            if payload == "small":
                verdicts.append(("small req/s >= 0.5x baseline", rps_ratio >= 0.5))
                verdicts.append(("small p99 <= 3x baseline", p99_ratio <= 3))
            else:
                verdicts.append(("attach req/s >= 0.8x attach-baseline", rps_ratio >= 0.8))
                verdicts.append(("attach errors == 0", s["errors"] == 0))
            if s["reused"] or b["reused"]:
                print(f"note: {payload}: pre-signed requests ran out; tokens re-sent", flush=True)

        attach_turns = results[("attach", "service")]
        attach_rss = max(combine(attach_turns)["rss"], soak.rss_mb)
        verdicts.append((f"RSS/worker < 150 MB under attach, soak included ({attach_rss:.1f} MB)",
                         attach_rss < 150))  # fmt: skip
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
            "(attach) turns in order service, baseline, baseline, service; then "
            f"{SOAK_SECONDS:.0f} s of attach on the service alone"
        )
        print()
        print(fmt_table(rows))
        print()
        for text, ok in verdicts:
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
