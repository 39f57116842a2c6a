"""Two servers as two hosts run them: each its own local folder, one PostgreSQL, one S3 store.

Mail goes to both under load while a worker of one is killed mid-upload and the store is cut
for a moment; a cleanup runs from one host while the other is storing. Then every attachment
downloads byte-identical through either server, nothing is lost or posted twice, and every
blob a row names is in the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from tests import s3
from tests.reliability.conftest import Servers, TenantFactory
from tests.reliability.harness import (
    HTTP_TIMEOUT,
    Database,
    Mail,
    Server,
    Summary,
    Tenant,
    build_mail,
    examine,
    integrations_for,
    mixed_mails,
    payload,
    resend_until_done,
    run_cleanup,
    send_all,
)
from tests.reliability.test_faults import slowly, stream

MiB = 1024 * 1024
MAILS = 60
OUTAGE_SECONDS = 1.5


def store_env(endpoint: str, prefix: str) -> dict[str, str]:
    """What a host of the deployment is given: the bucket, the endpoint, the standard AWS
    variables (the test server's credentials)."""
    s3.endpoint()  # sets the AWS variables of the test server in this process
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    return {
        "MAILSLOT_BLOB_STORE": f"s3://{s3.BUCKET}/{prefix}",
        "MAILSLOT_S3_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        **{name: os.environ[name] for name in names},
    }


def in_store(prefix: str, sha256: str) -> bool:
    """The object is in the bucket with exactly the bytes its name says."""
    try:
        data = s3.get(f"{prefix}/{sha256}")
    except Exception:
        return False
    return hashlib.sha256(data).hexdigest() == sha256


async def kill_the_uploading_worker(server: Server, started: asyncio.Event) -> int:
    """SIGKILL the one worker of ``server`` spooling more than 1 MiB."""
    await started.wait()
    deadline = time.monotonic() + 10
    while True:
        writing = server.workers_writing_under(server.blob_dir / "tmp")
        holders = [pid for pid, (size, _) in writing.items() if size > MiB]
        if len(holders) == 1:
            os.kill(holders[0], signal.SIGKILL)
            return holders[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"not one worker found spooling the large mail: {writing}")
        await asyncio.sleep(0.05)


async def downloads(tenant: Tenant, servers: Sequence[Server]) -> dict[str, list[str]]:
    """Every attachment of the tenant's posts, downloaded through each server: the SHA-256 of
    what each answered, by attachment id."""
    found: dict[str, list[str]] = {}
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        for group in tenant.group_ids:
            cursor: str | None = None
            while True:
                params: dict[str, str | int] = {"limit": 200}
                if cursor:
                    params["cursor"] = cursor
                r = await client.get(
                    f"{tenant.base_url}/v1/groups/{group}/posts",
                    params=params,
                    headers=tenant.admin,
                )
                assert r.status_code == 200, r.text
                page = r.json()
                for post in page["items"]:
                    for attachment in post["attachments"]:
                        url = urlsplit(attachment["url"])
                        hashes = found.setdefault(attachment["id"], [])
                        for server in servers:
                            got = await client.get(f"{server.base_url}{url.path}?{url.query}")
                            assert got.status_code == 200, (server.name, got.status_code)
                            hashes.append(hashlib.sha256(got.content).hexdigest())
                cursor = page.get("next_cursor")
                if not cursor:
                    break
    return found


async def test_two_hosts_share_one_database_and_one_store(
    servers: Servers, tenant: TenantFactory, db: Database, summary: Summary
) -> None:
    prefix = f"two-hosts-{uuid.uuid4().hex[:8]}"
    async with s3.Outage() as store:
        env = store_env(store.url, prefix)
        # each its own local folder
        host_a = servers.start("host-a", env=servers.env(servers.blob_dir("host-a"), **env))
        host_b = servers.start("host-b", env=servers.env(servers.blob_dir("host-b"), **env))
        assert host_a.blob_dir != host_b.blob_dir
        t = await tenant(server=host_a, integrations=integrations_for(MAILS + 1))
        big = build_mail(
            "mailgun_mime",
            [t.address],
            [t.integration_id],
            attachments=[("big.bin", payload(4 * MiB, "two-hosts-big")), ("s.txt", b"small")],
        )
        mails: list[Mail] = [big, *mixed_mails(t, MAILS, seed="two-hosts")]
        half = asyncio.Event()

        async def outage() -> None:
            await asyncio.sleep(0.5)
            await store.cut()
            await asyncio.sleep(OUTAGE_SECONDS)
            await store.restore()

        async def cleanup_from_a() -> str:
            await asyncio.sleep(1.0)  # host b is storing mail meanwhile
            # as an operator runs it: the default grace protects blobs of mail in flight
            return await asyncio.to_thread(run_cleanup, host_a.env, None)

        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            kill = asyncio.create_task(kill_the_uploading_worker(host_b, half))
            upload = asyncio.create_task(
                stream(client, host_b, big, slowly(big.content, half=half))
            )
            cut = asyncio.create_task(outage())
            cleanup = asyncio.create_task(cleanup_from_a())
            await send_all([host_a.base_url, host_b.base_url], mails[1:], concurrency=6, pause=0.05)
            victim = await asyncio.wait_for(kill, 30)
            attempt = await asyncio.wait_for(upload, 60)
            await cut
            cleanup_report = await cleanup
        assert attempt.status_code is None, f"the killed worker answered: {attempt}"
        summary.record("two hosts: workers killed mid-upload", 1)
        summary.record("two hosts: store outages", 1)
        answered_5xx = sum(
            1 for m in mails for a in m.attempts if a.status_code and a.status_code >= 500
        )
        answered_500 = sum(1 for m in mails for a in m.attempts if a.status_code == 500)
        summary.record("two hosts: answers 5xx during the faults (retried)", answered_5xx)
        assert answered_500 == 0, "a fault was answered 500, not 503"
        assert victim not in host_b.worker_pids()

        resent = await resend_until_done([host_b.base_url, host_a.base_url], mails)
        summary.record("two hosts: re-send attempts", resent)
        found = await examine(db, host_a.blob_dir, mails, [t.platform_id], final=True)
        named = await db.named_blobs([t.platform_id])
        missing = sorted(sha for sha in named if not in_store(prefix, sha))
        problems = {
            "lost": found.lost,
            "duplicates": found.duplicates,
            "partial": found.partial,
            "refused posted": found.refused_posted,
            "stray": found.stray,
            "unfinished": found.unfinished,
            "named blobs missing from the store": missing,
        }
        problems = {k: v for k, v in problems.items() if v}
        assert not problems, (problems, cleanup_report)

        got = await downloads(t, [host_a, host_b])
        expected = sum(len(m.attachments) * len(m.targets) for m in mails if not m.refused)
        differ = [aid for aid, hashes in got.items() if len(set(hashes)) != 1 or len(hashes) != 2]
        summary.record("two hosts: attachments downloaded through both hosts", len(got))
        summary.record("two hosts: downloads that differ between hosts", len(differ))
        assert len(got) == expected, (len(got), expected)
        assert not differ
        stored = {a.sha256 for p in await db.posts([t.platform_id]) for a in p.attachments}
        assert {h[0] for h in got.values()} == stored  # the bytes are the ones named
