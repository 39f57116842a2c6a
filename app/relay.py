"""``python -m app relay``: hand one message from an MTA to ``POST /inbound/mime``.

Made for Postfix's ``pipe(8)``: the message arrives on standard input and is streamed to
the service as it is read (never held whole in memory), with the envelope recipients and
sender from the command line and HTTP basic credentials from ``MAILSLOT_RELAY_*`` (the
environment, or a password file), never from the command line.

The exit status follows ``sysexits.h``, which is how the MTA decides what happens to the
mail: 0 delivered (or dropped on purpose), 65, 67, 69 or 77 bounce (one per refusal reason, see
``REFUSALS``), 75 try again later (also when the relay's own configuration is broken, so that
no mail bounces for it), 64 a usage mistake. Anything unexpected exits 75: Postfix bounces on
any code it does not know, and a bug of ours must never bounce mail. One short line on
standard error says what happened (Postfix logs it, and quotes it in a bounce); it never holds
the password. When the mail is not delivered the line starts with an RFC 3463 enhanced status
code (``5.3.4 mailslot relay: ...``): pipe(8) reports that status, rather than the one it derives
from the exit code, in its log and in the bounce, and it decides bounce (5.x) or retry (4.x).
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, NoReturn

import httpx
from pydantic import SecretStr, ValidationError

from app import __version__
from app.config import RelaySettings

EX_OK = 0
EX_USAGE = 64  # bad arguments, e.g. no recipient
EX_DATAERR = 65  # refused for good, the content: the MTA bounces (Postfix: 5.6.0)
EX_NOUSER = 67  # refused for good, no such address: the MTA bounces (Postfix: 5.1.1)
EX_UNAVAILABLE = 69  # refused for good, another reason: the MTA bounces (Postfix: 5.3.0)
EX_NOPERM = 77  # refused for good, the sender may not post here: the MTA bounces (5.7.0)
EX_TEMPFAIL = 75  # the MTA keeps the mail and tries again
# A broken local configuration holds mail in the queue (75): Postfix turns 78 into a bounce.
EX_CONFIG = 75

ENDPOINT = "/inbound/mime"
CHUNK_SIZE = 64 * 1024
MAX_PASSWORD_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Refusal:
    """What the MTA is told about a mail the service refused for good."""

    exit_code: int  # sysexits.h; EX_OK: dropped without a bounce
    status: str  # RFC 3463 enhanced status code, at the start of the output
    text: str  # what the bounce says, after the service's own answer


# Every refusal reason of the service's answer (``RejectionReason``), and 413. Two never bounce:
# automatic mail (a bounce could start a mail loop) and a sender the integration does not allow
# (decided on the From header after the SMTP session ended, so the envelope sender that a bounce
# would go to may be forged: backscatter). Unknown recipients are best refused during the SMTP
# session (``python -m app postfix-policy``); those that reach the relay bounce.
REFUSALS: dict[str, Refusal] = {
    "unknown_recipient": Refusal(EX_NOUSER, "5.1.1", "no such address"),
    "integration_disabled": Refusal(EX_UNAVAILABLE, "5.2.1", "this address is disabled"),
    "attachment_too_large": Refusal(
        EX_UNAVAILABLE, "5.3.4", "an attachment is larger than the service accepts"
    ),
    "payload_too_large": Refusal(
        EX_UNAVAILABLE, "5.3.4", "the message is larger than the service accepts"
    ),
    "message_too_complex": Refusal(
        EX_DATAERR, "5.6.0", "the message has more parts, nesting or headers than accepted"
    ),
    "malformed_message": Refusal(EX_DATAERR, "5.6.0", "the message cannot be read"),
    "sender_not_allowed": Refusal(
        EX_NOPERM, "5.7.1", "the sender is not allowed to post to this address"
    ),
    "auto_reply": Refusal(EX_OK, "5.7.1", "automatic mail, dropped without a bounce"),
}
# Any other refusal (a 4xx without a reason this relay knows): a bounce that says little.
OTHER_REFUSAL = Refusal(EX_UNAVAILABLE, "5.0.0", "refused for good")
TOO_LARGE = "payload_too_large"  # a 413, whatever its body says

# 4xx answers about us (credentials, a disabled endpoint, load, a proxy), not about the mail,
# and the status each is retried with.
TEMPORARY_CLIENT_ERRORS = {
    401: "4.3.5",  # mail system configuration error
    404: "4.3.5",
    408: "4.4.2",  # bad connection
    429: "4.2.1",  # this address takes no more mail for now (rate limited)
}
TEMPORARY = "4.3.0"  # 5xx: the service's own failure (database, disk, a bug)
MISCONFIGURED = "4.3.5"  # the relay's configuration, a redirect, an invalid URL
UNREACHABLE = "4.4.1"  # no answer from the service's host
TIMED_OUT = "4.4.2"
USAGE = "5.3.0"  # as Postfix reports exit 64 itself
HINTS = {
    401: "check MAILSLOT_RELAY_USERNAME and the password against MAILSLOT_INBOUND_*",
    404: "is MAILSLOT_INBOUND_PASSWORD set on the service, and MAILSLOT_RELAY_URL right?",
}

PROG = "python -m app relay"


class UsageError(Exception):
    """Bad command-line arguments."""


class RelayConfigError(Exception):
    """No usable credentials or settings."""


@dataclass(frozen=True)
class Envelope:
    recipients: tuple[str, ...]
    sender: str | None  # None: not given; "": the null sender


@dataclass(frozen=True)
class Credentials:
    username: str
    password: SecretStr


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    message: str
    status: str | None = None  # RFC 3463, when the mail was not delivered


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        allow_abbrev=False,
        description="Post one message from standard input to mailslot's /inbound/mime.",
        epilog=(
            "Credentials come from MAILSLOT_RELAY_USERNAME and MAILSLOT_RELAY_PASSWORD_FILE "
            "(or MAILSLOT_RELAY_PASSWORD), never from the command line; MAILSLOT_RELAY_URL "
            "and MAILSLOT_RELAY_TIMEOUT are optional. Exit status: 0 delivered (or dropped "
            "without a bounce), 65, 67 or 69 refused (the output starts with an RFC 3463 "
            "status), 75 try later (also for a configuration problem), 64 usage."
        ),
    )
    parser.add_argument(
        "--recipient",
        dest="recipients",
        action="extend",
        nargs="+",
        default=[],
        metavar="ADDRESS",
        help="envelope recipient (repeatable; several may follow one --recipient)",
    )
    parser.add_argument(
        "--sender",
        metavar="ADDRESS",
        help="envelope sender; empty or <> for the null sender",
    )
    parser.add_argument("more_recipients", nargs="*", metavar="RECIPIENT", default=[])
    return parser


def _strip_brackets(address: str) -> str:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    return address


def parse_envelope(argv: Sequence[str]) -> Envelope:
    args = build_parser().parse_args(list(argv))
    recipients = [_strip_brackets(r) for r in [*args.recipients, *args.more_recipients]]
    if not recipients:
        raise UsageError("at least one envelope recipient is required (--recipient ADDRESS)")
    if not all(recipients):
        raise UsageError("an envelope recipient is empty")
    sender = None if args.sender is None else _strip_brackets(args.sender)
    return Envelope(recipients=tuple(recipients), sender=sender)


def read_password_file(path: os.PathLike[str] | str) -> str:
    """The file's first line, without its line ending; refused when others may read it."""
    try:
        with open(path, "rb") as file:
            mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
            if mode & 0o077:
                raise RelayConfigError(
                    f"MAILSLOT_RELAY_PASSWORD_FILE {os.fspath(path)!r} is open to other users "
                    f"(mode {mode:04o}): chmod 0400 (or 0600) it"
                )
            data = file.read(MAX_PASSWORD_FILE_BYTES)
    except OSError as exc:
        raise RelayConfigError(
            f"cannot read MAILSLOT_RELAY_PASSWORD_FILE {os.fspath(path)!r}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RelayConfigError("MAILSLOT_RELAY_PASSWORD_FILE is not UTF-8 text") from None
    return text.split("\n", 1)[0].removesuffix("\r")


def load_credentials(settings: RelaySettings) -> Credentials:
    if not settings.username:
        raise RelayConfigError("no credentials: MAILSLOT_RELAY_USERNAME is not set")
    if ":" in settings.username:
        raise RelayConfigError("MAILSLOT_RELAY_USERNAME cannot contain ':'")
    if settings.password is not None and settings.password_file is not None:
        raise RelayConfigError(
            "set one of MAILSLOT_RELAY_PASSWORD and MAILSLOT_RELAY_PASSWORD_FILE, not both"
        )
    if settings.password_file is not None:
        password = read_password_file(settings.password_file)
        if not password:
            raise RelayConfigError("MAILSLOT_RELAY_PASSWORD_FILE has an empty first line")
    elif settings.password is not None:
        password = settings.password.get_secret_value()
    else:
        raise RelayConfigError(
            "no credentials: set MAILSLOT_RELAY_PASSWORD_FILE (or MAILSLOT_RELAY_PASSWORD)"
        )
    return Credentials(username=settings.username, password=SecretStr(password))


def content_length(stream: BinaryIO) -> int | None:
    """The bytes left in a seekable input (a file); None for a pipe, which is sent chunked."""
    try:
        if not stream.seekable():
            return None
        position = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(position)
    except (OSError, ValueError):
        return None
    return max(end - position, 0)


def chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_SIZE):
        yield chunk


def _clean(value: object, limit: int = 80) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return re.sub(r"[^\x21-\x7e]", "_", value)[:limit]


def judge(response: httpx.Response) -> Outcome:
    """The exit status for the service's answer, and the line that says why."""
    try:
        body = response.json()
    except ValueError:
        body = None
    status = reason = None
    if isinstance(body, dict):
        status = _clean(body.get("status"))
        reason = _clean(body.get("reason")) or _clean(body.get("code"))  # or a problem's code
    code = response.status_code
    label = " ".join(filter(None, [f"HTTP {code}", status, f"({reason})" if reason else None]))
    if 200 <= code < 300:
        return Outcome(EX_OK, f"{label}: delivered")
    if code in TEMPORARY_CLIENT_ERRORS or not 400 <= code < 500:
        hint = HINTS.get(code) or ("redirects are not followed" if 300 <= code < 400 else None)
        if code in TEMPORARY_CLIENT_ERRORS:
            temporary = TEMPORARY_CLIENT_ERRORS[code]
        else:
            temporary = MISCONFIGURED if 300 <= code < 400 else TEMPORARY
        return Outcome(
            EX_TEMPFAIL, f"{label}: will retry" + (f"; {hint}" if hint else ""), temporary
        )
    refusal = REFUSALS.get(TOO_LARGE if code == 413 else reason or "", OTHER_REFUSAL)
    if refusal.exit_code == EX_OK:
        return Outcome(EX_OK, f"{label}: refused ({refusal.status}), {refusal.text}")
    return Outcome(refusal.exit_code, f"{label}: {refusal.text}", refusal.status)


def _where(url: str) -> str:
    """The service's scheme, host and port: never a path, query or user information."""
    try:
        parsed = httpx.URL(url)
    except Exception:
        return "the service"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def _tls(url: str) -> ssl.SSLContext | bool:
    if url.lower().startswith("https://"):
        return True  # httpx's verifying default (honours SSL_CERT_FILE)
    # Plain http never uses TLS (redirects are not followed): skip loading a CA bundle (~0.1 s
    # per mail) with a context that would refuse every certificate if it were ever used.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def deliver(
    envelope: Envelope, credentials: Credentials, settings: RelaySettings, stream: BinaryIO
) -> Outcome:
    pairs = [("recipient", recipient) for recipient in envelope.recipients]
    if envelope.sender is not None:
        pairs.append(("sender", envelope.sender))
    params = tuple(pairs)  # a tuple: covariant, as httpx's annotation wants
    headers = {"Content-Type": "message/rfc822", "User-Agent": f"mailslot-relay/{__version__}"}
    length = content_length(stream)
    if length is not None:
        headers["Content-Length"] = str(length)
    where = _where(settings.url)
    auth = httpx.BasicAuth(credentials.username, credentials.password.get_secret_value())
    try:
        with httpx.Client(
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,
            verify=_tls(settings.url),
        ) as client:
            response = client.post(
                settings.url + ENDPOINT,
                params=params,
                headers=headers,
                content=chunks(stream),
                auth=auth,
            )
    except httpx.InvalidURL:
        return Outcome(EX_CONFIG, "MAILSLOT_RELAY_URL is not a valid URL", MISCONFIGURED)
    except httpx.TimeoutException:
        return Outcome(
            EX_TEMPFAIL, f"no answer from {where} in {settings.timeout:g}s: will retry", TIMED_OUT
        )
    except httpx.ConnectError as exc:
        return Outcome(EX_TEMPFAIL, f"cannot reach {where} ({exc}): will retry", UNREACHABLE)
    except httpx.HTTPError as exc:
        return Outcome(
            EX_TEMPFAIL, f"{type(exc).__name__} talking to {where}: will retry", TIMED_OUT
        )
    except OSError as exc:  # reading standard input
        return Outcome(
            EX_TEMPFAIL,
            f"cannot read the message: {exc.strerror or type(exc).__name__}: will retry",
            TEMPORARY,
        )
    return judge(response)


def _say(message: str, secrets: Sequence[str] = (), status: str | None = None) -> None:
    """One line on standard error; a status first, where pipe(8) looks for one."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    sys.stderr.write(f"{status} " if status else "")
    sys.stderr.write(f"mailslot relay: {message}\n")
    sys.stderr.flush()


def _config_problem(exc: ValidationError) -> str:
    fields = sorted(
        {f"MAILSLOT_RELAY_{str(e['loc'][0]).upper()}" for e in exc.errors() if e["loc"]}
    )
    return "bad configuration: " + (", ".join(fields) or "MAILSLOT_RELAY_*")


def _run(argv: Sequence[str] | None, stdin: BinaryIO | None) -> int:
    try:
        envelope = parse_envelope(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        message = str(exc)
        if message.startswith("unrecognized arguments"):  # may hold a value; never echo one
            message = "unrecognized arguments (not shown; credentials never go on the command line)"
        _say(f"usage: {message}", status=USAGE)
        return EX_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EX_OK
    try:
        settings = RelaySettings()
        credentials = load_credentials(settings)
    except ValidationError as exc:
        _say(_config_problem(exc), status=MISCONFIGURED)
        return EX_CONFIG
    except RelayConfigError as exc:
        _say(str(exc), status=MISCONFIGURED)
        return EX_CONFIG
    outcome = deliver(envelope, credentials, settings, sys.stdin.buffer if stdin is None else stdin)
    _say(outcome.message, [credentials.password.get_secret_value()], outcome.status)
    return outcome.exit_code


def main(argv: Sequence[str] | None = None, stdin: BinaryIO | None = None) -> int:
    """Relay one message; the exit status follows sysexits.h (see the module docstring)."""
    try:
        return _run(argv, stdin)
    except Exception as exc:  # a bug of ours: exit 75 (try later), never a status that bounces
        _say(f"unexpected {type(exc).__name__}: will retry", status=TEMPORARY)
        return EX_TEMPFAIL


if __name__ == "__main__":
    sys.exit(main())
