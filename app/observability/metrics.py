"""Prometheus metrics, correct with any number of uvicorn workers (prometheus-client's
multiprocess mode).

Each worker process writes its values to memory-mapped files (one write per increment, no
lock held across processes) in one folder per server start: ``<METRICS_DIR>/<pid>-<start>``,
named after the process that started the workers (uvicorn's supervisor, or the worker itself
when it runs alone), so that a restart never counts on from the last run's files. A scrape of
``GET /metrics`` (``app.api.metrics``), answered by any worker, merges the files of every worker
of the server: counters of workers that died are kept (a counter never goes back), and the
live-gauge files of dead workers are removed first (``mark_process_dead``), so that the pool
gauge sums the workers alive. Folders of servers that are no longer running are removed when
the next server starts.

The metrics are observed at a few central points, each once: an inbound request's answer and
its deliveries (``app.observability.inbound``), database statements (the engine's cursor
events, and the inbound writer's statements on the driver, which bypass them), the pool's
checkouts, and the blob store's errors (``app.observability.blobs``).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import ConfigurationError, Settings
from app.observability import context

if TYPE_CHECKING:
    from app.inbound.pipeline import DeliveryOutcome

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client's multiprocess values write their files (it reads this variable)."""

INBOUND_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DATABASE_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

M = TypeVar("M", Counter, Gauge, Histogram)


class _Labelled(Generic[M]):
    """A metric's children by label values, looked up once each (``labels()`` takes a lock and
    builds its key on every call). The label values come from closed sets (providers, answer
    codes, statuses, reasons, store operations)."""

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self.children: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = self.metric.labels(*labels)
        return child


class Metrics:
    """Every metric of the service (their values live in the multiprocess folder)."""

    def __init__(self) -> None:
        self.inbound_requests = _Labelled(
            Counter(
                "mailslot_inbound_requests",
                "Inbound webhook requests answered, by provider and answer status code.",
                ["provider", "code"],
                registry=None,
            )
        )
        self.inbound_seconds = _Labelled(
            Histogram(
                "mailslot_inbound_request_duration_seconds",
                "Time from an inbound request's arrival to the start of its answer.",
                ["provider"],
                buckets=INBOUND_SECONDS,
                registry=None,
            )
        )
        self.auth_failures = _Labelled(
            Counter(
                "mailslot_inbound_auth_failures",
                "Inbound requests refused for a bad signature or bad credentials (401).",
                ["provider"],
                registry=None,
            )
        )
        self.rate_limited = _Labelled(
            Counter(
                "mailslot_inbound_rate_limited",
                "Inbound requests answered rate limited (the provider retries them).",
                ["provider"],
                registry=None,
            )
        )
        self.deliveries = _Labelled(
            Counter(
                "mailslot_deliveries",
                "Delivery outcomes of inbound mail (one per integration a mail reached, or one "
                "for mail that reached none), by status and reason.",
                ["status", "reason"],
                registry=None,
            )
        )
        self.posts = Counter(
            "mailslot_posts_stored", "Posts made from inbound mail.", registry=None
        )
        self.attachment_bytes = Counter(
            "mailslot_attachment_bytes_stored",
            "Bytes of the attachments of the posts made (a file posted to two groups counts "
            "twice).",
            registry=None,
        )
        self.database_seconds = Histogram(
            "mailslot_database_statement_duration_seconds",
            "Time of each database statement, from sending it to its result.",
            buckets=DATABASE_SECONDS,
            registry=None,
        )
        self.pool_in_use = Gauge(
            "mailslot_database_connections_in_use",
            "Database connections checked out of the workers' pools.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.blob_errors = _Labelled(
            Counter(
                "mailslot_blob_store_errors",
                "Failed blob store calls (a missing blob is not a failure), by operation.",
                ["operation"],
                registry=None,
            )
        )


_metrics: Metrics | None = None
_directory: Path | None = None


def setup(settings: Settings) -> Path:
    """Point prometheus-client at this server's folder and create the metrics (once per
    process: later calls return the folder chosen first)."""
    global _metrics, _directory
    if _directory is not None:
        return _directory
    base = settings.metrics_dir or Path(tempfile.gettempdir()) / f"mailslot-metrics-{os.getuid()}"
    directory = _server_directory(base)
    os.environ[MULTIPROC_DIR_VARIABLE] = str(directory)
    # Whatever prometheus-client chose when it was first imported: files from now on.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _metrics, _directory = Metrics(), directory
    from app.inbound.providers import PROVIDERS

    for provider in {p.name for p in PROVIDERS}:  # from 0, so that the first failure is a rise
        _metrics.auth_failures(provider)
        _metrics.rate_limited(provider)
    atexit.register(_forget, os.getpid(), directory)  # this worker's live gauges go with it
    return directory


def metrics() -> Metrics | None:
    return _metrics


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot, from ``/proc``): with the pid, names
    one process for good. None where there is no ``/proc`` (or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command's ")"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_SERVER_FOLDER = re.compile(r"(\d+)(?:-(\d+))?")


def _running(name: str) -> bool:
    """Whether the server a folder is named after still runs."""
    match = _SERVER_FOLDER.fullmatch(name)
    if match is None:
        return True  # not one of ours: never removed
    pid, started = int(match[1]), match[2]
    if started is None:
        return _alive(pid)
    return _start_time(pid) == started


def _server_directory(base: Path) -> Path:
    """This server's folder under ``base`` (made if needed), after removing the folders of
    servers that stopped."""
    parent = multiprocessing.parent_process()  # uvicorn's supervisor spawns its workers
    pid = parent.pid if parent is not None and parent.pid is not None else os.getpid()
    started = _start_time(pid)
    name = str(pid) if started is None else f"{pid}-{started}"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        if base.stat().st_uid != os.getuid():
            raise ConfigurationError(
                f"the metrics folder {base} belongs to another user; "
                "set MAILSLOT_METRICS_DIR to a folder of this user"
            )
        for folder in base.iterdir():
            if folder.name != name and folder.is_dir() and not _running(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
        directory = base / name
        directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"the metrics folder {base} cannot be written ({exc.strerror}); "
            "set MAILSLOT_METRICS_DIR to a writable folder"
        ) from exc
    return directory


def _forget(pid: int, directory: Path) -> None:
    with contextlib.suppress(OSError):
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def _forget_dead_workers(directory: Path) -> None:
    """Remove the live-gauge files of workers that are gone (killed, crashed, restarted)."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            _forget(int(pid), directory)


def render() -> bytes:
    """Every worker's metrics in the Prometheus text format (blocking: file reads)."""
    if _directory is None:
        return b""
    _forget_dead_workers(_directory)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(_directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


# --- the central points -----------------------------------------------------------------------


def inbound(
    provider: str,
    code: int,
    seconds: float,
    outcome: str | None,
    outcomes: Iterable[DeliveryOutcome],
) -> None:
    """An inbound request answered ``code`` after ``seconds``, and what became of its mail."""
    m = _metrics
    if m is None:
        return
    m.inbound_requests(provider, str(code)).inc()
    m.inbound_seconds(provider).observe(seconds)
    if code == 401:
        m.auth_failures(provider).inc()
    if outcome == "rate_limited":
        m.rate_limited(provider).inc()
    for o in outcomes:
        m.deliveries(o.status, o.reason or "").inc()
        if o.post_id is not None and o.status == "accepted":
            m.posts.inc()
            if o.attachment_bytes:
                m.attachment_bytes.inc(o.attachment_bytes)


def database_time(seconds: float) -> None:
    """One database statement took ``seconds`` (added to the request's database time)."""
    m = _metrics
    if m is not None:
        m.database_seconds.observe(seconds)
    record = context.current()
    if record is not None:
        record.database_seconds += seconds


def blob_error(operation: str) -> None:
    m = _metrics
    if m is not None:
        m.blob_errors(operation).inc()


_STARTED = "mailslot_statement_started"
_INSTRUMENTED = "mailslot_instrumented"


def instrument_engine(engine: AsyncEngine) -> None:
    """Time every statement the engine runs, and follow its pool's checked-out connections."""
    sync = engine.sync_engine
    if getattr(sync, _INSTRUMENTED, False):
        return
    setattr(sync, _INSTRUMENTED, True)

    def before(conn: Any, *_: Any) -> None:
        conn.info[_STARTED] = time.perf_counter()

    def after(conn: Any, *_: Any) -> None:
        started = conn.info.pop(_STARTED, None)
        if started is not None:
            database_time(time.perf_counter() - started)

    def pool_changed(returning: int) -> Any:
        def changed(*_: Any) -> None:
            m = _metrics
            if m is None:
                return
            try:
                in_use: int = sync.pool.checkedout()  # type: ignore[attr-defined]
            except AttributeError:  # a pool that does not count them (the engine's queue does)
                return
            # A connection being checked in is still counted out when its event fires.
            m.pool_in_use.set(in_use - returning)

        return changed

    event.listen(sync, "before_cursor_execute", before)
    event.listen(sync, "after_cursor_execute", after)
    event.listen(sync, "checkout", pool_changed(0))
    event.listen(sync, "checkin", pool_changed(1))
