"""Logs never hold an address's secret token, a password or an Authorization value.

An integration's address is ``slug.<token>@domain``: the token is what makes it unguessable. The
relay sends it in the request line (``/inbound/mime?recipient=…``), which uvicorn's access log
writes out, and SQLAlchemy logs it among its parameters at INFO. ``app/logging.py`` redacts.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import DEV_OPERATOR_TOKEN, Settings
from app.logging import redact
from tests import databases
from tests.auth import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, OPERATOR_TOKEN, bearer
from tests.conftest import make_settings
from tests.factories import World
from tests.inbound.payloads import (
    INBOUND_PASSWORD,
    INBOUND_USER,
    MAILGUN_KEY,
    basic,
    mailgun_form,
    mime_message,
    postmark_json,
    sign_mailgun,
)

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "in.example.com"
WRONG_PASSWORD = "wrong-password-4242-secret"
GHOST = f"ghost.{'q7' * 13}@{DOMAIN}"  # looks like one of ours, belongs to nobody
JWT = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")
LOGGERS = (
    "",
    "mailslot",
    "sqlalchemy",
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "aiosqlite",
    "asyncpg",
    "httpx",
    "httpcore",
    "multipart",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "asyncio",
)


def credentials(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def address_secrets(address: str) -> list[str]:
    """The random token of an address, and its whole local part."""
    local = address.split("@", 1)[0]
    return [local, local.split(".", 1)[1]]


STATIC_SECRETS = [
    JWT_SECRET,
    OPERATOR_TOKEN,
    MAILGUN_KEY,
    INBOUND_PASSWORD,
    WRONG_PASSWORD,
    credentials(INBOUND_USER, INBOUND_PASSWORD),
    credentials(INBOUND_USER, WRONG_PASSWORD),
    DEV_OPERATOR_TOKEN,
    *address_secrets(GHOST),
]


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} is in the logs"
        assert secret.lower() not in text.lower(), f"{secret!r} is in the logs (another case)"
    assert JWT.search(text) is None, JWT.search(text)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "blobs",
        mailgun_signing_key=MAILGUN_KEY,
        inbound_username=INBOUND_USER,
        inbound_password=INBOUND_PASSWORD,
        rate_limits="",
    )


class TestRedact:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("to news.k3x9@in.example.com", "to <redacted>@in.example.com"),
            ("Alice <alice@example.org>", "Alice <<redacted>@example.org>"),
            ("recipient=news.k3x9%40in.example.com", "recipient=<redacted>%40in.example.com"),
            ("news.k3x9%2Btag%40in.example.com", "<redacted>%40in.example.com"),
            (
                '"POST /inbound/mime?recipient=a.b%40x.org&sender=c HTTP/1.1" 200',
                '"POST /inbound/mime?<redacted> HTTP/1.1" 200',
            ),
            ("GET /v1/integrations?group_id=1", "GET /v1/integrations?group_id=1"),
            ("Authorization: Basic bWFpbHNsb3Q6cHc=", "Authorization: Basic <redacted>"),
            ("{'authorization': 'Bearer abc.def'}", "{'authorization': 'Bearer <redacted>'}"),
            (
                "(b'authorization', b'Basic bWFpbHNsb3Q6cHc=')",
                "(b'authorization', b'Basic <redacted>')",
            ),
            ("sent Basic bWFpbHNsb3Q6cHc= again", "sent Basic <redacted> again"),
            ("token eyJhbGciOi.eyJzdWIi.sig0", "token <redacted>"),
            ("postgresql://app:s3cret@db:5432/x", "postgresql://<redacted>@db:5432/x"),
            ("inbound_password=hunter2 next", "inbound_password=<redacted> next"),
            ("A Bearer token is required.", "A Bearer token is required."),
            ("Basic authentication failed", "Basic authentication failed"),
            ("@decorator and a@", "@decorator and a@"),
        ],
    )
    def test_rules(self, text: str, expected: str) -> None:
        assert redact(text) == expected
        assert redact(expected) == expected

    def test_a_record_is_redacted_in_its_arguments_and_traceback(self) -> None:
        try:
            raise RuntimeError("no route for news.k3x9@in.example.com")
        except RuntimeError:
            record = logging.LogRecord(
                "x", logging.ERROR, __file__, 1, "%s %r", ("a@b.org", ("c@d.org",)), sys.exc_info()
            )
        from app.logging import RedactingFilter

        assert RedactingFilter().filter(record)
        assert record.getMessage() == "<redacted>@b.org ('<redacted>@d.org',)"
        assert record.exc_text is not None
        assert "news.k3x9" not in record.exc_text
        assert "<redacted>@in.example.com" in record.exc_text

    def test_uvicorn_access_records_keep_their_five_arguments(self) -> None:
        from app.logging import RedactingFilter

        args = ("127.0.0.1:5", "POST", "/inbound/mime?recipient=a%40b.org", "1.1", 200)
        record = logging.LogRecord(
            "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
        )
        RedactingFilter().filter(record)
        assert record.args == ("127.0.0.1:5", "POST", "/inbound/mime?<redacted>", "1.1", 200)


async def test_in_process_logs_at_debug_name_no_secret(
    client: httpx.AsyncClient,
    world: World,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in {*LOGGERS, *logging.root.manager.loggerDict}:
        caplog.set_level(logging.DEBUG, logger=name)
    await world.platform("p1", members_can_add_integrations=True)
    group = await world.group("p1")
    await world.member(group, "mo", "member")
    first = await world.integration(group, "Newsletter")
    second = await world.integration(group, "Second", user_id="mo", role="member")
    address, other = first["address"], second["address"]
    admin = bearer("root")
    secrets = [*STATIC_SECRETS, *address_secrets(address), *address_secrets(other)]
    caplog.clear()

    async def mime(to: str, raw: bytes, auth: dict[str, str] | None = None) -> int:
        r = await client.post(
            "/inbound/mime",
            params={"recipient": to, "sender": "alice@example.org"},
            content=raw,
            headers=basic() if auth is None else auth,
        )
        return r.status_code

    # Management calls.
    iid = first["id"]
    r = await client.patch(f"/v1/integrations/{iid}", json={"title": "News"}, headers=admin)
    assert r.status_code == 200
    r = await client.patch(
        f"/v1/integrations/{second['id']}",
        json={"allowed_senders": ["@partner.org"]},
        headers=admin,
    )
    assert r.status_code == 200
    assert (await client.get(f"/v1/integrations/{iid}", headers=admin)).status_code == 200
    assert (await client.get("/v1/integrations", headers=admin)).status_code == 200
    r = await client.get("/v1/groups", headers={"Authorization": f"Bearer {JWT_SECRET}.x.y"})
    assert r.status_code == 401
    assert (await client.get(f"/v1/integrations/{address}", headers=admin)).status_code == 422

    # Deliveries: accepted, duplicate, refused, unknown, unauthenticated, malformed.
    assert await mime(address, mime_message(address)) == 200
    r = await client.post(
        "/inbound/mime",
        content=mime_message(address, subject="by header"),
        headers={**basic(), "X-Envelope-To": address},
    )
    assert r.status_code == 200
    assert await mime(address, mime_message(address, headers={"Auto-Submitted": "auto"})) == 422
    assert await mime(other, mime_message(other)) == 422  # sender_not_allowed
    assert await mime(GHOST, mime_message(GHOST)) == 422
    wrong = {"Authorization": f"Basic {credentials(INBOUND_USER, WRONG_PASSWORD)}"}
    assert await mime(address, mime_message(address), auth=wrong) == 401
    r = await client.post("/inbound/postmark", json=postmark_json(address), headers=basic())
    assert r.status_code == 200
    r = await client.post("/inbound/postmark", content=b"{not json", headers=basic())
    assert r.status_code == 403
    signature = sign_mailgun()
    for _ in range(2):
        r = await client.post("/inbound/mailgun", data=mailgun_form(address, signature=signature))
        assert r.status_code == 200
    bad = mailgun_form(address, signature=sign_mailgun(key="not-the-key-0123456789"))
    assert (await client.post("/inbound/mailgun", data=bad)).status_code == 401
    fields = {
        "envelope": json.dumps({"to": [address], "from": "alice@example.org"}),
        "from": "Alice <alice@example.org>",
        "text": "hi",
    }
    assert (await client.post("/inbound/sendgrid", data=fields, headers=basic())).status_code == 200

    # A bug while processing (its message names the address), then an admin's replay.
    def boom(_: str) -> str:
        raise RuntimeError(f"cannot render the mail to {address} (Authorization: Basic abc123)")

    with monkeypatch.context() as patch:
        patch.setattr("app.inbound.rows.sanitize_html", boom)
        r = await client.post(
            "/inbound/mime",
            params={"recipient": address},
            content=mime_message(address, html="<p>x</p>"),
            headers=basic(),
        )
    assert r.status_code == 500
    [failed] = r.json()["delivery_ids"]
    r = await client.post(f"/v1/deliveries/{failed}/replay", headers=admin)
    assert r.status_code == 200, r.text

    # A deleted integration's address is an unknown recipient from then on.
    await world.delete_integration(second["id"])
    assert await mime(other, mime_message(other)) == 422

    text = "\n".join(
        [
            caplog.text,
            *(record.getMessage() for record in caplog.records),
            *(record.exc_text or "" for record in caplog.records),
        ]
    )
    assert_no_secret(text, secrets)
    # The logs did see all this: the addresses are there, redacted, and so is the failure.
    assert f"<redacted>@{DOMAIN}" in text
    assert "/inbound/mime?<redacted>" in text
    assert "RuntimeError: cannot render the mail to <redacted>@in.example.com" in text
    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records)


# --- The real server ------------------------------------------------------------------------------


@pytest.fixture
def server_socket() -> Iterator[socket.socket]:
    """A listening socket on loopback that the server process inherits (no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    try:
        yield sock
    finally:
        sock.close()


def _uvicorn() -> list[str]:
    script = Path(sys.executable).with_name("uvicorn")
    return [str(script)] if script.exists() else [sys.executable, "-m", "uvicorn"]


def _wait_until_ready(client: httpx.Client, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("the server did not start")


def _exercise(client: httpx.Client) -> list[str]:
    """Management calls and deliveries of every outcome; returns the addresses' secrets."""
    admin = bearer("root", "p1", "admin")
    # The operator token is left at its development default: the app says so in its log.
    operator = {"Authorization": f"Bearer {DEV_OPERATOR_TOKEN}"}
    r = client.post(
        "/v1/platforms", json={"id": "p1", "name": "P", "plan": "premium"}, headers=operator
    )
    assert r.status_code == 201, r.text
    r = client.post("/v1/groups", json={"name": "General"}, headers=admin)
    assert r.status_code == 201, r.text
    group = r.json()["id"]
    integrations = []
    for title in ("Newsletter", "Second"):
        r = client.post("/v1/integrations", json={"title": title, "group_id": group}, headers=admin)
        assert r.status_code == 201, r.text
        integrations.append(r.json())
    address, other = (i["address"] for i in integrations)
    iid = integrations[0]["id"]
    assert (
        client.patch(f"/v1/integrations/{iid}", json={"title": "N"}, headers=admin).status_code
        == 200
    )
    assert client.get(f"/v1/integrations/{iid}", headers=admin).status_code == 200
    assert client.get(f"/v1/integrations/{address}", headers=admin).status_code == 422
    assert client.get("/v1/groups", headers={"Authorization": "Bearer x.y.z"}).status_code == 401

    def mime(to: str, raw: bytes, headers: dict[str, str], path: str = "/inbound/mime") -> int:
        params = {"recipient": to, "sender": "alice@example.org"}
        return client.post(path, params=params, content=raw, headers=headers).status_code

    wrong = {"Authorization": f"Basic {credentials(INBOUND_USER, WRONG_PASSWORD)}"}
    assert mime(address, mime_message(address), basic()) == 200
    assert mime(address, mime_message(address, headers={"Auto-Submitted": "auto"}), basic()) == 422
    assert mime(GHOST, mime_message(GHOST), basic()) == 422
    assert mime(address, mime_message(address), wrong) == 401
    assert mime(address, mime_message(address), {}) == 401
    assert mime(address, b"", basic(), path="/inbound/mime/") == 404
    assert client.get("/inbound/mime", params={"recipient": address}).status_code == 405
    r = client.post("/inbound/postmark", json=postmark_json(address), headers=basic())
    assert r.status_code == 200
    assert client.post("/inbound/postmark", content=b"{", headers=basic()).status_code == 403
    assert client.post("/inbound/mailgun", data=mailgun_form(address)).status_code == 200
    bad = mailgun_form(address, signature=sign_mailgun(key="not-the-key-0123456789"))
    assert client.post("/inbound/mailgun", data=bad).status_code == 401
    fields = {"envelope": json.dumps({"to": [address], "from": "a@example.org"}), "text": "x"}
    assert client.post("/inbound/sendgrid", data=fields, headers=basic()).status_code == 200
    assert (
        client.delete(f"/v1/integrations/{integrations[1]['id']}", headers=admin).status_code == 204
    )
    assert mime(other, mime_message(other), basic()) == 422
    return [*address_secrets(address), *address_secrets(other)]


def test_the_real_server_logs_no_secret(tmp_path: Path, server_socket: socket.socket) -> None:
    url = f"sqlite:///{tmp_path / 'mailslot.db'}"
    databases.upgrade(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSLOT_")}
    env |= {
        "MAILSLOT_ENVIRONMENT": "development",
        "MAILSLOT_DATABASE_URL": url,
        "MAILSLOT_BLOB_DIR": str(tmp_path / "blobs"),
        "MAILSLOT_INBOUND_DOMAIN": DOMAIN,
        "MAILSLOT_JWT_SECRET": JWT_SECRET,
        "MAILSLOT_JWT_AUDIENCE": JWT_AUDIENCE,
        "MAILSLOT_JWT_ISSUER": JWT_ISSUER,
        "MAILSLOT_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
        "MAILSLOT_INBOUND_USERNAME": INBOUND_USER,
        "MAILSLOT_INBOUND_PASSWORD": INBOUND_PASSWORD,
        "MAILSLOT_RATE_LIMITS": "",
    }
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    command = [
        *_uvicorn(),
        "app.main:app",
        "--app-dir",
        str(ROOT),
        "--fd",
        str(server_socket.fileno()),
        "--log-level",
        "debug",
    ]
    port = server_socket.getsockname()[1]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(  # noqa: S603
            command,
            cwd=tmp_path,  # no .env of the checkout is read
            env=env,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(server_socket.fileno(),),
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                _wait_until_ready(client, process)
                secrets = [*STATIC_SECRETS, *_exercise(client)]
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    logs = out.read_text(errors="replace") + "\n" + err.read_text(errors="replace")

    assert_no_secret(logs, secrets)
    # The access log was written, with the inbound request lines redacted.
    assert '"POST /inbound/mime?<redacted> HTTP/1.1" 200' in logs, logs
    assert '"POST /inbound/mime?<redacted> HTTP/1.1" 401' in logs, logs
    # The client may send the path's "@" as is or as %40: either way the local part is gone.
    assert re.search(
        r'"GET /v1/integrations/<redacted>(@|%40)in\.example\.com HTTP/1\.1" 422', logs
    ), logs
    # The app's own warning reached the log (through logging.lastResort: root has no handler).
    assert "running in development with local defaults for OPERATOR_TOKEN" in logs, logs


def test_install_is_idempotent() -> None:
    from app.logging import FILTER, install

    install()
    install()
    factory: Any = logging.getLogRecordFactory()
    assert getattr(factory, "_mailslot_redacted", None) is not None
    assert not getattr(factory._mailslot_redacted, "_mailslot_redacted", None)
    access = logging.getLogger("uvicorn.access")
    assert access.filters.count(FILTER) == 1


def test_a_record_refilled_from_a_dict_is_redacted_again() -> None:
    from app.logging import RedactingFilter

    record = logging.makeLogRecord({"msg": "mail to %s", "args": ("news.k3x9@in.example.com",)})
    RedactingFilter().filter(record)
    assert record.getMessage() == "mail to <redacted>@in.example.com"


async def test_a_database_error_logs_no_statement_parameter(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed statement's error names the SQL, never the values bound to it."""
    import sqlalchemy as sa

    from app.db.engine import create_engine

    subject = "Confidential: the board's salary review"
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(sa.exc.DBAPIError) as failure:
                await conn.execute(
                    sa.text("SELECT :subject FROM table_that_is_not_there"), {"subject": subject}
                )
        logging.getLogger("mailslot").error("statement failed", exc_info=failure.value)
    finally:
        await engine.dispose()
    assert "table_that_is_not_there" in caplog.text  # the error itself is logged
    assert subject not in caplog.text
    assert subject not in str(failure.value)
