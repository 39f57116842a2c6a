"""The reliability harness: a PostgreSQL cluster the suite owns, real uvicorn servers, checks.

Everything here talks to the service the way users and providers do (HTTP on 127.0.0.1) and
checks the outcome directly in the database and the blob folder afterwards.
"""

# ruff: noqa: S603  (the harness runs its own fixed commands: pg binaries, uvicorn, mount)
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import create_engine
from tests import pgcluster
from tests.auth import JWT_AUDIENCE, JWT_ISSUER, bearer
from tests.inbound.payloads import (
    INBOUND_PASSWORD,
    INBOUND_USER,
    MAILGUN_KEY,
    basic,
    mailgun_form,
    postmark_attachment,
    postmark_json,
    sign_mailgun,
)
from tests.pgcluster import free_port, tail, which

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
INBOUND_DOMAIN = "in.reliability.example.com"
JWT_SECRET = "reliability-jwt-secret-5f0c1e7a9b3d4c2e8f6a"
OPERATOR_TOKEN = "reliability-operator-token-9d2b7c4e1f8a3b6c"
URL_SIGNING_KEY = "reliability-url-signing-key-2c7e9a4b1d6f3e8a"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
SERVER_START_SECONDS = 45.0
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
T = TypeVar("T")
ANSWER_SECONDS = 10.0  # the longest the proxy waits for PostgreSQL to act before it cuts


def clean_environ() -> dict[str, str]:
    """The test runner's environment without any MAILSLOT_ setting of its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILSLOT_")}


async def poll_until(
    probe: Callable[[], T], done: Callable[[T], bool], *, seconds: float, interval: float = 0.1
) -> T:
    """Run ``probe`` (in a thread: it may walk folders or the process table) until ``done``
    holds for what it returns, or ``seconds`` have passed; returns its last result, for the
    caller's assertion (what was still there)."""
    deadline = time.monotonic() + seconds
    while True:
        value = await asyncio.to_thread(probe)
        if done(value) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------------------------
# PostgreSQL


class Cluster(pgcluster.Cluster):
    """The suite's own cluster (``tests.pgcluster``): stoppable at will, database ``mailslot``
    at the head revision once ``create_database`` ran."""

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root or Path(tempfile.mkdtemp(prefix="mailslot-rel-pg-")))
        self.database_url = ""  # set by create_database

    def url(self, database: str = "mailslot", port: int | None = None) -> str:
        return super().url(database, port)

    def psql(self, sql: str, database: str = "mailslot") -> str:
        return super().psql(sql, database)

    def create_database(self, name: str = "mailslot") -> str:
        self.psql(f'CREATE DATABASE "{name}"', database="postgres")
        url = self.url(name)
        env = {**clean_environ(), "MAILSLOT_DATABASE_URL": url}
        command = [str(VENV_BIN / "alembic"), "upgrade", "head"]
        result = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise pgcluster.ClusterError(
                f"{' '.join(command)} exited with {result.returncode}\n--- stdout\n"
                f"{result.stdout.strip()}\n--- stderr\n{result.stderr.strip()}"
            )
        self.database_url = url
        return url


# --------------------------------------------------------------------------------------------
# Servers


def server_env(database_url: str, blob_dir: Path, **overrides: str) -> dict[str, str]:
    """Every required production setting with a real value; ``overrides`` are MAILSLOT_ names."""
    env = clean_environ()
    env.update(
        {
            "MAILSLOT_ENVIRONMENT": "production",
            "MAILSLOT_DATABASE_URL": database_url,
            "MAILSLOT_BLOB_DIR": str(blob_dir),
            "MAILSLOT_INBOUND_DOMAIN": INBOUND_DOMAIN,
            "MAILSLOT_JWT_SECRET": JWT_SECRET,
            "MAILSLOT_JWT_AUDIENCE": JWT_AUDIENCE,
            "MAILSLOT_JWT_ISSUER": JWT_ISSUER,
            "MAILSLOT_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "MAILSLOT_URL_SIGNING_KEYS": URL_SIGNING_KEY,
            "MAILSLOT_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
            "MAILSLOT_INBOUND_USERNAME": INBOUND_USER,
            "MAILSLOT_INBOUND_PASSWORD": INBOUND_PASSWORD,
            # MAILSLOT_RATE_LIMITS is left unset: the production default limits apply
            # (app.config.DEFAULT_RATE_LIMITS, per integration); tests spread their mail over
            # many integrations (Tenant.route, integrations_for) so as to stay under them.
            # Events go to receivers the tests run on loopback (plain http to loopback only).
            "MAILSLOT_EVENTS_ALLOW_LOOPBACK": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class Server:
    """``uvicorn app.main:app --workers N`` as a subprocess (its own session), log to a file.

    ``app``: another ASGI application to serve, e.g. one with a failpoint injected
    (tests/reliability/failpoint.py)."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        workers: int = 2,
        port: int | None = None,
        fsize_limit: int | None = None,
        app: str = "app.main:app",
    ) -> None:
        self.name = name
        self.app = app
        self.env = env
        self.workers = workers
        self.port = port or free_port()
        self.log_path = log_dir / f"{name}.log"
        self.fsize_limit = fsize_limit
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def blob_dir(self) -> Path:
        return Path(self.env["MAILSLOT_BLOB_DIR"])

    @property
    def database_url(self) -> str:
        return self.env["MAILSLOT_DATABASE_URL"]

    def _preexec(self) -> Callable[[], None] | None:
        limit = self.fsize_limit
        if limit is None:
            return None

        def apply() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return apply

    def start(self) -> Server:
        started = _count_startups(self.log_path)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(VENV_BIN / "uvicorn"),
                    self.app,
                    "--workers",
                    str(self.workers),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._preexec(),
            )
        self.wait_ready(started + self.workers)
        return self

    def wait_ready(self, startups: int, timeout: float = SERVER_START_SECONDS) -> None:
        """Until every worker has started and ``/healthz`` answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server {self.name} exited:\n{tail(self.log_path)}")
            if _count_startups(self.log_path) >= startups:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                        return
            time.sleep(0.1)
        raise RuntimeError(f"server {self.name} did not start:\n{tail(self.log_path)}")

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                cmdline = " ".join(child.cmdline())
                if "resource_tracker" not in cmdline and child.is_running():
                    pids.append(child.pid)
        return pids

    def workers_with_connection(self) -> list[int]:
        """The workers holding an established client connection on our port."""
        holders = []
        for pid in self.worker_pids():
            with contextlib.suppress(psutil.Error):
                for conn in psutil.Process(pid).net_connections(kind="tcp"):
                    mine = conn.laddr and conn.laddr.port == self.port and conn.raddr
                    if mine and conn.status == psutil.CONN_ESTABLISHED:
                        holders.append(pid)
                        break
        return holders

    def workers_writing_under(self, folder: Path) -> dict[int, tuple[int, Path]]:
        """Each worker with a file open under ``folder`` (a spool): its largest such file."""
        found: dict[int, tuple[int, Path]] = {}
        prefix = str(folder.resolve())
        for pid in self.worker_pids():
            with contextlib.suppress(psutil.Error):
                for f in psutil.Process(pid).open_files():
                    if f.path.startswith(prefix):
                        with contextlib.suppress(OSError):
                            size = os.stat(f.path).st_size
                            if size >= found.get(pid, (-1, Path()))[0]:
                                found[pid] = (size, Path(f.path))
        return found

    def startups(self) -> int:
        """How many workers have started so far (restarts included)."""
        return _count_startups(self.log_path)

    def wait_workers(self, count: int, timeout: float = SERVER_START_SECONDS) -> None:
        """Until ``count`` worker start-ups were logged and every worker is alive again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.startups() >= count and len(self.worker_pids()) >= self.workers:
                return
            time.sleep(0.1)
        raise RuntimeError(f"server {self.name}: workers did not come back:\n{tail(self.log_path)}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        # workers left behind (their own process group is ours: start_new_session)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _count_startups(path: Path) -> int:
    try:
        return path.read_bytes().count(b"Application startup complete.")
    except OSError:
        return 0


# --------------------------------------------------------------------------------------------
# Tenants, over HTTP


def admin_headers(platform_id: str, user_id: str = "root") -> dict[str, str]:
    return bearer(user_id, platform_id, "admin", secret=JWT_SECRET, expires_in=7200)


@dataclass
class Tenant:
    """A platform with groups, each bound to one integration (``address``: the first)."""

    platform_id: str
    base_url: str
    admin: dict[str, str]
    group_ids: list[str] = field(default_factory=list)
    integrations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def group_id(self) -> str:
        return self.group_ids[0]

    @property
    def integration_id(self) -> str:
        return str(self.integrations[0]["id"])

    @property
    def address(self) -> str:
        return str(self.integrations[0]["address"])

    @property
    def addresses(self) -> list[str]:
        return [str(i["address"]) for i in self.integrations]

    def route(self, index: int) -> tuple[str, str]:
        """(address, integration id) for the ``index``-th mail: round-robin over the tenant's
        integrations, so that a run stays under the per-integration rate limits."""
        integration = self.integrations[index % len(self.integrations)]
        return str(integration["address"]), str(integration["id"])


# The most distinct mails a test sends to one integration. The production default limits allow
# 50 a minute (and 120 in 5 minutes) per integration; a mail may be counted more than once
# (each retry of one that failed is counted again), so 10 leaves room for four attempts each.
MAILS_PER_INTEGRATION = 10


def integrations_for(mails: int) -> int:
    """How many integrations a tenant needs for ``mails`` distinct mails (see ``route``)."""
    return max(1, -(-mails // MAILS_PER_INTEGRATION))


async def create_platform(client: httpx.AsyncClient, base_url: str, plan: str = "premium") -> str:
    platform_id = f"rel-{uuid.uuid4().hex[:12]}"
    r = await client.post(
        f"{base_url}/v1/platforms",
        json={"id": platform_id, "name": f"Reliability {platform_id}", "plan": plan},
        headers=OPERATOR,
    )
    assert r.status_code == 201, r.text
    return platform_id


async def create_tenant(
    base_url: str, *, plan: str = "premium", integrations: int = 1, **fields: Any
) -> Tenant:
    """A fresh platform, and ``integrations`` groups each with one integration (``fields``)."""
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        platform_id = await create_platform(client, base_url, plan)
        tenant = Tenant(platform_id, base_url, admin_headers(platform_id))
        for index in range(integrations):
            r = await client.post(
                f"{base_url}/v1/groups", json={"name": f"Group {index}"}, headers=tenant.admin
            )
            assert r.status_code == 201, r.text
            tenant.group_ids.append(str(r.json()["id"]))
            r = await client.post(
                f"{base_url}/v1/integrations",
                json={"title": f"Inbox {index}", "group_id": tenant.group_ids[-1], **fields},
                headers=tenant.admin,
            )
            assert r.status_code == 201, r.text
            tenant.integrations.append(r.json())
    return tenant


# --------------------------------------------------------------------------------------------
# Mail: each provider's request, built once so that a re-send is what a provider re-sends

PROVIDERS = ("mailgun", "mailgun_mime", "sendgrid", "postmark", "mime")
RATE_LIMITED_CODE = {"mailgun": 429, "sendgrid": 503, "postmark": 429, "mime": 429}


@dataclass
class Attempt:
    status_code: int | None  # None: no answer (connection refused, reset, timeout)
    status: str | None  # the answer's body status
    error: str | None = None
    at: float = 0.0

    @property
    def ok(self) -> bool:
        """2xx with a final status (accepted, duplicate or a refusal answered 2xx)."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def posted(self) -> bool:
        return self.ok and self.status in ("accepted", "duplicate")


@dataclass
class Mail:
    """One distinct email, as one provider sends it; ``targets``: integration ids it posts to."""

    provider: str
    subject: str
    path: str
    content: bytes
    headers: dict[str, str]
    targets: list[str]
    attachments: list[tuple[str, bytes]] = field(default_factory=list)
    refused: bool = False  # expected to be refused for good
    attempts: list[Attempt] = field(default_factory=list)

    def copy(self, *, path: str | None = None, targets: Sequence[str] | None = None) -> Mail:
        """The same request again (a retry, a double send), optionally to other recipients."""
        return Mail(
            self.provider,
            self.subject,
            path or self.path,
            self.content,
            dict(self.headers),
            list(targets if targets is not None else self.targets),
            list(self.attachments),
            self.refused,
        )

    @property
    def api_provider(self) -> str:
        return "mailgun" if self.provider.startswith("mailgun") else self.provider

    @property
    def answered_2xx(self) -> bool:
        return any(a.ok for a in self.attempts)

    @property
    def posted(self) -> bool:
        return any(a.posted for a in self.attempts)

    @property
    def done(self) -> bool:
        """Final from the provider's point of view: it will not send this mail again."""
        if not self.attempts:
            return False
        last = self.attempts[-1]
        if last.status_code is None:
            return False
        code = last.status_code
        return 200 <= code < 300 or code in (403, 406, 422)


def multipart(
    fields: Mapping[str, str | bytes], files: Sequence[tuple[str, str, bytes]]
) -> tuple[bytes, dict[str, str]]:
    """multipart/form-data as providers send it (always multipart, even without files)."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += (value.encode() if isinstance(value, str) else value) + b"\r\n"
    for name, filename, data in files:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _encode(**kwargs: Any) -> tuple[bytes, dict[str, str]]:
    request = httpx.Request("POST", "http://127.0.0.1/", **kwargs)
    body = request.read()
    return body, {"Content-Type": request.headers["Content-Type"]}


def mime_bytes(
    to: Sequence[str], subject: str, text: str, attachments: Sequence[tuple[str, bytes]]
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice Example <alice@example.org>"
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg.set_content(text)
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def build_mail(
    provider: str,
    recipients: Sequence[str],
    targets: Sequence[str],
    *,
    subject: str | None = None,
    attachments: Sequence[tuple[str, bytes]] = (),
    text: str = "Hello group",
    headers: dict[str, str] | None = None,
    refused: bool = False,
) -> Mail:
    """A mail in ``provider``'s format to ``recipients`` (posting to integrations ``targets``)."""
    subject = subject or f"mail {uuid.uuid4().hex}"
    files = list(attachments)
    extra_headers = dict(headers or {})
    if provider == "mailgun":
        form = mailgun_form(
            recipients[0],
            subject=subject,
            text=text,
            html=None,
            headers=[[k, v] for k, v in extra_headers.items()],
        )
        if len(recipients) > 1:
            form["recipient"] = ", ".join(recipients)
        upload = [(f"attachment-{i}", n, d) for i, (n, d) in enumerate(files, start=1)]
        if files:
            form["attachment-count"] = str(len(files))
            body, hdrs = multipart(form, upload)
        else:
            body, hdrs = _encode(data=form)
        path = "/inbound/mailgun"
    elif provider == "mailgun_mime":
        raw = _with_headers(mime_bytes(recipients, subject, text, files), extra_headers)
        fields: dict[str, str | bytes] = {
            "recipient": ", ".join(recipients),
            "sender": "alice@example.org",
            "from": "Alice Example <alice@example.org>",
            "subject": subject,
            "body-mime": raw,  # an ordinary field, as Mailgun sends it
            **sign_mailgun(),
        }
        body, hdrs = multipart(fields, [])
        path = "/inbound/mailgun/mime"
    elif provider == "sendgrid":
        message_id = make_msgid(domain="example.org")
        header_block = f"Message-ID: {message_id}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in extra_headers.items()
        )
        form = {
            "envelope": json.dumps({"to": list(recipients), "from": "alice@example.org"}),
            "from": "Alice Example <alice@example.org>",
            "to": ", ".join(recipients),
            "subject": subject,
            "text": text,
            "headers": header_block,
            "charsets": json.dumps({"text": "utf-8", "subject": "utf-8", "from": "utf-8"}),
            "attachments": str(len(files)),
            "attachment-info": json.dumps(
                {
                    f"attachment{i}": {"filename": n, "type": "application/octet-stream"}
                    for i, (n, _) in enumerate(files, start=1)
                }
            ),
        }
        upload = [(f"attachment{i}", n, d) for i, (n, d) in enumerate(files, start=1)]
        body, hdrs = multipart(form, upload)
        hdrs.update(basic())
        path = "/inbound/sendgrid"
    elif provider == "postmark":
        doc = postmark_json(
            recipients[0],
            subject=subject,
            text=text,
            attachments=[postmark_attachment(n, "application/octet-stream", d) for n, d in files],
            headers=[{"Name": k, "Value": v} for k, v in extra_headers.items()],
        )
        if len(recipients) > 1:
            doc["OriginalRecipient"] = ", ".join(recipients)
        body = json.dumps(doc).encode()
        hdrs = {"Content-Type": "application/json", **basic()}
        path = "/inbound/postmark"
    elif provider == "mime":
        body = _with_headers(mime_bytes(recipients, subject, text, files), extra_headers)
        query = "&".join(f"recipient={r}" for r in recipients)
        hdrs = {"Content-Type": "message/rfc822", **basic()}
        path = f"/inbound/mime?{query}"
    else:
        raise ValueError(provider)
    return Mail(provider, subject, path, body, hdrs, list(targets), files, refused)


def _with_headers(raw: bytes, headers: dict[str, str]) -> bytes:
    if not headers:
        return raw
    block = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
    return block + raw


async def send(client: httpx.AsyncClient, base_url: str, mail: Mail) -> Attempt:
    """POST the mail once; a transport error is an attempt without an answer."""
    try:
        r = await client.post(f"{base_url}{mail.path}", content=mail.content, headers=mail.headers)
    except httpx.HTTPError as exc:
        attempt = Attempt(None, None, f"{type(exc).__name__}: {exc}", time.monotonic())
    else:
        status = None
        with contextlib.suppress(ValueError, AttributeError):
            status = r.json().get("status")
        attempt = Attempt(r.status_code, status, None if r.is_success else r.text[:300])
        attempt.at = time.monotonic()
    mail.attempts.append(attempt)
    return attempt


async def send_all(
    base_urls: Sequence[str],
    mails: Sequence[Mail],
    *,
    concurrency: int = 20,
    on_progress: Callable[[int], None] | None = None,
    deadline: float = 120.0,
    pause: float = 0.0,
) -> None:
    """Send each mail once from ``concurrency`` senders, spread over ``base_urls``; each sender
    waits ``pause`` seconds between its mails."""
    queue: asyncio.Queue[tuple[int, Mail]] = asyncio.Queue()
    for item in enumerate(mails):
        queue.put_nowait(item)
    sent = 0
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while True:
            try:
                index, mail = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await send(client, base_urls[index % len(base_urls)], mail)
            sent += 1
            if on_progress is not None:
                on_progress(sent)
            if pause:
                await asyncio.sleep(pause)

    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=limits) as client:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(sender(client) for _ in range(concurrency)))


async def resend_until_done(
    base_urls: Sequence[str],
    mails: Sequence[Mail],
    *,
    rounds: int = 20,
    pause: float = 0.5,
    concurrency: int = 10,
) -> int:
    """Re-send every mail not yet answered for good, as a provider retries; bounded rounds."""
    resent = 0
    for _ in range(rounds):
        pending = [m for m in mails if not m.done]
        if not pending:
            return resent
        resent += len(pending)
        await send_all(base_urls, pending, concurrency=concurrency)
        if any(not m.done for m in mails):
            await asyncio.sleep(pause)
    return resent


def payload(size: int, seed: str) -> bytes:
    """``size`` deterministic bytes, different for every seed."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def mixed_mails(
    tenant: Tenant, count: int, *, seed: str, max_attachment: int = 48 * 1024
) -> list[Mail]:
    """``count`` distinct mails over every provider, about half with one to three attachments,
    spread over the tenant's integrations (``Tenant.route``)."""
    mails = []
    for i in range(count):
        provider = PROVIDERS[i % len(PROVIDERS)]
        files: list[tuple[str, bytes]] = []
        if i % 2 == 0:
            for j in range(1 + i % 3):
                size = 1 + (i * 7919 + j * 104729) % max_attachment
                files.append((f"file-{i}-{j}.bin", payload(size, f"{seed}-{i}-{j}")))
        address, integration_id = tenant.route(i)
        mails.append(build_mail(provider, [address], [integration_id], attachments=files))
    return mails


# --------------------------------------------------------------------------------------------
# The database, read directly


@dataclass
class StoredAttachment:
    filename: str
    size: int
    sha256: str


@dataclass
class StoredPost:
    id: str
    platform_id: str
    integration_id: str
    subject: str
    attachments: list[StoredAttachment] = field(default_factory=list)


class Database:
    """Direct reads of the service's tables (asyncpg, no pool)."""

    def __init__(self, url: str) -> None:
        self.url = url

    @contextlib.asynccontextmanager
    async def engine(self) -> AsyncIterator[AsyncEngine]:
        engine = create_engine(self.url, poolclass=sa.NullPool)
        try:
            yield engine
        finally:
            await engine.dispose()

    async def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        async with self.engine() as engine, engine.connect() as conn:
            result = await conn.execute(sa.text(sql), params)
            return [tuple(row) for row in result.fetchall()]

    async def posts(self, platform_ids: Sequence[str]) -> list[StoredPost]:
        rows = await self.rows(
            "SELECT p.id, p.platform_id, p.integration_id, p.subject, a.filename, a.size, "
            "a.sha256 FROM posts p LEFT JOIN attachments a ON a.post_id = p.id "
            "WHERE p.platform_id = ANY(:ids) ORDER BY p.id, a.position",
            ids=list(platform_ids),
        )
        posts: dict[str, StoredPost] = {}
        for row in rows:
            post = posts.setdefault(
                str(row[0]), StoredPost(str(row[0]), row[1], str(row[2]), row[3])
            )
            if row[4] is not None:
                post.attachments.append(StoredAttachment(row[4], int(row[5]), row[6]))
        return list(posts.values())

    async def named_blobs(self, platform_ids: Sequence[str]) -> set[str]:
        """Every blob a row of these platforms names: attachments and kept contents."""
        rows = await self.rows(
            "SELECT sha256 FROM attachments WHERE platform_id = ANY(:ids) "
            "UNION SELECT content_sha256 FROM deliveries "
            "WHERE platform_id = ANY(:ids) AND content_sha256 IS NOT NULL",
            ids=list(platform_ids),
        )
        return {str(r[0]) for r in rows}

    async def count(self, sql: str, **params: Any) -> int:
        rows = await self.rows(sql, **params)
        return int(rows[0][0])


def blob_path(blob_dir: Path, sha256: str) -> Path:
    return blob_dir / "objects" / sha256[:2] / sha256[2:4] / sha256


def blob_intact(blob_dir: Path, sha256: str) -> bool:
    path = blob_path(blob_dir, sha256)
    try:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == sha256


# --------------------------------------------------------------------------------------------
# The summary the run prints and writes


class Summary:
    """Invariants checked with their counts, summed over the session."""

    def __init__(self) -> None:
        self.figures: dict[str, float] = {}

    def record(self, invariant: str, count: float) -> None:
        """Add ``count`` (an int, or a measure such as megabytes) to the session's figure."""
        value = self.figures.get(invariant, 0) + (count if isinstance(count, float) else int(count))
        self.figures[invariant] = round(value, 3) if isinstance(value, float) else value

    HEADLINE = (
        "deliveries sent",
        "faults injected",
        "posts lost",
        "duplicates",
        "partial posts",
        "refused mails posted",
        "blobs missing",
        "events lost",
        "events duplicated",
    )

    def lines(self) -> list[str]:
        return [f"{name}: {count}" for name, count in self.figures.items()]

    def headline(self) -> str:
        """The figures docs quote, in a fixed order (those recorded in this run)."""
        return "; ".join(f"{k}: {self.figures[k]}" for k in self.HEADLINE if k in self.figures)

    def write(self, path: Path, **extra: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"headline": self.headline(), "figures": self.figures, **extra}
        path.write_text(json.dumps(document, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# The invariants every fault test ends with


@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    refused_posted: list[str] = field(default_factory=list)
    missing_blobs: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)

    def problems(self) -> dict[str, list[str]]:
        return {k: v for k, v in self.__dict__.items() if v}


def _expected(mail: Mail) -> list[tuple[str, int, str]]:
    return sorted((n, len(d), hashlib.sha256(d).hexdigest()) for n, d in mail.attachments)


def _stored(post: StoredPost) -> list[tuple[str, int, str]]:
    return sorted((a.filename, a.size, a.sha256) for a in post.attachments)


async def examine(
    db: Database,
    blob_dir: Path,
    mails: Sequence[Mail],
    platform_ids: Sequence[str],
    *,
    final: bool,
) -> Findings:
    """Compare what was answered with what the database and the blob folder hold."""
    found = Findings()
    posts = await db.posts(platform_ids)
    by_subject: dict[str, list[StoredPost]] = {}
    for post in posts:
        by_subject.setdefault(post.subject, []).append(post)
    targets: dict[str, set[str]] = {}  # the same mail may be sent as several requests
    for mail in mails:
        targets.setdefault(mail.subject, set()).update(mail.targets)
    found.stray = [p.id for p in posts if p.integration_id not in targets.get(p.subject, ())]
    checked: set[str] = set()
    for mail in mails:
        mine = by_subject.get(mail.subject, [])
        for post in mine:
            if post.id not in checked and _stored(post) != _expected(mail):
                found.partial.append(f"{mail.subject} ({mail.provider}): {_stored(post)}")
            checked.add(post.id)
        if mail.refused:
            if mine:
                found.refused_posted.append(mail.subject)
            continue
        for target in mail.targets:
            n = sum(1 for p in mine if p.integration_id == target)
            if n > 1:
                found.duplicates.append(f"{mail.subject} ({mail.provider}): {n} posts")
            elif n == 0 and (mail.posted or final):
                found.lost.append(f"{mail.subject} ({mail.provider}): {mail.attempts[-1:]}")
        if final and not mail.done:
            found.unfinished.append(f"{mail.subject} ({mail.provider}): {mail.attempts[-1:]}")
    for sha in sorted(await db.named_blobs(platform_ids)):
        if not blob_intact(blob_dir, sha):
            found.missing_blobs.append(sha)
    return found


def make_orphan_blob(blob_dir: Path, age_seconds: float = 7200) -> str:
    """A blob no row names, older than any grace period."""
    data = os.urandom(4096)
    sha = hashlib.sha256(data).hexdigest()
    path = blob_path(blob_dir, sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time() - age_seconds
    os.utime(path, (old, old))
    return sha


def run_cleanup(env: dict[str, str], grace_seconds: float | None = 0) -> str:
    """``python -m app cleanup`` (``grace_seconds``: None for the command's default grace)."""
    grace = [] if grace_seconds is None else ["--grace-seconds", str(grace_seconds)]
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "app", "cleanup", *grace],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"cleanup failed: {result.stdout}\n{result.stderr}"
    return result.stdout


async def check_invariants(
    summary: Summary,
    *,
    db: Database,
    env: dict[str, str],
    mails: Sequence[Mail],
    platform_ids: Sequence[str],
    base_urls: Sequence[str],
    faults: int,
    label: str,
) -> Findings:
    """The invariants every fault test ends with.

    1. every mail answered 2xx (accepted/duplicate) has its complete post, byte-identical;
    2. no post is partial; a refused mail leaves no post;
    3. re-sending every mail not answered for good, as a provider would, ends with exactly one
       post per distinct mail and target;
    4. no row names a missing blob; the cleanup command removes an old blob no row names and
       keeps every named one.
    """
    blob_dir = Path(env["MAILSLOT_BLOB_DIR"])
    first = await examine(db, blob_dir, mails, platform_ids, final=False)
    answered = sum(1 for m in mails if m.answered_2xx)
    resent_mails = [m for m in mails if not m.done]
    resent = await resend_until_done(base_urls, mails)
    final = await examine(db, blob_dir, mails, platform_ids, final=True)
    orphan = make_orphan_blob(blob_dir)
    report = await asyncio.to_thread(run_cleanup, env)  # the loop may be serving a proxy
    orphan_removed = not blob_path(blob_dir, orphan).exists()
    after_cleanup = await examine(db, blob_dir, mails, platform_ids, final=True)

    attempts = sum(len(m.attempts) for m in mails)
    posts_checked = sum(len(m.targets) for m in mails if not m.refused)
    attachments_checked = sum(len(m.attachments) * len(m.targets) for m in mails if not m.refused)
    summary.record("deliveries sent", attempts)
    summary.record("distinct mails", len(mails))
    summary.record("faults injected", faults)
    summary.record("mails answered 2xx before re-sending", answered)
    summary.record("mails re-sent after a non-2xx or no answer", len(resent_mails))
    summary.record("re-send attempts", resent)
    summary.record("posts checked complete", posts_checked)
    summary.record("attachments checked byte-identical", attachments_checked)
    summary.record("posts lost", len(first.lost) + len(final.lost))
    summary.record("duplicates", len(final.duplicates) + len(first.duplicates))
    summary.record("partial posts", len(first.partial) + len(final.partial))
    summary.record("refused mails posted", len(final.refused_posted))
    summary.record("stray posts", len(final.stray))
    summary.record("blobs missing", len(final.missing_blobs) + len(after_cleanup.missing_blobs))
    summary.record("orphan blobs left by cleanup", 0 if orphan_removed else 1)

    problems = {
        "before re-sending": first.problems(),
        "after re-sending": final.problems(),
        "after cleanup": after_cleanup.problems(),
    }
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, f"{label}: invariants broken: {json.dumps(problems, indent=1)[:6000]}"
    assert orphan_removed, f"{label}: cleanup left an unnamed old blob ({report})"
    return final


# --------------------------------------------------------------------------------------------
# A loopback TCP proxy between the service and PostgreSQL, which the test can sever


class Proxy:
    """Forwards 127.0.0.1:``port`` to the cluster; cuts connections on demand or on a pattern."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._triggers: list[tuple[bytes, bool]] = []  # (pattern, forward it first)
        self._muted: dict[int, asyncio.Event] = {}  # pair: set once PostgreSQL answered
        self._handlers: set[asyncio.Task[None]] = set()
        self.cuts = 0  # connections cut, by a trigger or by sever()
        self.triggered = 0  # of which by a trigger (a chosen statement, mid-transaction)
        self.refusing = False

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.sever()
        handlers = [t for t in self._handlers if not t.done()]
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def cut_on(self, pattern: bytes, *, after_forwarding: bool, times: int = 1) -> None:
        """Cut the connection whose client sends ``pattern``: before it reaches PostgreSQL, or
        after (the statement runs; its answer never arrives)."""
        self._triggers.extend([(pattern, after_forwarding)] * times)

    def pending_triggers(self) -> int:
        return len(self._triggers)

    def disarm(self) -> None:
        self._triggers.clear()

    def sever(self) -> int:
        """Cut every open connection at once (both directions, with a reset)."""
        pairs = list(self._pairs)
        for client, upstream in pairs:
            self._abort(client, upstream)
        self.cuts += len(pairs)
        return len(pairs)

    @staticmethod
    def _abort(*writers: asyncio.StreamWriter) -> None:
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        if self.refusing:
            self._abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self._abort(writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, pair, upstream=True),
                self._pump(up_reader, writer, pair, upstream=False),
            )
        finally:
            self._pairs.discard(pair)
            self._muted.pop(id(pair), None)
            self._abort(writer, up_writer)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        *,
        upstream: bool,
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                muted = None if upstream else self._muted.get(id(pair))
                if muted is not None:  # the answer to a statement whose connection is being
                    muted.set()  # cut: PostgreSQL has acted on it; the answer is lost
                    continue
                trigger = self._match(chunk) if upstream else None
                if trigger is None:
                    writer.write(chunk)
                    await writer.drain()
                    continue
                if not trigger[1]:
                    self.cuts += 1
                    self._abort(*pair)
                    return
                answered = self._muted[id(pair)] = asyncio.Event()
                writer.write(chunk)
                await writer.drain()
                # cut once PostgreSQL has acted on it (its answer arrives, and is dropped)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answered.wait(), ANSWER_SECONDS)
                self.cuts += 1
                self._abort(*pair)
                return
        except (ConnectionError, OSError):
            pass
        finally:
            if not upstream and id(pair) in self._muted:
                self._muted[id(pair)].set()  # no answer will come: stop waiting for it
            self._abort(*pair)

    def _match(self, chunk: bytes) -> tuple[bytes, bool] | None:
        for index, trigger in enumerate(self._triggers):
            if trigger[0] in chunk:
                del self._triggers[index]
                self.triggered += 1
                return trigger
        return None


# --------------------------------------------------------------------------------------------
# Mounts


def mount_tmpfs(path: Path, size_bytes: int) -> bool:
    """A small tmpfs at ``path`` (we run as root); False where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [which("mount"), "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def unmount(path: Path) -> None:
    result = subprocess.run([which("umount"), str(path)], capture_output=True, check=False)
    if result.returncode != 0:
        subprocess.run([which("umount"), "-l", str(path)], capture_output=True, check=False)


def fill_disk(path: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``path`` up to ``leave`` free bytes with one file."""
    filler = path / "filler.bin"
    free = shutil.disk_usage(path).free - leave
    with filler.open("wb") as f:
        chunk = b"\0" * (1024 * 64)
        while free > 0:
            try:
                f.write(chunk[: min(len(chunk), free)])
                f.flush()
            except OSError:
                break
            free -= len(chunk)
    return filler


def all_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under ``paths``; a folder the server removes while we walk is simply skipped."""
    for root in paths:
        for folder, _, names in os.walk(root):  # os.walk ignores folders that vanish
            for name in names:
                path = Path(folder) / name
                if path.is_file():
                    yield path
