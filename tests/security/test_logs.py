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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from app.config import DEV_OPERATOR_TOKEN, Settings
from app.logging import FIELDS, JsonFormatter, TextFormatter, redact
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

    @examples(max_examples=1000, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [
                    *("@", "%40", "://", "eyJ", "EYJ", "/inbound/", "?", "Authoriz", "ation"),
                    *("BASIC ", "Bearer ", "passw", "SECRET", "signing_key", "Api_Key"),
                    *("news.k3x9", "in.example.com", " ", ":", "=", "'", "x", "0", "/", "."),
                ]
            ),
            max_size=8,
        ).map("".join)
    )
    def test_the_quick_check_lets_through_only_what_no_rule_changes(self, text: str) -> None:
        """``redact`` looks for what the rules need before it runs them: it must never skip a
        text that one of them would change."""
        from app.logging import _RULES

        every_rule = text
        for pattern, replacement in _RULES:
            every_rule = pattern.sub(replacement, every_rule)
        assert redact(text) == every_rule

    @pytest.mark.parametrize(
        "word", ["PASSWORD", "Passwd", "secret", "SIGNING_KEY", "api_key", "x_secrets"]
    )
    @pytest.mark.parametrize("separator", ["=", ": ", "='"])
    def test_every_secret_word_in_any_case(self, word: str, separator: str) -> None:
        assert redact(f"{word}{separator}hunter2") == f"{word}{separator}<redacted>"

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


class TestLineFormats:
    """The JSON and text lines (app.logging.configure): redacted like every record, fields too."""

    def record(
        self, msg: str, *args: Any, name: str = "mailslot.x", **fields: Any
    ) -> logging.LogRecord:
        extra = {FIELDS: fields} if fields else None
        logger = logging.getLogger(name)
        return logger.makeRecord(name, logging.INFO, __file__, 1, msg, args, None, extra=extra)

    def test_a_json_line_redacts_its_message_and_its_fields(self) -> None:
        record = self.record(
            "mail to %s",
            "news.k3x9@in.example.com",
            request_id="eyJhbGciOi.eyJzdWIi.sig0",
            path="/inbound/mime?recipient=news.k3x9%40in.example.com",
            recipients=["news.k3x9@in.example.com", "Authorization: Basic bWFpbHNsb3Q6cHc="],
            size=12,
            reason=None,
        )
        line = JsonFormatter().format(record)
        assert "\n" not in line
        document = json.loads(line)
        assert document["message"] == "mail to <redacted>@in.example.com"
        assert document["request_id"] == "<redacted>"
        assert document["path"] == "/inbound/mime?<redacted>"
        assert document["recipients"] == [
            "<redacted>@in.example.com",
            "Authorization: Basic <redacted>",
        ]
        assert (document["size"], document["reason"]) == (12, None)
        assert (document["level"], document["logger"]) == ("INFO", "mailslot.x")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["time"])

    def test_a_json_line_keeps_its_traceback_redacted_on_one_line(self) -> None:
        try:
            raise RuntimeError("no route for news.k3x9@in.example.com (password=hunter2)")
        except RuntimeError:
            record = logging.getLogger("mailslot.x").makeRecord(
                "mailslot.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
            )
        line = JsonFormatter().format(record)
        assert len(line.splitlines()) == 1
        trace = json.loads(line)["exc_info"]
        assert "Traceback (most recent call last)" in trace
        assert "<redacted>@in.example.com" in trace
        assert "news.k3x9" not in line
        assert "hunter2" not in line

    def test_a_text_line_shows_its_fields_redacted(self) -> None:
        record = self.record("inbound", path="/inbound/mime?sender=a%40b.org", ids=["1", "2"])
        line = TextFormatter().format(record)
        assert line.endswith(" INFO mailslot.x: inbound path=/inbound/mime?<redacted> ids=1,2")

    def test_uvicorns_access_line_is_dropped_for_inbound_paths_only(self) -> None:
        from app.logging import INBOUND_ACCESS_FILTER

        def access(path: str) -> logging.LogRecord:
            args = ("127.0.0.1:5", "POST", path, "1.1", 200)
            return self.record('%s - "%s %s HTTP/%s" %d', *args, name="uvicorn.access")

        assert not INBOUND_ACCESS_FILTER.filter(access("/inbound/mime?recipient=a%40b.org"))
        kept = access("/v1/integrations/news.k3x9@in.example.com")
        assert INBOUND_ACCESS_FILTER.filter(kept)
        document = json.loads(JsonFormatter().format(kept))
        assert document["path"] == "/v1/integrations/<redacted>@in.example.com"
        assert (document["method"], document["status"]) == ("POST", 200)
        assert document["message"] == (
            '127.0.0.1:5 - "POST /v1/integrations/<redacted>@in.example.com HTTP/1.1" 200'
        )


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


@dataclass
class Exercised:
    secrets: list[str]  # the addresses' local parts and tokens
    integration_id: str
    inbound_requests: int
    request_ids: dict[str, str]  # X-Request-ID answered, by request


PROXY_REQUEST_ID = "proxy-7f3a.9c21:req/42"
UNSAFE_REQUEST_IDS = {"spaces": "not an id", "address": "x.tok3n@in.example.com", "long": "a" * 129}


def _exercise(client: httpx.Client) -> Exercised:
    """Management calls and deliveries of every outcome."""
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
    sent = 0
    request_ids: dict[str, str] = {}

    def inbound(path: str, label: str | None = None, **kwargs: Any) -> int:
        nonlocal sent
        sent += 1
        r = client.request(kwargs.pop("method", "POST"), path, **kwargs)
        if label is not None:
            request_ids[label] = r.headers["X-Request-ID"]
        return r.status_code

    def mime(to: str, raw: bytes, headers: dict[str, str], path: str = "/inbound/mime") -> int:
        params = {"recipient": to, "sender": "alice@example.org"}
        label = headers.pop("label", None)
        return inbound(path, label, params=params, content=raw, headers=headers)

    wrong = {"Authorization": f"Basic {credentials(INBOUND_USER, WRONG_PASSWORD)}"}
    accepted = {**basic(), "X-Request-ID": PROXY_REQUEST_ID, "label": "accepted"}
    assert mime(address, mime_message(address), accepted) == 200
    assert mime(address, mime_message(address, headers={"Auto-Submitted": "auto"}), basic()) == 422
    assert mime(GHOST, mime_message(GHOST), basic()) == 422
    assert mime(address, mime_message(address), wrong) == 401
    assert mime(address, mime_message(address), {}) == 401
    for label, unsafe in UNSAFE_REQUEST_IDS.items():
        assert mime(address, b"", {"X-Request-ID": unsafe, "label": label}) == 401
    assert mime(address, b"", basic(), path="/inbound/mime/") == 404
    assert inbound("/inbound/mime", method="GET", params={"recipient": address}) == 405
    r = client.post("/inbound/postmark", json=postmark_json(address), headers=basic())
    assert r.status_code == 200
    assert client.post("/inbound/postmark", content=b"{", headers=basic()).status_code == 403
    assert client.post("/inbound/mailgun", data=mailgun_form(address)).status_code == 200
    bad = mailgun_form(address, signature=sign_mailgun(key="not-the-key-0123456789"))
    assert client.post("/inbound/mailgun", data=bad).status_code == 401
    fields = {"envelope": json.dumps({"to": [address], "from": "a@example.org"}), "text": "x"}
    assert client.post("/inbound/sendgrid", data=fields, headers=basic()).status_code == 200
    sent += 5
    assert (
        client.delete(f"/v1/integrations/{integrations[1]['id']}", headers=admin).status_code == 204
    )
    assert mime(other, mime_message(other), basic()) == 422
    return Exercised(
        secrets=[*address_secrets(address), *address_secrets(other)],
        integration_id=iid,
        inbound_requests=sent,
        request_ids=request_ids,
    )


def _run_server(
    tmp_path: Path, server_socket: socket.socket, log_format: str
) -> tuple[str, Exercised]:
    """The server as uvicorn runs it (one process, debug level) through ``_exercise``: its logs."""
    url = f"sqlite:///{tmp_path / 'mailslot.db'}"
    databases.upgrade(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSLOT_")}
    env |= {
        "MAILSLOT_ENVIRONMENT": "development",
        "MAILSLOT_LOG_FORMAT": log_format,
        "MAILSLOT_DATABASE_URL": url,
        "MAILSLOT_BLOB_DIR": str(tmp_path / "blobs"),
        "MAILSLOT_METRICS_DIR": str(tmp_path / "metrics"),
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
                exercised = _exercise(client)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    logs = out.read_text(errors="replace") + "\n" + err.read_text(errors="replace")
    return logs, exercised


def test_the_real_server_logs_no_secret(tmp_path: Path, server_socket: socket.socket) -> None:
    logs, exercised = _run_server(tmp_path, server_socket, "text")

    assert_no_secret(logs, [*STATIC_SECRETS, *exercised.secrets])
    # uvicorn's access log was written for the API, with the path redacted. (The client may
    # send the path's "@" as is or as %40: either way the local part is gone.)
    assert re.search(
        r'"GET /v1/integrations/<redacted>(@|%40)in\.example\.com HTTP/1\.1" 422', logs
    ), logs
    # An inbound request has one line, ours, without the query string that names the recipient.
    assert '"POST /inbound/' not in logs, logs
    lines = [line for line in logs.splitlines() if "mailslot.inbound.request:" in line]
    assert len(lines) == exercised.inbound_requests, logs
    [accepted] = [line for line in lines if "POST /inbound/mime 200 accepted" in line]
    assert f"request_id={PROXY_REQUEST_ID} " in accepted, accepted
    assert f"integration_ids={exercised.integration_id} platform_ids=p1 " in accepted, accepted
    assert " path=/inbound/mime" in accepted, accepted
    assert "?" not in accepted, accepted
    # The app's own warning reached the log.
    assert "running in development with local defaults for OPERATOR_TOKEN" in logs, logs


INBOUND_LINE_FIELDS = {
    "time",
    "level",
    "logger",
    "pid",
    "message",
    "request_id",
    "provider",
    "status",
    "outcome",
    "reason",
    "delivery_ids",
    "post_ids",
    "integration_ids",
    "platform_ids",
    "bytes",
    "duration_ms",
    "db_ms",
    "client",
    "method",
    "path",
}


def test_the_real_server_writes_json_lines_that_name_no_secret(
    tmp_path: Path, server_socket: socket.socket
) -> None:
    logs, exercised = _run_server(tmp_path, server_socket, "json")

    assert_no_secret(logs, [*STATIC_SECRETS, *exercised.secrets])
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]  # every line JSON
    assert all(isinstance(line, dict) for line in lines)
    # One line per inbound request, ours: uvicorn's access line is not written for them.
    inbound = [line for line in lines if line["logger"] == "mailslot.inbound.request"]
    assert len(inbound) == exercised.inbound_requests, logs
    assert all(set(line) == INBOUND_LINE_FIELDS for line in inbound), inbound
    assert not [
        line for line in lines if line["logger"] == "uvicorn.access" and "/inbound/" in line["path"]
    ]
    assert all("?" not in line["path"] for line in inbound)
    by_id = {line["request_id"]: line for line in inbound}
    # The proxy's X-Request-ID names the request in the answer and in its line.
    assert exercised.request_ids["accepted"] == PROXY_REQUEST_ID
    accepted = by_id[PROXY_REQUEST_ID]
    assert (accepted["provider"], accepted["status"], accepted["outcome"]) == (
        "mime",
        200,
        "accepted",
    )
    assert accepted["reason"] is None
    assert len(accepted["post_ids"]) == len(accepted["delivery_ids"]) == 1
    assert accepted["integration_ids"] == [exercised.integration_id]
    assert accepted["platform_ids"] == ["p1"]
    assert accepted["bytes"] > 100
    assert accepted["duration_ms"] > 0
    assert accepted["db_ms"] > 0
    assert (accepted["method"], accepted["path"]) == ("POST", "/inbound/mime")
    # An id that is not one (spaces, an address, too long) is replaced by one of ours.
    for label in UNSAFE_REQUEST_IDS:
        made = exercised.request_ids[label]
        assert re.fullmatch(r"[0-9a-f]{32}", made), made
        assert (by_id[made]["status"], by_id[made]["outcome"]) == (401, "unauthenticated")
    refused = [line for line in inbound if line["status"] == 422]
    assert {line["reason"] for line in refused} == {"auto_reply", "unknown_recipient"}
    assert {(line["status"], line["outcome"]) for line in inbound} >= {
        (404, "not_found"),
        (405, "method_not_allowed"),
        (403, "rejected"),
    }
    # The API's access lines are JSON too, with the request's id and the path redacted.
    [lookup] = [
        line
        for line in lines
        if line["logger"] == "uvicorn.access" and line["path"].startswith("/v1/integrations/<")
    ]
    assert lookup["status"] == 422
    assert re.fullmatch(r"[0-9a-f]{32}", lookup["request_id"])
    assert lookup["path"] in {
        f"/v1/integrations/<redacted>@{DOMAIN}",
        f"/v1/integrations/<redacted>%40{DOMAIN}",
    }
    [warning] = [line for line in lines if "running in development" in line["message"]]
    assert (warning["level"], warning["logger"]) == ("WARNING", "mailslot")


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
