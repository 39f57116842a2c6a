"""Request templates for wrk (``@@TS@@ @@TOKEN@@ @@SIG@@ @@MID@@ @@RCPT@@`` markers) and their
values: a fresh token, signature and Message-Id for every request, and a recipient taken in turn
from a list of integration addresses."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote_plus

from tests.inbound.payloads import MAILGUN_KEY

MIB = 1 << 20
TOKEN_LEN = 50  # secrets.token_hex(25), as Mailgun's tokens
MARKERS = {
    "TS": "@@TS@@",
    "TOKEN": "@@TOKEN@@",
    "SIG": "@@SIG@@",
    "MID": "@@MID@@",
    "RCPT": "@@RCPT@@",
}

TEXT = ("Quarterly figures attached. " * 150)[:4096]
HTML = ('<p>Hello <b>group</b>, see <a href="https://example.org/r">the report</a>.</p>\n' * 110)[
    :8192
]


def _fields(recipient: str = MARKERS["RCPT"]) -> list[tuple[str, str]]:
    headers = [
        ["Message-Id", MARKERS["MID"]],
        ["From", "Alice Example <alice@example.org>"],
        ["Subject", "Bench mail"],
        ["Content-Type", "multipart/alternative"],
    ]
    return [
        ("recipient", recipient),
        ("sender", "alice@example.org"),
        ("from", "Alice Example <alice@example.org>"),
        ("subject", "Bench mail"),
        ("body-plain", TEXT),
        ("body-html", HTML),
        ("message-headers", json.dumps(headers)),
        ("timestamp", MARKERS["TS"]),
        ("token", MARKERS["TOKEN"]),
        ("signature", MARKERS["SIG"]),
    ]


def small_template() -> tuple[bytes, str]:
    """urlencoded, as Mailgun sends a mail without attachments."""
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in _fields())
    for marker in MARKERS.values():
        body = body.replace(quote_plus(marker), marker)
    return body.encode(), "application/x-www-form-urlencoded"


def attachment_tail(index: int, size: int = MIB) -> bytes:
    """The fixed part of attachment ``index`` (its first bytes are the mail's token)."""
    data = bytearray(hashlib.sha256(f"bench-{index}".encode()).digest() * 2)
    seed = bytes(data)
    out = bytearray()
    counter = 0
    while len(out) < size - TOKEN_LEN:
        out += hashlib.sha512(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[: size - TOKEN_LEN]).replace(b"@", b"A")


def multipart(
    fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]]
) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, filename, data in files:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def attach_template(count: int = 3) -> tuple[bytes, str]:
    files = [
        (f"attachment-{i}", f"report-{i}.bin", MARKERS["TOKEN"].encode() + attachment_tail(i))
        for i in range(1, count + 1)
    ]
    return multipart([*_fields(), ("attachment-count", str(count))], files)


def one_mail(recipient: str, files: list[tuple[str, str, bytes]]) -> tuple[bytes, str, str]:
    """A concrete signed multipart mail (not a template); returns body, content type, token."""
    values = sign_values(1, [recipient], urlencoded=False)[0]
    fields = [(k, fill(v, values)) for k, v in _fields()]
    body, ctype = multipart([*fields, ("attachment-count", str(len(files)))], files)
    return body, ctype, values["TOKEN"]


def fill(text: str, values: dict[str, str]) -> str:
    for key, marker in MARKERS.items():
        text = text.replace(marker, values[key])
    return text


def sign_values(
    count: int, recipients: Sequence[str], *, urlencoded: bool, start: int = 0
) -> list[dict[str, str]]:
    """``count`` requests' values, signed now; request ``i`` goes to
    ``recipients[(start + i) % len(recipients)]``."""
    key = MAILGUN_KEY.encode()
    now = str(int(time.time()))
    out = []
    for i in range(count):
        token = secrets.token_hex(TOKEN_LEN // 2)
        sig = hmac.new(key, f"{now}{token}".encode(), hashlib.sha256).hexdigest()
        mid = f"<{token[:24]}.{os.getpid()}@bench.example.org>"
        rcpt = recipients[(start + i) % len(recipients)]
        if urlencoded:
            mid = quote_plus(json.dumps(mid)[1:-1])
            rcpt = quote_plus(rcpt)
        out.append({"TS": now, "TOKEN": token, "SIG": sig, "MID": mid, "RCPT": rcpt})
    return out


def write_values(
    path: Path, count: int, recipients: Sequence[str], *, urlencoded: bool, start: int = 0
) -> None:
    """The values file ``replay.lua`` reads: a header line naming the markers, then one request
    a line, tab-separated."""
    names = list(MARKERS)
    lines = [
        "\t".join(v[n] for n in names) + "\n"
        for v in sign_values(count, recipients, urlencoded=urlencoded, start=start)
    ]
    path.write_text("\t".join(names) + "\n" + "".join(lines))
