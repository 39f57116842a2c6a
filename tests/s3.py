"""A real S3 endpoint for the tests: moto's standalone server on loopback, started on first use
and stopped when the test process ends; the app reaches it through its own aiobotocore client.

``TEST_BLOB_STORE=s3`` runs every test on it; by default, tests run on the local folder and
those marked ``blob_stores`` run on both (``tests/conftest.py``). ``Outage`` puts a relay in
front of it that can be cut, to make the store unreachable and bring it back.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BUCKET = "mailslot-tests"
KINDS = ("local", "s3")

_lock = threading.Lock()
_endpoint: str | None = None


def kind() -> str:
    """The blob store every test uses unless it asks for both: ``TEST_BLOB_STORE``."""
    value = os.environ.get("TEST_BLOB_STORE", "local").strip().lower() or "local"
    if value not in KINDS:
        raise RuntimeError(f"TEST_BLOB_STORE must be one of {', '.join(KINDS)}, not {value!r}")
    return value


def _aws_environment() -> None:
    """Credentials and region through the standard AWS variables (what production reads), and
    nothing of the developer's own: no profile, no config file, no instance metadata."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="mailslot-test",
        AWS_SECRET_ACCESS_KEY="mailslot-test-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)


def endpoint() -> str:
    """The server's URL (started, with the test bucket, on the first call)."""
    global _endpoint
    with _lock:
        if _endpoint is None:
            _aws_environment()
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            atexit.register(server.stop)
            host, port = server.get_host_and_port()
            url = f"http://{host}:{port}"
            _create_bucket(url)
            _endpoint = url
        return _endpoint


@contextlib.contextmanager
def _client(url: str) -> Iterator[Any]:
    """A plain (blocking) client for set-up and inspection, outside the app."""
    import botocore.session

    client: Any = botocore.session.get_session().create_client("s3", endpoint_url=url)
    try:
        yield client
    finally:
        client.close()


def _create_bucket(url: str) -> None:
    """Set-up only (a deployment's bucket exists before the service starts)."""
    with _client(url) as client:
        client.create_bucket(Bucket=BUCKET)


def prefix_for(blob_dir: Path) -> str:
    """One prefix per blob folder: settings made again for the same folder share the blobs."""
    return "t-" + hashlib.sha256(str(blob_dir).encode()).hexdigest()[:20]


def settings_for(blob_dir: Path, url: str | None = None) -> dict[str, Any]:
    return {
        "blob_store": f"s3://{BUCKET}/{prefix_for(blob_dir)}",
        "s3_endpoint_url": url or endpoint(),
    }


class Outage:
    """A TCP relay to the S3 server on its own loopback port. ``cut()`` closes it and every
    connection through it (the store unreachable: connection refused); ``stall()`` keeps
    accepting connections but answers nothing (a store that hangs); ``restore()`` relays again,
    on the same port."""

    def __init__(self) -> None:
        self._target = endpoint().removeprefix("http://")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stalled = False
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Outage:
        await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cut()

    async def stall(self) -> None:
        await self.cut()
        self._stalled = True
        await self._listen()

    async def restore(self) -> None:
        await self.cut()
        self._stalled = False
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stalled:  # read what comes, answer nothing, until cut
            self._writers.add(writer)
            hold = asyncio.create_task(self._pipe(reader, None))
            self._tasks.add(hold)
            await asyncio.gather(hold, return_exceptions=True)
            self._tasks.discard(hold)
            return
        host, port = self._target.split(":")
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, upstream_writer)),
            asyncio.create_task(self._pipe(upstream_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._tasks.difference_update(pipes)
            for w in (writer, upstream_writer):
                self._writers.discard(w)
                w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None) -> None:
        """Copy until end of stream (to nowhere without a writer)."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if writer is not None:
                    writer.write(data)
                    await writer.drain()
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()


def head(key: str) -> dict[str, Any]:
    """An object's metadata as the server has it (an inspection for tests, outside the app)."""
    with _client(endpoint()) as client:
        return dict(client.head_object(Bucket=BUCKET, Key=key))


def put_foreign(key: str, data: bytes) -> None:
    """An object that is not the app's (another tool's file in the bucket)."""
    with _client(endpoint()) as client:
        client.put_object(Bucket=BUCKET, Key=key, Body=data)


def get(key: str) -> bytes:
    """An object's bytes as the server has them (an inspection for tests, outside the app)."""
    with _client(endpoint()) as client:
        return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
