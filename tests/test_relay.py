"""The relay command against a real HTTP server on 127.0.0.1 that records what it receives."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, urlsplit

import pytest

from app.models import RejectionReason
from app.relay import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOPERM,
    EX_NOUSER,
    EX_OK,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    REFUSALS,
    main,
)

USERNAME = "postfix-relay"
PASSWORD = "s3cret:relay-pässword"  # a colon and a non-ASCII letter, on purpose
RECIPIENT = "abc123@in.example.com"
SMALL_MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nHello\r\n"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass
class Received:
    path: str
    raw_query: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"status": "accepted", "reason": null, "post_ids": [], "delivery_ids": []}'
    content_type: str = "application/json"
    delay: float = 0.0


def json_reply(http_status: int, status: str, reason: str | None) -> Reply:
    document: dict[str, Any] = {
        "status": status,
        "reason": reason,
        "post_ids": [],
        "delivery_ids": [],
    }
    return Reply(status=http_status, body=json.dumps(document).encode())


def problem_reply(status: int, code: str) -> Reply:
    body = json.dumps({"type": "about:blank", "title": code, "status": status, "code": code})
    return Reply(status=status, body=body.encode(), content_type="application/problem+json")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_POST(self) -> None:
        server = cast(RelayServer, self.server)
        split = urlsplit(self.path)
        server.received.append(
            Received(
                path=split.path,
                raw_query=split.query,
                query=parse_qs(split.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self._read_body(),
            )
        )
        reply = server.reply
        if reply.delay:
            server.release.wait(reply.delay)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            pass  # the relay gave up waiting


class RelayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.received: list[Received] = []
        self.reply = Reply()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def only(self) -> Received:
        assert len(self.received) == 1
        return self.received[0]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MAILSLOT_RELAY_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
def server() -> Iterator[RelayServer]:
    httpd = RelayServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def configured(server: RelayServer, monkeypatch: pytest.MonkeyPatch) -> RelayServer:
    monkeypatch.setenv("MAILSLOT_RELAY_URL", server.url)
    monkeypatch.setenv("MAILSLOT_RELAY_USERNAME", USERNAME)
    monkeypatch.setenv("MAILSLOT_RELAY_PASSWORD", PASSWORD)
    monkeypatch.setenv("MAILSLOT_RELAY_TIMEOUT", "10")
    return server


@contextmanager
def piped(data: bytes) -> Iterator[BinaryIO]:
    """Standard input as Postfix gives it: a pipe, fed by another thread, not seekable."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(write_fd, view) :]
        except BrokenPipeError:
            pass  # the relay stopped reading (e.g. a usage error)
        finally:
            os.close(write_fd)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with open(read_fd, "rb") as reader:
            yield reader
    finally:
        feeder.join(timeout=5)


def relay(argv: list[str], message: bytes = SMALL_MESSAGE) -> int:
    with piped(message) as stdin:
        return main(argv, stdin)


def large_message() -> bytes:
    """Over 1 MiB: CRLF line ends, every byte value (8-bit, NUL, bare CR and LF) in the body."""
    head = (
        b"From: =?utf-8?q?Ren=C3=A9?= <rene@example.com>\r\n"
        b"To: team@in.example.com\r\n"
        b"Subject: caf\xc3\xa9 8-bit header\r\n"
        b"Content-Type: text/plain; charset=latin-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
    )
    line = bytes(range(256)) + b"\r\n"
    message = head + line * (1_100_000 // len(line)) + b".\r\n\r\n"
    assert len(message) > 1024 * 1024
    return message


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestWhatIsSent:
    def test_large_message_from_a_pipe_arrives_byte_identical_and_chunked(
        self, configured: RelayServer
    ) -> None:
        message = large_message()
        assert relay(["--recipient", RECIPIENT], message) == EX_OK
        received = configured.only
        assert received.body == message
        assert received.path == "/inbound/mime"
        assert received.headers["content-type"] == "message/rfc822"
        assert received.headers["transfer-encoding"] == "chunked"
        assert received.query == {"recipient": [RECIPIENT]}

    def test_large_message_from_a_file_arrives_byte_identical_with_a_length(
        self, configured: RelayServer, tmp_path: Path
    ) -> None:
        message = large_message()
        path = tmp_path / "message.eml"
        path.write_bytes(b"skipped" + message)
        with path.open("rb") as stdin:
            stdin.read(len(b"skipped"))  # what is left is sent, and its length is right
            assert main(["--recipient", RECIPIENT], stdin) == EX_OK
        received = configured.only
        assert received.body == message
        assert received.headers["content-length"] == str(len(message))
        assert "transfer-encoding" not in received.headers

    def test_in_memory_stdin_works(self, configured: RelayServer) -> None:
        assert main([RECIPIENT], io.BytesIO(SMALL_MESSAGE)) == EX_OK
        assert configured.only.body == SMALL_MESSAGE

    def test_recipients_are_repeated_query_parameters_in_order(
        self, configured: RelayServer
    ) -> None:
        argv = [
            "--recipient",
            "a@in.example.com",
            "--recipient=b@in.example.com",
            "--recipient",  # pipe(8) expands "${recipient}" into one argument per recipient
            "c@in.example.com",
            "d@in.example.com",
            "--sender",
            "s@example.com",
            "<e@in.example.com>",
        ]
        assert relay(argv) == EX_OK
        received = configured.only
        assert received.query["recipient"] == [f"{x}@in.example.com" for x in "abcde"]
        assert received.raw_query.count("recipient=") == 5
        assert received.query["sender"] == ["s@example.com"]

    @pytest.mark.parametrize(
        ("sender_args", "expected"),
        [
            ([], None),
            (["--sender", ""], [""]),
            (["--sender="], [""]),
            (["--sender", "<>"], [""]),
            (["--sender=<>"], [""]),
            (["--sender", "<bounce+x@example.com>"], ["bounce+x@example.com"]),
            (["--sender=-starts-with-dash@example.com"], ["-starts-with-dash@example.com"]),
        ],
    )
    def test_sender(
        self, configured: RelayServer, sender_args: list[str], expected: list[str] | None
    ) -> None:
        assert relay([*sender_args, "--recipient", RECIPIENT]) == EX_OK
        assert configured.only.query.get("sender") == expected

    def test_basic_auth_from_the_environment(self, configured: RelayServer) -> None:
        assert relay(["--recipient", RECIPIENT]) == EX_OK
        assert configured.only.headers["authorization"] == basic(USERNAME, PASSWORD)

    @pytest.mark.parametrize("ending", ["\n", "\r\n", "", "\nsecond line is ignored\n"])
    def test_basic_auth_from_a_password_file(
        self,
        configured: RelayServer,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        ending: str,
    ) -> None:
        monkeypatch.delenv("MAILSLOT_RELAY_PASSWORD")
        password_file = tmp_path / "relay-password"
        password_file.write_bytes(f"{PASSWORD}{ending}".encode())
        password_file.chmod(0o400)
        monkeypatch.setenv("MAILSLOT_RELAY_PASSWORD_FILE", str(password_file))
        assert relay(["--recipient", RECIPIENT]) == EX_OK
        assert configured.only.headers["authorization"] == basic(USERNAME, PASSWORD)

    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
    def test_a_password_file_open_to_others_is_refused(
        self,
        configured: RelayServer,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        mode: int,
    ) -> None:
        monkeypatch.delenv("MAILSLOT_RELAY_PASSWORD")
        password_file = tmp_path / "relay-password"
        password_file.write_text(f"{PASSWORD}\n", encoding="utf-8")
        password_file.chmod(mode)
        monkeypatch.setenv("MAILSLOT_RELAY_PASSWORD_FILE", str(password_file))
        assert relay(["--recipient", RECIPIENT]) == EX_CONFIG
        assert configured.received == []
        err = capsys.readouterr().err
        assert f"(mode {mode:04o}): chmod 0400" in err
        assert PASSWORD not in err

    def test_a_url_with_a_path_prefix(
        self, configured: RelayServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MAILSLOT_RELAY_URL", configured.url + "/mailslot/")
        assert relay(["--recipient", RECIPIENT]) == EX_OK
        assert configured.only.path == "/mailslot/inbound/mime"


EXIT_CODES = [
    pytest.param(json_reply(200, status="accepted", reason=None), EX_OK, None, id="200-accepted"),
    pytest.param(json_reply(200, status="duplicate", reason=None), EX_OK, None, id="200-dup"),
    pytest.param(Reply(200, b"OK", "text/plain"), EX_OK, None, id="200-not-json"),
    pytest.param(
        json_reply(429, status="rate_limited", reason=None), EX_TEMPFAIL, "4.2.1", id="429"
    ),
    pytest.param(problem_reply(401, "unauthenticated"), EX_TEMPFAIL, "4.3.5", id="401"),
    pytest.param(problem_reply(404, "not_found"), EX_TEMPFAIL, "4.3.5", id="404"),
    pytest.param(Reply(408, b"", "text/plain"), EX_TEMPFAIL, "4.4.2", id="408"),
    pytest.param(json_reply(500, status="failed", reason=None), EX_TEMPFAIL, "4.3.0", id="500"),
    pytest.param(json_reply(503, status="failed", reason=None), EX_TEMPFAIL, "4.3.0", id="503"),
    pytest.param(Reply(502, b"bad gateway", "text/html"), EX_TEMPFAIL, "4.3.0", id="502"),
    pytest.param(Reply(302, b"", "text/plain"), EX_TEMPFAIL, "4.3.5", id="302"),
    pytest.param(problem_reply(413, "payload_too_large"), EX_UNAVAILABLE, "5.3.4", id="413"),
    pytest.param(Reply(413, b"too big", "text/plain"), EX_UNAVAILABLE, "5.3.4", id="413-text"),
    pytest.param(Reply(400, b"bad", "text/plain"), EX_UNAVAILABLE, "5.0.0", id="400"),
    pytest.param(
        json_reply(422, "rejected", "a_reason_from_later"), EX_UNAVAILABLE, "5.0.0", id="new"
    ),
]
# What each refusal reason of the service becomes (the README's table says the same).
REASONS = [
    ("unknown_recipient", EX_NOUSER, "5.1.1"),
    ("integration_disabled", EX_UNAVAILABLE, "5.2.1"),
    ("attachment_too_large", EX_UNAVAILABLE, "5.3.4"),
    ("message_too_complex", EX_DATAERR, "5.6.0"),
    ("malformed_message", EX_DATAERR, "5.6.0"),
    ("sender_not_allowed", EX_NOPERM, "5.7.1"),
    ("auto_reply", EX_OK, None),  # dropped without a bounce (mail loops)
]


class TestExitCodes:
    @pytest.mark.parametrize(("reply", "expected", "status"), EXIT_CODES)
    def test_answer(
        self,
        configured: RelayServer,
        capsys: pytest.CaptureFixture[str],
        reply: Reply,
        expected: int,
        status: str | None,
    ) -> None:
        configured.reply = reply
        assert relay(["--recipient", RECIPIENT]) == expected
        out, err = capsys.readouterr()
        assert out == ""
        assert err.count("\n") == 1
        prefix = f"{status} " if status else ""
        assert err.startswith(f"{prefix}mailslot relay: HTTP {reply.status}")
        document = json.loads(reply.body) if reply.content_type.endswith("json") else {}
        for key in ("status", "reason", "code"):
            if document.get(key):
                assert str(document[key]) in err

    @pytest.mark.parametrize(("reason", "expected", "status"), REASONS)
    def test_each_refusal_reason_has_its_own_status(
        self,
        configured: RelayServer,
        capsys: pytest.CaptureFixture[str],
        reason: str,
        expected: int,
        status: str | None,
    ) -> None:
        configured.reply = json_reply(422, status="rejected", reason=reason)
        assert relay(["--recipient", RECIPIENT]) == expected
        err = capsys.readouterr().err
        if status is None:
            assert err.startswith(f"mailslot relay: HTTP 422 rejected ({reason}): refused")
            assert "without a bounce" in err
        else:
            # pipe(8) takes the status at the very start of the output, before its exit code's.
            assert err.startswith(f"{status} mailslot relay: HTTP 422 rejected ({reason}): ")

    def test_every_reason_of_the_service_is_in_the_table(self) -> None:
        assert {r.value for r in RejectionReason} <= set(REFUSALS)
        assert {reason for reason, _, _ in REASONS} == {r.value for r in RejectionReason}
        for refusal in REFUSALS.values():
            assert re.fullmatch(r"5\.\d\.\d", refusal.status)
            assert refusal.exit_code in {EX_OK, EX_DATAERR, EX_NOUSER, EX_UNAVAILABLE, EX_NOPERM}

    def test_unreachable_service_is_retried(
        self,
        configured: RelayServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("MAILSLOT_RELAY_URL", f"http://127.0.0.1:{free_port()}")
        assert relay(["--recipient", RECIPIENT], large_message()) == EX_TEMPFAIL
        assert capsys.readouterr().err.startswith("4.4.1 mailslot relay: cannot reach")

    def test_timeout_is_retried(
        self,
        configured: RelayServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("MAILSLOT_RELAY_TIMEOUT", "1")
        configured.reply = Reply(delay=10)
        started = time.monotonic()
        assert relay(["--recipient", RECIPIENT]) == EX_TEMPFAIL
        assert time.monotonic() - started < 5
        assert capsys.readouterr().err.startswith("4.4.2 mailslot relay: no answer")

    def test_unreadable_input_is_retried(self, configured: RelayServer) -> None:
        class Broken(io.BytesIO):
            def seekable(self) -> bool:
                return False

            def read(self, size: int | None = -1, /) -> bytes:
                raise OSError(5, "Input/output error")

        assert main(["--recipient", RECIPIENT], Broken()) == EX_TEMPFAIL

    def test_a_bug_of_ours_is_retried_never_bounced(
        self,
        configured: RelayServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        def crash(*args: Any) -> None:
            raise RuntimeError(PASSWORD)

        monkeypatch.setattr("app.relay.deliver", crash)
        assert relay(["--recipient", RECIPIENT]) == EX_TEMPFAIL
        assert capsys.readouterr().err.startswith("4.3.0 mailslot relay: unexpected")

    @pytest.mark.parametrize(
        "argv",
        [
            [],
            ["--sender", "s@example.com"],
            ["--recipient", ""],
            ["--recipient"],
            ["--recipient", RECIPIENT, "--bogus"],
        ],
    )
    def test_bad_arguments(
        self, configured: RelayServer, capsys: pytest.CaptureFixture[str], argv: list[str]
    ) -> None:
        assert relay(argv) == EX_USAGE
        assert configured.received == []
        assert capsys.readouterr().err.startswith("5.3.0 mailslot relay: usage:")

    @pytest.mark.parametrize(
        "environment",
        [
            {"MAILSLOT_RELAY_USERNAME": None},
            {"MAILSLOT_RELAY_USERNAME": ""},
            {"MAILSLOT_RELAY_PASSWORD": None},
            {"MAILSLOT_RELAY_PASSWORD": None, "MAILSLOT_RELAY_PASSWORD_FILE": "/nonexistent/pw"},
            {"MAILSLOT_RELAY_PASSWORD": None, "MAILSLOT_RELAY_PASSWORD_FILE": "EMPTY"},
            {"MAILSLOT_RELAY_PASSWORD_FILE": "EMPTY"},  # and a password: which one? Refused.
            {"MAILSLOT_RELAY_USERNAME": "user:name"},
            {"MAILSLOT_RELAY_TIMEOUT": "soon"},
            {"MAILSLOT_RELAY_URL": "ftp://127.0.0.1"},
            {"MAILSLOT_RELAY_URL": "http://mailslot.example.com"},  # clear text off this host
            {"MAILSLOT_RELAY_URL": "http://10.0.0.5:8000"},
            {"MAILSLOT_RELAY_URL": "http://[2001:db8::1]:8000"},
            {"MAILSLOT_RELAY_URL": "http://127.0.0.1.example.com"},
        ],
    )
    def test_missing_or_bad_configuration(
        self,
        configured: RelayServer,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        environment: dict[str, str | None],
    ) -> None:
        for name, value in environment.items():
            if value is None:
                monkeypatch.delenv(name)
            elif value == "EMPTY":
                (tmp_path / "empty").write_bytes(b"\n")
                (tmp_path / "empty").chmod(0o600)
                monkeypatch.setenv(name, str(tmp_path / "empty"))
            else:
                monkeypatch.setenv(name, value)
        assert relay(["--recipient", RECIPIENT]) == EX_CONFIG
        assert configured.received == []
        err = capsys.readouterr().err
        assert err.startswith("4.3.5 mailslot relay: ")  # held in the queue, never bounced
        assert "MAILSLOT_RELAY_" in err


class TestSecrecy:
    @pytest.mark.parametrize(
        "reply",
        [
            json_reply(200, status="accepted", reason=None),
            json_reply(422, status="rejected", reason="unknown_recipient"),
            problem_reply(401, "unauthenticated"),
            Reply(500, f"echo {PASSWORD}".encode(), "text/plain"),
        ],
    )
    def test_password_never_printed(
        self, configured: RelayServer, capsys: pytest.CaptureFixture[str], reply: Reply
    ) -> None:
        configured.reply = reply
        relay(["--recipient", RECIPIENT])
        self.assert_no_secret(capsys)

    def test_password_never_printed_when_unreachable(
        self,
        configured: RelayServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("MAILSLOT_RELAY_URL", f"http://{USERNAME}:{PASSWORD}@127.0.0.1:1")
        assert relay(["--recipient", RECIPIENT]) == EX_TEMPFAIL
        self.assert_no_secret(capsys)

    def test_no_password_option_and_a_stray_one_is_not_echoed(
        self, configured: RelayServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert relay(["--recipient", RECIPIENT, "--password", PASSWORD]) == EX_USAGE
        assert relay(["--recipient", RECIPIENT, f"--password={PASSWORD}"]) == EX_USAGE
        assert configured.received == []
        self.assert_no_secret(capsys)

    @staticmethod
    def assert_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
        out, err = capsys.readouterr()
        for secret in (PASSWORD, basic(USERNAME, PASSWORD).split()[1], "Authorization"):
            assert secret not in out
            assert secret not in err


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (json_reply(200, status="accepted", reason=None), EX_OK),
        (json_reply(422, status="rejected", reason="unknown_recipient"), EX_NOUSER),
    ],
)
def test_runs_as_a_process_reading_stdin(
    server: RelayServer, tmp_path: Path, reply: Reply, expected: int
) -> None:
    """As Postfix runs it: a clean environment, a password file, a foreign working directory."""
    server.reply = reply
    password_file = tmp_path / "relay-password"
    password_file.write_text(f"{PASSWORD}\n", encoding="utf-8")
    password_file.chmod(0o600)
    environment = {
        "PATH": "/usr/bin:/bin",
        "MAILSLOT_RELAY_URL": server.url,
        "MAILSLOT_RELAY_USERNAME": USERNAME,
        "MAILSLOT_RELAY_PASSWORD_FILE": str(password_file),
    }
    message = large_message()
    argv = ["--sender=", "--recipient=a@in.example.com", "--recipient=b@in.example.com"]
    result = subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "app.relay", *argv],
        input=message,
        capture_output=True,
        env=environment,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == expected, result.stderr
    received = server.only
    assert received.body == message
    assert received.query == {"recipient": ["a@in.example.com", "b@in.example.com"], "sender": [""]}
    assert received.headers["authorization"] == basic(USERNAME, PASSWORD)
    assert result.stdout == b""
    status = "5.1.1 " if expected == EX_NOUSER else ""
    assert result.stderr.decode().startswith(f"{status}mailslot relay: HTTP {reply.status}")
    assert PASSWORD.encode() not in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.0.0.2:8000",
        "http://localhost:8000",
        "http://[::1]:8000",
        "https://mailslot.example.com",
    ],
)
def test_plain_http_is_accepted_to_this_host_only(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    from app.config import RelaySettings

    monkeypatch.setenv("MAILSLOT_RELAY_URL", url)
    assert RelaySettings().url == url
