"""``make postfix-check``: a real Postfix, set up as the README says, delivering to mailslot.

Run as root on Debian (CI does). Installs Postfix from Debian's packages when it is missing,
then, all inside one temporary folder that every user can enter:

- a copy of the project built as the README says (``make install PYTHON=/usr/bin/python3``: an
  interpreter that the ``mailslot`` user can run, unlike one under ``/root``);
- the service (uvicorn, SQLite in that folder) and ``python -m app postfix-policy``;
- a private Postfix instance (its own config folder, queue and log file): SMTP on a high
  loopback port only, ``default_transport`` and ``relay_transport`` set to ``error`` so that no
  mail can leave the machine, the ``mailslot`` pipe service and transport map of the README,
  and the policy server in ``smtpd_recipient_restrictions``.

Mail is then sent with smtplib and each outcome read from Postfix's log (``maillog_file``), its
queue (``postqueue -j``) and the service's API. Everything is stopped and removed at the end,
also on failure, which prints the end of every log. The machine's own Postfix (if any), its
PostgreSQL and its Redis are never touched; the ``mailslot`` system user is created when
missing and kept.
"""

# ruff: noqa: S603, S607, T201  (fixed commands: apt-get, Postfix's tools, the project's own)
from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "in.example.com"
ALIAS_DOMAIN = "alias.example.net"  # routed to mailslot by Postfix, but not the service's domain
SENDER = "alice@sender.example"  # its bounces are discarded (transport map), never sent
SYSTEM_PYTHON = "/usr/bin/python3"
RELAY_USER = "mailslot"
MiB = 1024 * 1024
MAX_REQUEST_BYTES = 64 * MiB  # the service's default MAILSLOT_MAX_REQUEST_BYTES
WAIT_SECONDS = 60.0
T = TypeVar("T")


class CheckFailed(Exception):
    """One expectation was not met."""


def say(message: str) -> None:
    print(f"postfix-check: {message}", flush=True)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with what it printed."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise CheckFailed(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], seconds: float = WAIT_SECONDS) -> T:
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {seconds:g}s waiting for {what}")
        time.sleep(0.2)


def tail(path: Path, size: int = 6000) -> str:
    try:
        return path.read_bytes()[-size:].decode("utf-8", "replace")
    except OSError as exc:
        return f"({path}: {exc.strerror})"


# --- Postfix from Debian's packages --------------------------------------------------------------


def ensure_postfix() -> None:
    if shutil.which("postconf", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        return
    say("installing Postfix from Debian's packages")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # "No configuration": the package writes no main.cf and starts no system instance.
    run(
        ["debconf-set-selections"],
        input="postfix postfix/main_mailer_type select No configuration\n",
        env=environment,
    )
    run(["apt-get", "update", "-q"], env=environment)
    run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postfix"],
        env=environment,
    )


def ensure_relay_user() -> pwd.struct_passwd:
    """The README's system user (pipe(8) never runs a command as root)."""
    try:
        return pwd.getpwnam(RELAY_USER)
    except KeyError:
        say(f"creating the system user {RELAY_USER}")
        run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                "/nonexistent",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                RELAY_USER,
            ]
        )
        return pwd.getpwnam(RELAY_USER)


# --- the scene ------------------------------------------------------------------------------------


@dataclass
class Scene:
    base: Path
    smtp_port: int = field(default_factory=free_port)
    service_port: int = field(default_factory=free_port)
    policy_port: int = field(default_factory=free_port)
    inbound_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    secrets: dict[str, str] = field(
        default_factory=lambda: {
            name: secrets.token_urlsafe(32)
            for name in ("JWT_SECRET", "OPERATOR_TOKEN", "URL_SIGNING_KEYS")
        }
    )
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    postfix_started: bool = False

    @property
    def project(self) -> Path:  # the README's /opt/mailslot
        return self.base / "mailslot"

    @property
    def etc(self) -> Path:  # the README's /etc/mailslot
        return self.base / "etc-mailslot"

    @property
    def password_file(self) -> Path:
        return self.etc / "relay-password"

    @property
    def postfix(self) -> Path:  # the instance's config folder (the README's /etc/postfix)
        return self.base / "postfix"

    @property
    def maillog(self) -> Path:
        return self.base / "maillog"

    @property
    def python(self) -> Path:
        return self.project / ".venv" / "bin" / "python"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}"

    def environment(self) -> dict[str, str]:
        """The service's settings (production, as deployed), for it and the policy server."""
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "MAILSLOT_ENVIRONMENT": "production",
            "MAILSLOT_DATABASE_URL": f"sqlite:///{self.base / 'var' / 'mailslot.db'}",
            "MAILSLOT_BLOB_DIR": str(self.base / "var" / "blobs"),
            "MAILSLOT_INBOUND_DOMAIN": DOMAIN,
            "MAILSLOT_INBOUND_USERNAME": RELAY_USER,
            "MAILSLOT_INBOUND_PASSWORD": f"retired-password-0123456789,{self.inbound_password}",
            "MAILSLOT_JWT_AUDIENCE": "mailslot",
            "MAILSLOT_JWT_ISSUER": "postfix-check",
            "MAILSLOT_RATE_LIMITS": "",
            **{f"MAILSLOT_{name}": value for name, value in self.secrets.items()},
        }

    # --- building it, as the README says ---

    def install_project(self, uv: str) -> None:
        """A copy of the checkout (tracked files), built on an interpreter every user can run."""
        files = run(["git", "ls-files", "-c", "-z"], cwd=ROOT).stdout.split("\0")
        for name in filter(None, files):
            source = ROOT / name
            if source.is_file():
                target = self.project / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        say(f"building {self.project}/.venv on {SYSTEM_PYTHON} (make install PYTHON=...)")
        run(["make", "-C", str(self.project), "install", f"PYTHON={SYSTEM_PYTHON}", f"UV={uv}"])
        run(["chmod", "-R", "a+rX", str(self.project)])
        # The README's test: the relay's interpreter runs as the mailslot user.
        run(["runuser", "-u", RELAY_USER, "--", str(self.python), "-m", "app", "relay", "--help"])

    def write_password_file(self, user: pwd.struct_passwd) -> None:
        # install -d -m 0750 -o root -g mailslot /etc/mailslot; the file 0400, owned by mailslot
        run(["install", "-d", "-m", "0750", "-o", "root", "-g", RELAY_USER, str(self.etc)])
        run(["install", "-m", "0400", "-o", RELAY_USER, "/dev/null", str(self.password_file)])
        with self.password_file.open("w", encoding="utf-8") as file:  # root may write it
            file.write(self.inbound_password + "\n")

    def migrate(self) -> None:
        run(
            [str(self.project / ".venv" / "bin" / "alembic"), "upgrade", "head"],
            cwd=self.project,
            env=self.environment(),
        )

    def start(self, name: str, command: list[str], **settings: str) -> None:
        log = (self.base / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command,
            cwd=self.project,
            env={**self.environment(), **settings},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def start_service(self) -> None:
        self.start(
            "service",
            [
                str(self.python),
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.service_port),
            ],
        )
        wait_for("the service", self._ready)

    def _ready(self) -> bool | None:
        process = self.processes["service"]
        if process.poll() is not None:
            raise CheckFailed(f"the service exited {process.returncode}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200 or None
        except httpx.HTTPError:
            return None

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def start_policy(self, **settings: str) -> None:
        self.start(
            "policy",
            [
                str(self.python),
                "-m",
                "app",
                "postfix-policy",
                "--listen",
                f"127.0.0.1:{self.policy_port}",
            ],
            **settings,
        )

        def listening() -> bool | None:
            if self.processes["policy"].poll() is not None:
                raise CheckFailed("the policy server exited")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.policy_port), timeout=1),
            ):
                return True
            return None

        wait_for("the policy server", listening)

    def configure_postfix(self) -> None:
        self.postfix.mkdir(mode=0o755)
        (self.base / "queue").mkdir(mode=0o755)
        (self.base / "data").mkdir(mode=0o700)
        run(["chown", "postfix", str(self.base / "data")])
        relay_env = " ".join(
            [
                "TZ",
                "MAIL_CONFIG",
                "LANG",
                f"MAILSLOT_RELAY_URL={self.url}",
                f"MAILSLOT_RELAY_USERNAME={RELAY_USER}",
                f"MAILSLOT_RELAY_PASSWORD_FILE={self.password_file}",
            ]
        )
        main_cf = f"""\
# A private instance for make postfix-check: loopback only, nothing leaves the machine.
compatibility_level = 3.6
syslog_name = postfix-mailslot-check
queue_directory = {self.base / "queue"}
data_directory = {self.base / "data"}
maillog_file_prefixes = {self.base}
maillog_file = {self.maillog}
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = postfix-check.mailslot.localhost
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:5.3.0 local delivery is disabled (postfix-check)
default_transport = error:5.3.0 outbound mail is disabled (postfix-check)
relay_transport = error:5.3.0 outbound mail is disabled (postfix-check)
biff = no
smtpd_banner = $myhostname ESMTP
# The README's settings.
relay_domains = {DOMAIN}, {ALIAS_DOMAIN}
transport_maps = hash:{self.postfix / "transport"}
mailslot_destination_recipient_limit = 1
message_size_limit = {MAX_REQUEST_BYTES}
mailbox_size_limit = 0
smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:{self.policy_port}
"""
        # The README's pipe service, with -o export_environment on it alone; no chroot.
        master_cf = f"""\
127.0.0.1:{self.smtp_port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
mailslot  unix  -       n       n       -       10      pipe
  -o {{ export_environment = {relay_env} }}
  flags=RXq user={RELAY_USER} directory={self.project} null_sender=
  argv={self.python} -m app relay --sender=${{sender}} --recipient=${{recipient}}
"""
        (self.postfix / "main.cf").write_text(main_cf, encoding="utf-8")
        (self.postfix / "master.cf").write_text(master_cf, encoding="utf-8")
        (self.postfix / "transport").write_text(
            f"{DOMAIN}    mailslot:\n{ALIAS_DOMAIN}    mailslot:\nsender.example    discard:\n",
            encoding="utf-8",
        )
        run(["postmap", "-c", str(self.postfix), str(self.postfix / "transport")])
        run(["postfix", "-c", str(self.postfix), "check"])

    def start_postfix(self) -> None:
        run(["postfix", "-c", str(self.postfix), "start"])
        self.postfix_started = True

        def accepting() -> bool | None:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1),
            ):
                return True
            return None

        wait_for("Postfix's smtpd", accepting)

    def stop_postfix(self) -> None:
        if not self.postfix_started:
            return
        subprocess.run(
            ["postfix", "-c", str(self.postfix), "stop"], capture_output=True, check=False
        )
        pid_file = self.base / "queue" / "pid" / "master.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().split()[0])
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        self.postfix_started = False

    def diagnostics(self) -> str:
        queue = subprocess.run(
            ["postqueue", "-c", str(self.postfix), "-p"],
            capture_output=True,
            text=True,
            check=False,
        )
        parts = [f"--- Postfix's log ({self.maillog}), the end:\n{tail(self.maillog)}"]
        parts.append(f"--- postqueue -p:\n{queue.stdout}{queue.stderr}")
        for name in ("service", "policy"):
            parts.append(f"--- the {name}'s log, the end:\n{tail(self.base / f'{name}.log')}")
        return "\n".join(parts)

    # --- reading the outcome ---

    def queue(self) -> list[dict[str, Any]]:
        output = run(["postqueue", "-c", str(self.postfix), "-j"]).stdout
        return [json.loads(line) for line in output.splitlines() if line.strip()]

    def flush(self) -> None:
        run(["postqueue", "-c", str(self.postfix), "-f"])

    def delivery(self, queue_id: str, wanted: set[str]) -> tuple[str, str, str]:
        """(dsn, status, text) of the first log line for this queue id with a wanted status."""
        pattern = re.compile(
            rf"\b{queue_id}: to=<[^>]*>, .*?\bdsn=(\d\.\d{{1,3}}\.\d{{1,3}}), "
            rf"status=(\w+) \((.*)\)$"
        )

        def find() -> tuple[str, str, str] | None:
            for line in tail(self.maillog, 200_000).splitlines():
                match = pattern.search(line)
                if match and match[2] in wanted:
                    return match[1], match[2], match[3]
            return None

        return wait_for(f"{queue_id} to be {' or '.join(sorted(wanted))}", find)


# --- the API, as a host platform and an operator use it ------------------------------------------


class Api:
    def __init__(self, scene: Scene) -> None:
        sys.path.insert(0, str(ROOT))
        from app.cli import mint_token
        from app.config import Settings
        from app.models import Role

        values: dict[str, Any] = {
            key.removeprefix("MAILSLOT_").lower(): value
            for key, value in scene.environment().items()
            if key.startswith("MAILSLOT_")
        }
        settings = Settings(_env_file=None, **values)
        self.client = httpx.Client(base_url=scene.url, timeout=30)
        self.operator = {"Authorization": f"Bearer {scene.secrets['OPERATOR_TOKEN']}"}
        token = mint_token(settings, user_id="root", platform_id="check", role=Role.admin)
        self.admin = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, expected: int, **kwargs: Any) -> Any:
        r = self.client.request(method, path, **kwargs)
        if r.status_code != expected:
            raise CheckFailed(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def setup(self) -> tuple[str, str, str, str]:
        """A platform, a group and three integrations: (group id, address, a disabled one's,
        one that takes mail only from another domain)."""
        body = {"id": "check", "name": "postfix-check", "plan": "premium"}
        self.call("POST", "/v1/platforms", 201, json=body, headers=self.operator)
        group = self.call("POST", "/v1/groups", 201, json={"name": "Mail"}, headers=self.admin)
        made = [
            self.call(
                "POST",
                "/v1/integrations",
                201,
                json={"title": title, "group_id": group["id"]},
                headers=self.admin,
            )
            for title in ("From Postfix", "Disabled", "Restricted")
        ]
        path = f"/v1/integrations/{made[1]['id']}"
        self.call("PATCH", path, 200, json={"enabled": False}, headers=self.admin)
        path = f"/v1/integrations/{made[2]['id']}"
        only = {"allowed_senders": ["@elsewhere.example"]}
        self.call("PATCH", path, 200, json=only, headers=self.admin)
        address, disabled, restricted = (str(m["address"]) for m in made)
        return str(group["id"]), address, disabled, restricted

    def posts(self, group: str) -> list[dict[str, Any]]:
        page = self.call("GET", f"/v1/groups/{group}/posts", 200, headers=self.admin)
        return list(page["items"])

    def unrouted(self) -> list[dict[str, Any]]:
        page = self.call("GET", "/v1/unrouted-deliveries", 200, headers=self.operator)
        return list(page["items"])


# --- the cases -----------------------------------------------------------------------------------


def message(to: str, subject: str, attachment: bytes | None = None) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = f"Alice <{SENDER}>"
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = make_msgid(domain="sender.example")
    mail.set_content(f"{subject}\n")
    if attachment is not None:
        mail.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename="big.bin"
        )
    return mail


def send(scene: Scene, to: str, mail: EmailMessage) -> str:
    """Send over SMTP; the queue id Postfix answered to DATA."""
    with smtplib.SMTP("127.0.0.1", scene.smtp_port, timeout=60) as smtp:
        smtp.ehlo("client.sender.example")
        smtp.mail(SENDER)
        code, reply = smtp.rcpt(to)
        if code != 250:
            raise CheckFailed(f"RCPT TO:<{to}> answered {code} {reply.decode()}")
        code, reply = smtp.data(mail.as_bytes())
        found = re.search(rb"queued as ([0-9A-Za-z]+)", reply)
        if code != 250 or not found:
            raise CheckFailed(f"DATA answered {code} {reply.decode()}")
        return found[1].decode()


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)
    say(f"ok: {what}")


def cases(scene: Scene, api: Api) -> None:
    group, address, disabled, restricted = api.setup()
    local = address.partition("@")[0]

    # 1. Accepted: exactly one post.
    queue_id = send(scene, address, message(address, "Hello through Postfix"))
    dsn, status, _ = scene.delivery(queue_id, {"sent", "bounced", "deferred"})
    expect((dsn, status) == ("2.0.0", "sent"), f"accepted mail is sent (dsn={dsn} {status})")
    subjects = [p["subject"] for p in api.posts(group)]
    expect(subjects == ["Hello through Postfix"], f"exactly one post: {subjects}")

    # 2. An attachment over 5 MiB: bounced with 5.3.4 (message too big for the system).
    big = message(address, "Too big", attachment=os.urandom(5 * MiB + 1))
    queue_id = send(scene, address, big)
    dsn, status, text = scene.delivery(queue_id, {"sent", "bounced", "deferred"})
    expect(
        (dsn, status) == ("5.3.4", "bounced") and "attachment_too_large" in text,
        f"an oversized attachment bounces with 5.3.4 (dsn={dsn} {status}: {text})",
    )

    # 3. A domain that Postfix routes here but that is not the service's: bounced with 5.1.1,
    #    and logged as unrouted (it used to be answered 200 and vanish).
    wrong = f"{local}@{ALIAS_DOMAIN}"
    queue_id = send(scene, wrong, message(wrong, "To the alias domain"))
    dsn, status, text = scene.delivery(queue_id, {"sent", "bounced", "deferred"})
    expect(
        (dsn, status) == ("5.1.1", "bounced") and "unknown_recipient" in text,
        f"another domain bounces with 5.1.1 (dsn={dsn} {status}: {text})",
    )
    logged = [d["envelope_to"] for d in api.unrouted()]
    expect(wrong in logged, f"the mail to another domain is logged unrouted: {logged}")

    # 4. An unknown recipient at our domain: refused during the SMTP session.
    unknown = f"nobody.{secrets.token_hex(8)}@{DOMAIN}"
    try:
        with smtplib.SMTP("127.0.0.1", scene.smtp_port, timeout=60) as smtp:
            smtp.sendmail(SENDER, [unknown], message(unknown, "Nobody").as_bytes())
        raise CheckFailed("mail to an unknown recipient was accepted at SMTP time")
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = exc.recipients[unknown]
        expect(
            code == 550 and reply.startswith(b"5.1.1"),
            f"an unknown recipient is refused at RCPT TO: {code} {reply.decode()}",
        )

    # 5. A disabled integration: accepted at SMTP time (the delivery log records it), then
    #    bounced with 5.2.1.
    queue_id = send(scene, disabled, message(disabled, "To a disabled address"))
    dsn, status, text = scene.delivery(queue_id, {"sent", "bounced", "deferred"})
    expect(
        (dsn, status) == ("5.2.1", "bounced") and "integration_disabled" in text,
        f"a disabled address bounces with 5.2.1 (dsn={dsn} {status}: {text})",
    )

    # 5b. A sender the integration does not take mail from: bounced with 5.7.1.
    queue_id = send(scene, restricted, message(restricted, "From a sender not allowed"))
    dsn, status, text = scene.delivery(queue_id, {"sent", "bounced", "deferred"})
    expect(
        (dsn, status) == ("5.7.1", "bounced") and "sender_not_allowed" in text,
        f"a sender not allowed bounces with 5.7.1 (dsn={dsn} {status}: {text})",
    )

    # 6. The policy server down: a temporary refusal at RCPT TO (the client retries).
    scene.stop("policy")
    with smtplib.SMTP("127.0.0.1", scene.smtp_port, timeout=60) as smtp:
        smtp.ehlo("client.sender.example")
        smtp.mail(SENDER)
        code, reply = smtp.rcpt(address)
    expect(
        code == 451 and reply.startswith(b"4.3.5"),
        f"with the policy server down, RCPT TO is deferred: {code} {reply.decode()}",
    )
    # Its database unusable (a file that is not one): deferred too, never refused.
    broken = scene.base / "not-a-database.db"
    broken.write_bytes(b"not a database\n" * 512)
    scene.start_policy(MAILSLOT_DATABASE_URL=f"sqlite:///{broken}")
    with smtplib.SMTP("127.0.0.1", scene.smtp_port, timeout=60) as smtp:
        smtp.ehlo("client.sender.example")
        smtp.mail(SENDER)
        code, reply = smtp.rcpt(address)
    expect(
        code == 450 and reply.startswith(b"4.3.0"),
        f"with the policy server's database unusable, RCPT TO is deferred: {code} {reply.decode()}",
    )
    scene.stop("policy")
    scene.start_policy()

    # 7. The service down: deferred (4.x), kept in the queue; up again and flushed: one post.
    scene.stop("service")
    queue_id = send(scene, address, message(address, "While the service was down"))
    dsn, status, text = scene.delivery(queue_id, {"sent", "bounced", "deferred"})
    expect(
        status == "deferred" and dsn.startswith("4."),
        f"mail is deferred while the service is down (dsn={dsn} {status}: {text})",
    )
    queued = [entry["queue_id"] for entry in scene.queue()]
    expect(queue_id in queued, f"the deferred mail waits in the queue: {queued}")
    scene.start_service()
    scene.flush()
    dsn, status, _ = scene.delivery(queue_id, {"sent", "bounced"})
    expect((dsn, status) == ("2.0.0", "sent"), f"flushed, it is sent (dsn={dsn} {status})")
    subjects = [p["subject"] for p in api.posts(group)]
    expect(
        sorted(subjects) == ["Hello through Postfix", "While the service was down"],
        f"exactly one post of the deferred mail: {subjects}",
    )
    expect(scene.queue() == [], "the queue is empty")


# --- the run -------------------------------------------------------------------------------------


@contextlib.contextmanager
def terminated_on_sigterm() -> Iterator[None]:
    """SIGTERM (a CI timeout) unwinds like an error, so that everything is cleaned up."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    if os.geteuid() != 0:
        print("postfix-check runs as root (it installs Postfix and a system user)", file=sys.stderr)
        return 2
    uv = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".uv" / "bin" / "uv")
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="mailslot-postfix-check-"))
    base.chmod(0o755)  # mkdtemp makes 0700: Postfix and the mailslot user must enter it
    scene = Scene(base)
    failed = False
    with terminated_on_sigterm():
        try:
            ensure_postfix()
            user = ensure_relay_user()
            scene.install_project(uv)
            scene.write_password_file(user)
            scene.migrate()
            scene.start_service()
            scene.start_policy()
            scene.configure_postfix()
            scene.start_postfix()
            cases(scene, Api(scene))
        except (CheckFailed, OSError, httpx.HTTPError, smtplib.SMTPException) as exc:
            failed = True
            print(f"postfix-check: FAILED: {exc}", file=sys.stderr)
            print(scene.diagnostics(), file=sys.stderr)
        finally:
            scene.stop_postfix()
            for name in list(scene.processes):
                scene.stop(name)
            shutil.rmtree(base, ignore_errors=True)
    if failed:
        return 1
    say(f"all cases passed in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
