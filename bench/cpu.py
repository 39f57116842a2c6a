"""CPU time per mail: the service and the baseline, one uvicorn worker each, the same `small`
Mailgun mails sent one at a time over one keep-alive connection, with the production defaults
(rate limits included) and recipients rotating over 1,000 integrations on 10 platforms.

Reported per request: the CPU time of the worker process and of PostgreSQL's processes (read from
``/proc``), the wall time and the write-ahead log written; then the rows and bytes a mail leaves
in each table. Unlike ``make bench`` (throughput under 16 concurrent
connections), this shows where a mail's cost goes, free of scheduling noise.

    .venv/bin/python -m bench.cpu            # BENCH_CPU_MAILS=3000, BENCH_CPU_ROUNDS=2
"""

# ruff: noqa: T201

from __future__ import annotations

import asyncio
import http.client
import os
import tempfile
import time
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import psutil  # type: ignore[import-untyped,unused-ignore]

from bench import payloads
from bench.run import Baseline, create_tenants
from tests.inbound.payloads import MAILGUN_KEY
from tests.reliability.harness import Cluster, Server, server_env

WARM_UP = 50
# What one mail leaves in the database, reported after the turns.
TABLES = ("posts", "attachments", "deliveries", "provider_tokens", "rate_counters")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def postgres_pids(cluster: Cluster) -> list[int]:
    """The cluster's postmaster and its children (not another cluster's on the machine)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    process = psutil.Process(postmaster)
    return [postmaster, *(child.pid for child in process.children(recursive=True))]


def send(port: int, bodies: list[bytes], content_type: str) -> int:
    """Post each body in turn; how many were answered 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    ok = 0
    for body in bodies:
        conn.request("POST", "/inbound/mailgun", body=body, headers={"Content-Type": content_type})
        answer = conn.getresponse()
        answer.read()
        ok += answer.status == 200
    conn.close()
    return ok


async def wal_position(database_url: str) -> int:
    """Bytes of write-ahead log written by the cluster so far."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
    finally:
        await conn.close()


async def footprint(database_url: str, mails: int) -> None:
    """Rows and bytes (tables with their indexes and TOAST) per mail the service accepted."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("VACUUM ANALYZE")
        print(f"what {mails} mails left in the database, per mail:")
        total = 0
        for table in TABLES:
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            size = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
            total += size
            print(f"  {table:16} {rows / mails:5.2f} rows  {size / mails:7.0f} bytes")
        per_mail = total / mails
        print(f"  {'in all':16} {'':10} {per_mail:7.0f} bytes ({per_mail / 1e3:.1f} GB a million)")
    finally:
        await conn.close()


def main() -> int:
    mails = int(os.environ.get("BENCH_CPU_MAILS", "3000"))
    rounds = int(os.environ.get("BENCH_CPU_ROUNDS", "2"))
    work = Path(tempfile.mkdtemp(prefix="mailslot-bench-cpu-"))
    cluster = Cluster()
    servers: list[Server] = []
    try:
        cluster.init()
        cluster.start()
        url = cluster.create_database("mailslot")
        cluster.psql(
            "CREATE TABLE bench_baseline (token text PRIMARY KEY, recipient text, subject text,"
            " body_plain text, body_html text, sha256s text[], at timestamptz DEFAULT now())"
        )
        env = server_env(url, work / "blobs-service")  # the production defaults
        service = Server("service", env, work, workers=1)
        servers.append(service.start())
        base_env = {
            **env,
            "BENCH_MAILGUN_KEY": MAILGUN_KEY,
            "BENCH_DATABASE_URL": url,
            "BENCH_BLOB_DIR": str(work / "blobs-baseline"),
        }
        baseline = Baseline("baseline", base_env, work, workers=1)
        servers.append(baseline.start())
        tenants = asyncio.run(create_tenants(service.base_url, 10, 1000))
        addresses = [a for t in tenants for a in t.addresses]
        template, content_type = payloads.small_template()
        print(f"{mails} mails a turn, one at a time; CPU per request:")
        for turn in range(rounds):
            for server in (service, baseline):
                values = payloads.sign_values(
                    mails + WARM_UP, addresses, urlencoded=True, start=turn * (mails + WARM_UP)
                )
                bodies = [payloads.fill(template.decode(), v).encode() for v in values]
                send(server.port, bodies[:WARM_UP], content_type)
                assert server.process is not None  # noqa: S101
                workers = server.worker_pids() or [server.process.pid]  # one worker: itself
                database = postgres_pids(cluster)
                wal0 = asyncio.run(wal_position(url))
                worker0, database0 = cpu_seconds(workers), cpu_seconds(database)
                started = time.perf_counter()
                ok = send(server.port, bodies[WARM_UP:], content_type)
                wall = time.perf_counter() - started
                worker = (cpu_seconds(workers) - worker0) / mails * 1e6
                db = (cpu_seconds(database) - database0) / mails * 1e6
                wal = (asyncio.run(wal_position(url)) - wal0) / mails
                print(
                    f"  {server.name:9} worker {worker:5.0f} us  PostgreSQL {db:4.0f} us  "
                    f"total {worker + db:5.0f} us  wall {wall / mails * 1e6:5.0f} us  "
                    f"WAL {wal:5.0f} bytes  "
                    f"({ok}/{mails} answered 200)",
                    flush=True,
                )
        asyncio.run(footprint(url, rounds * (mails + WARM_UP)))
    finally:
        for server in servers:
            server.stop()
        cluster.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
