"""The baseline: about the least a Mailgun webhook on FastAPI + asyncpg can do.

Read the form, check the signature, stream any file parts to disk with SHA-256 and fsync
(the attach-baseline), one ``INSERT ... ON CONFLICT DO NOTHING``, answer 200.

With ``BENCH_SANITISE=1`` it also passes the HTML through ``nh3.clean`` (nh3's own allow-list)
before the insert: the least a webhook can do when, as DESIGN.md requires of the service, the
HTML is sanitised before it is stored (``make bench``'s informational ``baseline-nh3``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import anyio
import asyncpg  # type: ignore[import-untyped,unused-ignore]
import nh3
from fastapi import FastAPI, Request, Response
from starlette.datastructures import UploadFile

KEY = os.environ["BENCH_MAILGUN_KEY"].encode()
DSN = os.environ["BENCH_DATABASE_URL"]
BLOBS = Path(os.environ["BENCH_BLOB_DIR"])
SANITISE = os.environ.get("BENCH_SANITISE") == "1"
CHUNK = 1 << 16
INSERT = (
    "INSERT INTO bench_baseline (token, recipient, subject, body_plain, body_html, sha256s)"
    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await anyio.to_thread.run_sync(lambda: BLOBS.mkdir(parents=True, exist_ok=True))
    app.state.pool = await asyncpg.create_pool(DSN, min_size=1, max_size=10)
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def store(source: IO[bytes]) -> str:
    """Copy a spooled part to disk with its SHA-256, fsync, rename into place."""
    digest = hashlib.sha256()
    tmp = BLOBS / f"{uuid.uuid4().hex}.tmp"
    with tmp.open("wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    name = digest.hexdigest()
    os.replace(tmp, BLOBS / name)
    return name


@app.post("/inbound/mailgun")
async def mailgun(request: Request) -> Response:
    async with request.form(max_part_size=64 << 20) as form:
        ts, token, sig = (str(form.get(k) or "") for k in ("timestamp", "token", "signature"))
        expected = hmac.new(KEY, f"{ts}{token}".encode(), hashlib.sha256).hexdigest()
        fresh = ts.isdigit() and abs(time.time() - int(ts)) < 9 * 3600
        if not (fresh and hmac.compare_digest(expected, sig)):
            return Response(status_code=401)
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        hashes = [await anyio.to_thread.run_sync(store, f.file) for f in files]
        html = str(form.get("body-html") or "")
        await app.state.pool.execute(
            INSERT,
            token,
            str(form.get("recipient") or ""),
            str(form.get("subject") or ""),
            str(form.get("body-plain") or ""),
            nh3.clean(html) if SANITISE else html,
            hashes,
        )
    return Response(status_code=200)
