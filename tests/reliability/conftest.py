"""Fixtures of the reliability suite: the cluster, real servers, tenants, and the summary.

Stable names other files rely on: ``cluster``, ``server``, ``tenant``, ``summary`` (and
``servers``, ``db``, ``workdir``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import (
    ROOT,
    Cluster,
    Database,
    Server,
    Summary,
    Tenant,
    create_tenant,
    server_env,
    unmount,
)

SUMMARY = Summary()
SUMMARY_PATH = ROOT / "var" / "reliability-summary.json"
_STARTED = time.monotonic()
_LIVE_SERVERS: list[Server] = []
_LIVE_CLUSTERS: list[Cluster] = []
_MOUNTS: list[Path] = []


@atexit.register
def _last_resort_cleanup() -> None:
    """Whatever a crashed session left running: stop it (finalizers normally did already)."""
    for server in list(_LIVE_SERVERS):
        with contextlib.suppress(Exception):
            server.stop()
    for path in list(_MOUNTS):
        with contextlib.suppress(Exception):
            unmount(path)
    for cluster in list(_LIVE_CLUSTERS):
        with contextlib.suppress(Exception):
            cluster.destroy()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.reliability)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not SUMMARY.figures:
        return
    terminalreporter.section("reliability invariants")
    if SUMMARY.headline():
        terminalreporter.write_line(SUMMARY.headline())
    for line in SUMMARY.lines():
        terminalreporter.write_line(f"  {line}")
    stats = terminalreporter.stats
    outcome = {k: len(stats.get(k, [])) for k in ("passed", "failed", "error", "skipped")}
    with contextlib.suppress(OSError):
        SUMMARY.write(
            SUMMARY_PATH,
            tests=outcome,
            exit_status=int(exitstatus),
            duration_seconds=round(time.monotonic() - _STARTED, 1),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        terminalreporter.write_line(f"written to {SUMMARY_PATH.relative_to(ROOT)}")


@pytest.fixture(scope="session")
def summary() -> Summary:
    """``summary.record(invariant, count)``: printed at the end and written to var/."""
    return SUMMARY


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A fresh folder for the session: blobs, server logs (outside pytest's own tmp)."""
    path = Path(tempfile.mkdtemp(prefix="mailslot-rel-"))
    (path / "logs").mkdir()
    try:
        yield path
    finally:
        for mount in [m for m in _MOUNTS if path in m.parents]:
            unmount(mount)
            _MOUNTS.remove(mount)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The suite's own PostgreSQL cluster, with database ``mailslot`` at the head revision.

    ``cluster.stop("immediate")`` / ``cluster.start()`` keep the port. ``cluster.database_url``.
    """
    pg = Cluster()
    _LIVE_CLUSTERS.append(pg)
    try:
        pg.init()
        pg.start()
        pg.create_database("mailslot")
        yield pg
    finally:
        pg.destroy()
        _LIVE_CLUSTERS.remove(pg)


@pytest.fixture(scope="session")
def db(cluster: Cluster) -> Database:
    return Database(cluster.database_url)


class Servers:
    """Starts servers for one test (or module) and stops every one of them afterwards."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.started: list[Server] = []

    def blob_dir(self, name: str) -> Path:
        path = self.workdir / "blobs" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mount(self, path: Path) -> None:
        """Record a mount under ``workdir`` so that it is undone even on failure."""
        _MOUNTS.append(path)

    def env(
        self, blob_dir: Path, database_url: str | None = None, **overrides: str
    ) -> dict[str, str]:
        return server_env(database_url or self.cluster.database_url, blob_dir, **overrides)

    def start(
        self,
        name: str,
        *,
        env: dict[str, str] | None = None,
        blob_dir: Path | None = None,
        workers: int = 2,
        fsize_limit: int | None = None,
        app: str = "app.main:app",
        **overrides: str,
    ) -> Server:
        if env is None:
            env = self.env(blob_dir or self.blob_dir(name), **overrides)
        server = Server(
            name, env, self.workdir / "logs", workers=workers, fsize_limit=fsize_limit, app=app
        )
        self.started.append(server)
        _LIVE_SERVERS.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        for server in self.started:
            with contextlib.suppress(Exception):
                server.stop()
            if server in _LIVE_SERVERS:
                _LIVE_SERVERS.remove(server)
        self.started.clear()


@pytest.fixture
def servers(cluster: Cluster, workdir: Path) -> Iterator[Servers]:
    """Extra servers for one test (``servers.start(name, **MAILSLOT_overrides)``)."""
    factory = Servers(cluster, workdir)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def _session_servers(cluster: Cluster, workdir: Path) -> Iterator[Servers]:
    factory = Servers(cluster, workdir)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def server(_session_servers: Servers) -> Server:
    """The shared server: uvicorn, 2 workers, production settings (rate limits included).

    ``.base_url``, ``.blob_dir``, ``.env`` (the full environment it runs with), ``.log_path``.
    A test that stops the cluster must start it again before it ends.
    """
    return _session_servers.start("shared")


class TenantFactory:
    """``await tenant(plan="premium", integrations=1, server=None, **integration_fields)``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.created: list[Tenant] = []

    async def __call__(
        self,
        *,
        plan: str = "premium",
        integrations: int = 1,
        server: Server | None = None,
        **fields: Any,
    ) -> Tenant:
        target = server or self.server
        made = await create_tenant(target.base_url, plan=plan, integrations=integrations, **fields)
        self.created.append(made)
        return made


@pytest.fixture
def tenant(server: Server) -> TenantFactory:
    """Creates a fresh platform + group + integration over HTTP (on ``server`` by default);
    ``integrations=integrations_for(n)`` for a test sending ``n`` mails (rate limits are on).

    Returns a ``Tenant``: ``.address``, ``.group_id``, ``.integration_id``, ``.platform_id``,
    ``.admin`` (headers), ``.base_url``, and ``.addresses``/``.group_ids``/``.integrations``.
    """
    return TenantFactory(server)


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)
