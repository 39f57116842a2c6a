"""The metrics' folder per server start, the blob store's errors, the pool gauge, and tracing
being optional."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.config import Settings
from app.db.engine import create_engine
from app.observability import metrics
from app.observability.blobs import metered
from app.observability.metrics import _forget_dead_workers, _server_directory, _start_time
from tests.metrics import value

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


class TestServerFolder:
    def test_each_server_start_has_its_own_folder_and_stopped_servers_lose_theirs(
        self, tmp_path: Path
    ) -> None:
        parent = os.getppid()  # alive, and not this process
        alive = tmp_path / f"{parent}-{_start_time(parent)}"
        stopped = tmp_path / f"{dead_pid()}-123"
        reused = tmp_path / f"{parent}-1"  # the pid of a server that stopped, now another's
        foreign = tmp_path / "not-ours"
        for folder in (alive, stopped, reused, foreign):
            folder.mkdir()
            (folder / "counter_1.db").write_bytes(b"x")

        mine = _server_directory(tmp_path)

        assert mine == tmp_path / f"{os.getpid()}-{_start_time(os.getpid())}"  # no supervisor
        assert mine.is_dir()
        assert alive.is_dir()
        assert foreign.is_dir()
        assert not stopped.exists()
        assert not reused.exists()

    def test_a_worker_that_died_leaves_its_counters_and_loses_its_live_gauges(
        self, tmp_path: Path
    ) -> None:
        gone, here = dead_pid(), os.getpid()
        for name in (f"gauge_livesum_{gone}.db", f"gauge_livesum_{here}.db", f"counter_{gone}.db"):
            (tmp_path / name).write_bytes(b"x")

        _forget_dead_workers(tmp_path)

        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [f"gauge_livesum_{here}.db", f"counter_{gone}.db"]
        )


class FailingStore:
    """A blob store whose calls fail as a full disk or a lost store would."""

    def __init__(self) -> None:
        self.tmp_dir = Path("/nowhere")

    async def put_bytes(self, data: bytes) -> str:
        raise OSError(28, "No space left on device")

    async def exists(self, sha256: str) -> bool:
        return sha256 == "a" * 64

    async def read_all(self, sha256: str) -> bytes:
        raise FileNotFoundError(sha256)

    async def read(self, sha256: str, chunk_size: int = 1) -> AsyncIterator[bytes]:
        yield b"first"
        raise ConnectionError("the store went away")


class TestBlobStoreErrors:
    async def test_failures_are_counted_by_operation_and_raised_unchanged(
        self, settings: Settings
    ) -> None:
        metrics.setup(settings)
        store = metered(FailingStore())  # type: ignore[arg-type]
        before = metrics.render().decode()

        with pytest.raises(OSError, match="No space left"):
            await store.put_bytes(b"x")
        with pytest.raises(OSError, match="No space left"):
            await store.put_bytes(b"y")
        chunks: list[bytes] = []

        async def read_all_chunks() -> None:
            async for chunk in store.read("b" * 64):
                chunks.append(chunk)

        with pytest.raises(ConnectionError):
            await read_all_chunks()
        assert chunks == [b"first"]
        # A missing blob is an answer, and so is a plain result.
        with pytest.raises(FileNotFoundError):
            await store.read_all("c" * 64)
        assert await store.exists("a" * 64)
        assert store.tmp_dir == Path("/nowhere")
        assert metered(store) is store

        after = metrics.render().decode()
        name = "mailslot_blob_store_errors_total"

        def added(operation: str) -> float:
            return value(after, name, operation=operation) - value(
                before, name, operation=operation
            )

        assert added("put_bytes") == 2
        assert added("read") == 1
        assert added("read_all") == 0
        assert added("exists") == 0


class TestPoolGauge:
    async def test_the_connections_checked_out_are_shown(
        self, settings: Settings, database_url: str
    ) -> None:
        metrics.setup(settings)
        engine = create_engine(database_url)
        metrics.instrument_engine(engine)
        name = "mailslot_database_connections_in_use"
        try:
            async with engine.connect(), engine.connect():  # each checks one out
                held = value(metrics.render().decode(), name)
            released = value(metrics.render().decode(), name)
        finally:
            await engine.dispose()
        assert (held, released) == (2, 0)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MAILSLOT_", "OTEL_"))}
    return subprocess.run(  # noqa: S603
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


STARTS = """
    import sys
    from fastapi.testclient import TestClient
    from app.main import create_app

    with TestClient(create_app()) as client:
        assert client.get("/healthz").status_code == 200
    loaded = sorted(
        name for name in sys.modules
        if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter",
                            "opentelemetry.instrumentation"))
    )
    print("loaded:", loaded)
"""


class TestTracingIsOptional:
    def test_without_the_endpoint_nothing_of_opentelemetry_is_loaded(self, tmp_path: Path) -> None:
        result = run_python(
            STARTS,
            MAILSLOT_ENVIRONMENT="development",
            MAILSLOT_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
            MAILSLOT_BLOB_DIR=str(tmp_path / "blobs"),
            MAILSLOT_METRICS_DIR=str(tmp_path / "metrics"),
        )
        assert result.returncode == 0, result.stderr
        assert "loaded: []" in result.stdout, result.stdout
        assert "tracing" not in result.stderr

    def test_with_the_endpoint_and_without_the_extra_the_app_says_so_and_runs(
        self, tmp_path: Path
    ) -> None:
        pytest.importorskip("opentelemetry")  # FastAPI's dependency: the API is always there
        try:
            import opentelemetry.sdk  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("the otel extra is installed here")
        result = run_python(
            STARTS,
            MAILSLOT_ENVIRONMENT="development",
            MAILSLOT_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
            MAILSLOT_BLOB_DIR=str(tmp_path / "blobs"),
            MAILSLOT_METRICS_DIR=str(tmp_path / "metrics"),
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        )
        assert result.returncode == 0, result.stderr
        assert "loaded: []" in result.stdout, result.stdout
        assert "the otel extra is not installed" in result.stderr, result.stderr
