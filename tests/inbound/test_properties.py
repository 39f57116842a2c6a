"""Property tests of the parsing and normalising layer on hostile input (issue 4, point 4).

Generated raw MIME (nested multiparts, random boundaries, headers with RFC 2047 encoded words in
random and bogus charsets, random Content-Transfer-Encodings, filenames with path, control and
bidi characters, random bytes), Postmark documents, provider forms and HTML. Whatever arrives:

* a parser returns a message or raises our own refusal (``MalformedMessage``,
  ``MessageTooComplex``; ``InvalidCredentials`` for a Mailgun signature, ``MalformedBody`` /
  ``PayloadTooLarge`` for the form reader), never another exception;
* the message is safe to store and show: attachment names are non-empty display names without
  ``/``, ``\\``, control or bidi characters; subject and sender name are one line of plain text;
  every string is valid Unicode (encodable as UTF-8, as the database needs);
* sanitised HTML holds nothing executable: no ``<script``, no ``on*=`` attribute, no
  ``javascript:`` URL, only allow-listed elements and attributes.

Runs are derandomised (the ``mailslot-ci`` profile) so that CI is stable. For a longer, random
exploration: ``MAILSLOT_HYPOTHESIS=explore .venv/bin/pytest tests/inbound/test_properties.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import re
import string
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.inbound.errors import InvalidCredentials, MalformedMessage, MessageTooComplex
from app.inbound.html import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    html_to_text,
    sanitize_html,
)
from app.inbound.message import parse_mime
from app.inbound.model import InboundEmail, storable, storable_text
from app.inbound.multipart import Form, FormPart, MalformedBody, PayloadTooLarge, read_form
from app.inbound.providers import mailgun, postmark, sendgrid
from app.posts.service import rewrite_cid
from tests.conftest import make_settings
from tests.inbound import payloads
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import basic, mailgun_form, postmark_json

# --- profile --------------------------------------------------------------------------------------

settings.register_profile(
    "mailslot-ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)
settings.register_profile(
    "mailslot-explore", parent=settings.get_profile("mailslot-ci"), derandomize=False
)
_EXPLORE = os.environ.get("MAILSLOT_HYPOTHESIS") == "explore"
PROFILE = settings.get_profile("mailslot-explore" if _EXPLORE else "mailslot-ci")

T = TypeVar("T")


def examples(count: int) -> settings:
    """The module's profile with ``count`` examples (twenty times as many when exploring)."""
    return settings(PROFILE, max_examples=count * 20 if _EXPLORE else count)


MAX_ATTACHMENT = 256  # small, so that generated parts pass it too
SETTINGS: Settings = make_settings(
    "sqlite:///unused.db",
    Path(tempfile.gettempdir()) / "mailslot-properties-unused",
    max_attachment_bytes=MAX_ATTACHMENT,
    mailgun_signing_key="key-properties-0123456789",
)

# --- what every result must satisfy ---------------------------------------------------------------

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
LINE_BREAK = re.compile("[\u2028\u2029]")
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def assert_storable(value: str | None, what: str) -> None:
    """Text a database stores as it is: valid Unicode (no lone surrogate), no NUL character."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AssertionError(f"{what} is not valid Unicode: {value!r}") from exc
    assert "\x00" not in value, f"{what} holds a NUL character: {value!r}"


def assert_plain_line(value: str | None, what: str) -> None:
    if value is None:
        return
    assert_storable(value, what)
    for pattern in (CONTROL, BIDI, LINE_BREAK):
        assert not pattern.search(value), f"{what} keeps {pattern.search(value)!r}: {value!r}"
    assert value == value.strip(), f"{what} is not stripped: {value!r}"


def assert_safe_filename(name: str) -> None:
    assert name, "an empty attachment name"
    assert "/" not in name, f"a path in an attachment name: {name!r}"
    assert "\\" not in name, f"a path in an attachment name: {name!r}"
    assert_plain_line(name, "an attachment name")
    assert not name.startswith("."), f"a hidden attachment name: {name!r}"
    assert len(name.encode("utf-8")) <= 255, f"an attachment name over 255 bytes: {name!r}"


def check_email(email: InboundEmail, *, raw_size: int | None = None) -> None:
    """What a parser promises about the message it returns, and what the router stores of it."""
    assert isinstance(email, InboundEmail)
    assert_plain_line(email.subject, "the subject")
    assert len(email.subject) <= 998
    assert_plain_line(email.from_name, "the sender name")
    if email.from_address is not None:
        assert "@" in email.from_address, email.from_address
        assert not CONTROL.search(email.from_address.replace("\x00", "")), email.from_address
    if raw_size is not None:
        assert email.size_bytes == raw_size
    for attachment in email.attachments:
        assert_safe_filename(attachment.filename)
        assert MEDIA_TYPE.fullmatch(attachment.content_type), attachment.content_type
        assert attachment.size >= 0
        if attachment.kept and attachment.data is not None:
            assert len(attachment.data) == attachment.size
            assert attachment.sha256 == hashlib.sha256(attachment.data).hexdigest()
        if not attachment.kept:
            assert attachment.data is None
            assert attachment.path is None
    check_storable(storable(email))


def check_storable(email: InboundEmail) -> None:
    """Every text field of what the router hands the service can be stored as it is."""
    for value, what in (
        (email.subject, "the subject"),
        (email.from_name, "the sender name"),
        (email.from_address, "the From address"),
        (email.text, "the text"),
        (email.html, "the HTML"),
        (email.message_id, "the Message-Id"),
        (email.envelope_from, "the envelope sender"),
        (email.content_type, "the content type"),
        (email.spf, "the SPF verdict"),
        (email.dkim, "the DKIM verdict"),
        (email.event_id, "the event id"),
    ):
        assert_storable(value, what)
    for name, value in email.headers:
        assert_storable(name, "a header name")
        assert_storable(value, "a header value")
    for recipient in email.recipients:
        assert_storable(recipient, "a recipient")
    for attachment in email.attachments:
        assert_storable(attachment.filename, "an attachment name")
        assert_storable(attachment.content_type, "an attachment type")
        assert_storable(attachment.content_id, "a Content-ID")


def parse_or_refuse(raw: bytes) -> InboundEmail | None:
    """``parse_mime``: a message (checked) or our own refusal; anything else fails the test."""
    try:
        email = parse_mime(
            raw,
            provider="mime",
            recipients=("news.k3x9@in.example.com",),
            envelope_from="bounce@example.org",
            max_attachment_bytes=MAX_ATTACHMENT,
        )
    except (MalformedMessage, MessageTooComplex) as exc:
        event(f"refused: {type(exc).__name__}")
        return None
    event(f"attachments: {min(len(email.attachments), 3)}")
    event(f"subject: {'empty' if not email.subject else 'present'}")
    check_email(email, raw_size=len(raw))
    return email


# --- strategies: text -----------------------------------------------------------------------------

# What hostile names and headers are made of: separators, controls, bidi overrides, quotes.
HOSTILE = (
    "/\\..:;,\"'=?*%<>()@[] \t\r\n\x00\x01\x07\x08\x0b\x0c\x1b\x7f\x85\x9b\xa0"
    "\u061c\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2028\u2029"
    "\u2066\u2067\u2068\u2069\ufeff\ufffd"
)
hostile_char = st.one_of(st.sampled_from(HOSTILE), st.characters())
hostile_text = st.text(hostile_char, max_size=30)
# The same without line ends, for header values that should stay one (folded) header.
inline_char = st.one_of(
    st.sampled_from(HOSTILE.replace("\r", "").replace("\n", "")),
    st.characters(exclude_characters="\r\n"),
)
inline_text = st.text(inline_char, max_size=30)
word = st.text(string.ascii_letters + string.digits, min_size=1, max_size=8)

CHARSETS = [
    "utf-8",
    "UTF8",
    "us-ascii",
    "iso-8859-1",
    "latin1",
    "windows-1252",
    "iso-8859-15",
    "koi8-r",
    "shift_jis",
    "iso-2022-jp",
    "euc-kr",
    "ks_c_5601-1987",
    "gb2312",
    "gbk",
    "big5",
    "utf-16",
    "utf-16-be",
    "utf-32",
    "utf-7",
    "cp932",
    # codecs that are not charsets, and names that are not codecs
    "idna",
    "punycode",
    "unicode_escape",
    "raw_unicode_escape",
    "rot13",
    "hex",
    "base64",
    "zlib",
    "bz2",
    "uu",
    "quopri",
    "undefined",
    "mbcs",
    "x-unknown",
    "",
    "utf-8\x00",
    '"utf-8"',
    "utf-8*en",
    "../../etc/passwd",
]
charset = st.one_of(st.sampled_from(CHARSETS), st.text(string.printable, max_size=12))


def _q_encode(data: bytes) -> str:
    return "".join(
        chr(b) if chr(b) in string.ascii_letters + string.digits else f"={b:02X}" for b in data
    )


@st.composite
def encoded_word(draw: st.DrawFn) -> str:
    """An RFC 2047 encoded word, valid or not, in any charset."""
    label = draw(charset)
    encoding = draw(st.sampled_from("BbQqXx"))
    if draw(st.booleans()):
        data = draw(
            st.one_of(
                st.binary(max_size=40), hostile_text.map(lambda t: t.encode("utf-8", "replace"))
            )
        )
        payload = base64.b64encode(data).decode() if encoding in "Bb" else _q_encode(data)
        if draw(st.booleans()):
            payload = payload[: draw(st.integers(0, len(payload)))]  # cut short
    else:
        payload = draw(st.text(string.printable, max_size=30))
    return f"=?{label}?{encoding}?{payload}?="


header_text = st.lists(
    st.one_of(
        inline_text,
        encoded_word(),
        st.sampled_from([" ", "\r\n ", "\n\t", "=?", "?=", '"', "<", ">"]),
    ),
    max_size=6,
).map("".join)


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


header_value = st.one_of(
    header_text.map(to_bytes),
    header_text.map(to_bytes),
    st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    header_text.map(lambda t: t.encode("latin-1", "replace")),
    hostile_text.map(to_bytes),  # line ends too: the header block may end early
)

address = st.one_of(
    st.builds("{}@{}".format, inline_text, inline_text),
    st.builds("{}@{}.example".format, word, word),
    inline_text,
)
from_value = st.one_of(
    st.builds('"{}" <{}>'.format, inline_text, address),
    st.builds("{} <{}>".format, header_text, address),
    st.builds("{} {}".format, encoded_word(), address),
    address,
    header_text,
    st.builds("<{}>".format, address),
).map(to_bytes)

# A file name as a sender could write it: paths, controls, bidi overrides, dots, long names.
filename = st.one_of(
    inline_text,
    hostile_text,
    st.builds(
        "{}{}{}".format,
        st.sampled_from(["../", "..\\", "/etc/", "C:\\", ".", ""]),
        inline_text,
        st.sampled_from([".exe", ".pdf", "\u202egnp.exe", "", ".", " "]),
    ),
    st.builds("{}\u202e{}.{}".format, word, word, word),
    st.text(inline_char, min_size=200, max_size=400),
)


@st.composite
def name_parameter(draw: st.DrawFn, key: str) -> str:
    """``key=...`` in one of the ways mail software writes names (RFC 2045, 2231, 2047)."""
    name = draw(filename)
    style = draw(st.sampled_from(["quoted", "escaped", "token", "2231", "2231-split", "2047"]))
    if style == "quoted":
        return f'{key}="{name}"'
    if style == "escaped":
        return '{}="{}"'.format(key, name.replace("\\", "\\\\").replace('"', '\\"'))
    if style == "token":
        return f"{key}={name}"
    encoded = "".join(f"%{b:02X}" for b in to_bytes(name))
    if style == "2231":
        return f"{key}*={draw(charset)}'{draw(word)}'{encoded}"
    if style == "2231-split":
        cut = draw(st.integers(0, len(encoded)))
        return f"{key}*0*={draw(charset)}''{encoded[:cut]}; {key}*1*={encoded[cut:]}"
    return f'{key}="{draw(encoded_word())}"'


# --- strategies: MIME trees -----------------------------------------------------------------------


@dataclass
class Node:
    """One entity: its header lines (without line ends) and its body (line ends as ``\\n``)."""

    headers: list[bytes]
    body: bytes


LEAF_TYPES = [
    "text/plain",
    "text/html",
    "application/octet-stream",
    "application/pdf",
    "application/zip",
    "image/png",
    "message/rfc822",
    "message/delivery-status",
    "message/global",
    "text/rfc822-headers",
    "text/calendar",
    "/",
    "text/",
    "x",
    "multipart/mixed",  # without a boundary
    "application/" + "x" * 200,
]
ENCODINGS = [
    "7bit",
    "8bit",
    "binary",
    "base64",
    "BASE64",
    "quoted-printable",
    "x-uuencode",
    "uuencode",
    "x-uue",
    " base64 ",
    "bogus",
    "",
]
HEADER_NAMES = [
    "Subject",
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Sender",
    "Message-ID",
    "Date",
    "Content-ID",
    "Content-Description",
    "Auto-Submitted",
    "Precedence",
    "List-Id",
    "Return-Path",
    "X-Mailer",
    "MIME-Version",
]
html_fragment = st.sampled_from(
    [
        "<p>Hello <b>group</b></p>",
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "<img src='cid:logo'>",
        "<a href='javascript:alert(1)'>x</a>",
        "<svg onload=alert(1)>",
        "<style>body{background:url(http://canary/)}</style>",
        "<base href='http://evil/'>",
        "<meta http-equiv=refresh content='0;url=javascript:alert(1)'>",
        "<table><tr><td>cell",
        "&lt;&amp;&#x3c;&#0;",
    ]
)


def encode_body(data: bytes, encoding: str, valid: bool) -> bytes:
    """``data`` in the Content-Transfer-Encoding (when ``valid``), lines ending in ``\\n``."""
    kind = encoding.strip().lower()
    if not valid:
        return data
    if kind == "base64":
        return base64.encodebytes(data)
    if kind == "quoted-printable":
        return binascii.b2a_qp(data)
    if kind in {"x-uuencode", "uuencode", "x-uue"}:
        lines = [binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45)]
        return b"begin 644 file\n" + b"".join(lines) + b"`\nend\n"
    return data


@st.composite
def leaf(draw: st.DrawFn) -> Node:
    content_type = draw(st.sampled_from(LEAF_TYPES))
    params = draw(
        st.lists(
            st.one_of(
                st.builds("charset={}".format, charset),
                name_parameter("name"),
                st.builds("{}={}".format, word, inline_text),
            ),
            max_size=3,
        )
    )
    headers = []
    if draw(st.integers(0, 9)):
        headers.append(to_bytes("Content-Type: " + "; ".join([content_type, *params])))
    if draw(st.booleans()):
        disposition = draw(st.sampled_from(["attachment", "inline", "", "bogus"]))
        extra = draw(st.lists(name_parameter("filename"), max_size=2))
        headers.append(to_bytes("Content-Disposition: " + "; ".join([disposition, *extra])))
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding:
        headers.append(to_bytes("Content-Transfer-Encoding: " + encoding))
    if draw(st.integers(0, 3)) == 0:
        headers.append(b"Content-ID: " + draw(header_value))
    data = draw(
        st.one_of(
            st.binary(max_size=300),
            hostile_text.map(to_bytes),
            st.lists(html_fragment, max_size=4).map(lambda parts: "".join(parts).encode()),
            st.binary(min_size=MAX_ATTACHMENT - 2, max_size=MAX_ATTACHMENT + 2),  # at the limit
        )
    )
    return Node(headers, encode_body(data, encoding, draw(st.booleans())))


BOUNDARY_CHARS = string.ascii_letters + string.digits + "'()+_,-./:=? "
valid_boundary = st.text(BOUNDARY_CHARS, min_size=1, max_size=70).map(lambda b: b.rstrip() or "b")
boundary = st.one_of(
    valid_boundary,
    valid_boundary,
    valid_boundary,
    st.text(hostile_char, min_size=1, max_size=20),
    st.just("=_" + "x" * 250),  # longer than any boundary we parse
)


def render(node: Node, eol: bytes) -> bytes:
    head = b"".join(line + eol for line in node.headers)
    return head + eol + node.body.replace(b"\n", eol)


@st.composite
def multipart(draw: st.DrawFn, children: st.SearchStrategy[list[Node]]) -> Node:
    subtype = draw(
        st.sampled_from(["mixed", "alternative", "related", "digest", "report", "signed", "x"])
    )
    mark = draw(boundary)
    parameter = draw(
        st.sampled_from(
            [f'boundary="{mark}"', f"boundary={mark}", f"boundary*=utf-8''{mark}", 'boundary=""']
        )
    )
    parts = draw(children)
    delimiter = b"--" + to_bytes(mark)
    body = draw(st.sampled_from([b"", b"This is a multi-part message.\n"]))
    for part in parts:
        body += delimiter + b"\n" + render(part, b"\n") + b"\n"
    if draw(st.integers(0, 4)):  # sometimes never closed
        body += delimiter + b"--\n"
    body += draw(st.sampled_from([b"", b"epilogue\n", delimiter]))
    return Node([to_bytes(f"Content-Type: multipart/{subtype}; {parameter}")], body)


@st.composite
def forwarded(draw: st.DrawFn, inner: st.SearchStrategy[Node]) -> Node:
    message = draw(inner)
    subject = b"Subject: " + draw(header_value)
    nested = Node([subject, *message.headers], message.body)
    kind = draw(st.sampled_from(["message/rfc822", "message/global", "message/delivery-status"]))
    return Node([to_bytes(f"Content-Type: {kind}")], render(nested, b"\n"))


tree = st.recursive(
    leaf(),
    lambda children: st.one_of(multipart(st.lists(children, max_size=4)), forwarded(children)),
    max_leaves=10,
)


@st.composite
def raw_message(draw: st.DrawFn) -> bytes:
    """A whole message: top-level headers (any order, repeated, odd names) and a MIME tree."""
    headers = [
        b"From: " + draw(from_value),
        b"Subject: " + draw(header_value),
        b"To: " + draw(header_value),
        b"Message-ID: " + draw(header_value),
    ]
    headers += draw(
        st.lists(
            st.builds(
                lambda name, value: to_bytes(name) + b": " + value,
                st.one_of(st.sampled_from(HEADER_NAMES), word, hostile_text),
                header_value,
            ),
            max_size=5,
        )
    )
    root = draw(st.one_of(multipart(st.lists(tree, min_size=1, max_size=5)), tree))
    headers = draw(st.permutations([*headers, *root.headers]))
    node = Node(headers, root.body)
    eol = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    return render(node, eol)


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[bytes]) -> bytes:
    """Bytes of ``source`` with a few bytes replaced, inserted or removed."""
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        byte = draw(st.sampled_from([0, 10, 13, 32, 34, 45, 58, 59, 61, 0x80, 0xFF]))
        if action == "replace" and position < len(data):
            data[position] = byte
        elif action == "insert":
            data[position:position] = bytes([byte])
        elif action == "delete":
            del data[position : position + 1]
        else:
            del data[position:]
    return bytes(data)


@st.composite
def deep_message(draw: st.DrawFn) -> bytes:
    """A chain of nested multiparts or messages around the nesting limit (50 levels)."""
    depth = draw(st.integers(40, 60))
    kinds = draw(
        st.lists(st.sampled_from(["multipart", "message"]), min_size=depth, max_size=depth)
    )
    head = b"From: a@example.org\r\nSubject: deep\r\n"
    out, closes = [], []
    for level, kind in enumerate(kinds):
        if kind == "multipart":
            out.append(
                head
                + b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level)
            )
            closes.append(b"\r\n--b%d--\r\n" % level)
        else:
            out.append(head + b"Content-Type: message/rfc822\r\n\r\n")
        head = b""
    out.append(b"Content-Type: text/plain\r\n\r\nbottom")
    return b"".join(out) + b"".join(reversed(closes))


# --- parse_mime ---------------------------------------------------------------------------------


@examples(200)
@given(raw=raw_message())
def test_parse_mime_on_generated_mime_trees(raw: bytes) -> None:
    parse_or_refuse(raw)


@examples(150)
@given(raw=mutated(raw_message()))
def test_parse_mime_on_damaged_mime_trees(raw: bytes) -> None:
    parse_or_refuse(raw)


@examples(150)
@given(raw=st.one_of(st.binary(max_size=4000), st.text(hostile_char, max_size=400).map(to_bytes)))
def test_parse_mime_on_random_bytes(raw: bytes) -> None:
    parse_or_refuse(raw)


@examples(25)
@given(raw=deep_message())
def test_parse_mime_around_the_nesting_limit(raw: bytes) -> None:
    parse_or_refuse(raw)


@examples(100)
@given(data=st.data())
def test_every_attachment_name_becomes_a_safe_display_name(data: st.DataObject) -> None:
    """An attachment named in any way parses to an attachment with a safe display name."""
    parameter = data.draw(name_parameter("filename"))
    raw = (
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
        + to_bytes(parameter)
        + b"\r\n\r\n%PDF\r\n--b--\r\n"
    )
    email = parse_or_refuse(raw)
    if email is not None:
        assert email.attachments, raw


@examples(100)
@given(
    value=st.text(
        st.one_of(st.characters(), st.just("\x00"), st.characters(categories=["Cs"])), max_size=20
    )
)
def test_storable_text_is_storable_and_idempotent(value: str) -> None:
    cleaned = storable_text(value)
    assert_storable(cleaned, "storable text")
    assert storable_text(cleaned) == cleaned
    if "\x00" not in value:
        assert len(cleaned) == len(value)  # a surrogate becomes one U+FFFD


# --- HTML -----------------------------------------------------------------------------------------

DANGEROUS_HTML = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<script",
    "<img src=x onerror=alert(1)>",
    '<img src="cid:logo" onload="alert(1)">',
    "<img src=http://canary/pixel.gif>",
    "<img src='data:image/svg+xml;base64,PHN2Zz4='>",
    "<a href='javascript:alert(1)'>x</a>",
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<a href="java&#x09;script:alert(1)">x</a>',
    '<a href="  JaVaScRiPt:alert(1)">x</a>',
    '<a href="jav&#x0A;ascript:alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<a href="/relative">x</a>',
    "<svg onload=alert(1)><script>alert(1)</script></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<svg><p><style><img src=x onerror=alert(1)></style></p></svg>",
    '<form action="javascript:alert(1)"><button>x</button></form>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<object data="javascript:alert(1)"></object>',
    "<embed src=javascript:alert(1)>",
    "<base href='javascript:alert(1)//'>",
    "<meta http-equiv=refresh content='0;url=javascript:alert(1)'>",
    "<link rel=stylesheet href=http://canary/x.css>",
    "<style>@import 'http://canary/x.css';</style>",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<details open ontoggle=alert(1)>",
    "<body onload=alert(1)>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<template><script>alert(1)</script></template>",
    "<textarea><script>alert(1)</script></textarea>",
    "<xmp><script>alert(1)</script></xmp>",
    "<plaintext><script>alert(1)",
    "<!--<script>alert(1)</script>-->",
    "<![CDATA[<script>alert(1)</script>]]>",
    "<a href=x onclick=alert(1) onmouseover=alert(1)>x</a>",
    '<img """><script>alert(1)</script>">',
    "<p dir=rtl align=center onfocus=alert(1) autofocus tabindex=1>x</p>",
]
HTML_TOKENS = [
    "<",
    ">",
    "</",
    "/>",
    '"',
    "'",
    "=",
    " ",
    "\t",
    "\n",
    "\x00",
    "&",
    "#",
    ";",
    ":",
    "on",
    "onerror",
    "ONCLICK",
    "href",
    "src",
    "javascript",
    "script",
    "svg",
    "math",
    "img",
    "a",
    "p",
    "div",
    "style",
    "cid:",
    "&#x6a;",
    "&#0000106",
    "&Tab;",
]
html_input = st.one_of(
    st.lists(
        st.one_of(
            st.sampled_from(DANGEROUS_HTML), st.sampled_from(HTML_TOKENS), st.text(max_size=10)
        ),
        max_size=25,
    ).map("".join),
    st.text(max_size=200),
    # Deeper than the tree parser is given: sanitised by the linear text fallback.
    st.builds(
        "{}{}{}".format,
        st.integers(250, 300).map(lambda n: "<div>" * n),
        st.lists(st.sampled_from(DANGEROUS_HTML), max_size=4).map("".join),
        st.sampled_from(["", "</div>" * 10]),
    ),
)


class _Markup(HTMLParser):
    """The elements and attributes of (sanitised) HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):")
TAG = re.compile(r"<[a-zA-Z][^>]*>")
EVENT_ATTRIBUTE = re.compile(r"[\s/\"']on[a-z]*\s*=", re.IGNORECASE)


def assert_inert_html(output: str, cid_targets: frozenset[str] = frozenset()) -> None:
    assert_storable(output, "sanitised HTML")
    lowered = output.lower()
    assert "<script" not in lowered, output
    for markup in TAG.findall(output):
        assert not EVENT_ATTRIBUTE.search(markup), markup
        assert "javascript:" not in markup.lower(), markup
    parser = _Markup()
    parser.feed(output)
    parser.close()
    for tag, attrs in parser.tags:
        assert tag in ALLOWED_TAGS, (tag, output)
        allowed = ALLOWED_ATTRIBUTES.get(tag, frozenset()) | ALLOWED_ATTRIBUTES["*"]
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, output)
            assert name in allowed or (tag == "a" and name == "rel"), (tag, name, output)
            if name in {"href", "src"} and value is not None:
                url = re.sub(r"[\x00-\x20\x7f-\x9f]", "", value).lower()
                scheme = SCHEME.match(url)
                if scheme is None:  # relative: only the stored-file URLs we put there
                    assert value in cid_targets, (tag, name, value, output)
                else:
                    allowed_schemes = (
                        {"cid"} if name == "src" else {"http", "https", "mailto", "cid"}
                    )
                    if value in cid_targets:
                        continue
                    assert scheme.group(1) in allowed_schemes, (tag, name, value, output)


@examples(400)
@given(html=html_input)
def test_sanitised_html_is_inert(html: str) -> None:
    assert_inert_html(sanitize_html(html))


@examples(150)
@given(html=html_input, cids=st.lists(st.sampled_from(["logo", "<logo>", "x@y", ""]), max_size=3))
def test_rewritten_cid_html_is_inert(html: str, cids: list[str]) -> None:
    targets = {cid: f"/v1/attachments/{i}/content?sig=abc" for i, cid in enumerate(cids)}
    output = rewrite_cid(sanitize_html(html), targets)
    assert_inert_html(output, frozenset(targets.values()))


@examples(200)
@given(html=html_input)
def test_html_to_text_always_answers(html: str) -> None:
    text = html_to_text(html)
    assert_storable(text, "the text of HTML")
    assert "<script" not in text.lower() or "<script" in html.lower()


# --- Postmark -----------------------------------------------------------------------------------

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), hostile_text
)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=6,
)


def maybe(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | Any]:
    """Usually ``strategy``, sometimes any JSON value instead (a wrong type)."""
    return st.one_of(strategy, strategy, strategy, json_value)


base64_text = st.one_of(
    st.binary(max_size=MAX_ATTACHMENT + 50).map(lambda b: base64.b64encode(b).decode()),
    st.text(string.ascii_letters + string.digits + "+/=\n -_!", max_size=60),
)
postmark_attachment = st.fixed_dictionaries(
    {},
    optional={
        "Name": maybe(filename),
        "Content": maybe(base64_text),
        "Data": maybe(base64_text),
        "ContentType": maybe(st.one_of(st.sampled_from(LEAF_TYPES), hostile_text)),
        "ContentID": maybe(hostile_text),
        "ContentLength": json_value,
    },
)
postmark_header = st.fixed_dictionaries(
    {},
    optional={
        "Name": maybe(
            st.one_of(
                st.sampled_from(
                    ["Return-Path", "Message-ID", "Received-SPF", "Content-Type", "From"]
                ),
                hostile_text,
            )
        ),
        "Value": maybe(header_text),
    },
)
postmark_document = st.fixed_dictionaries(
    {},
    optional={
        "From": maybe(from_value.map(lambda b: b.decode("utf-8", "replace"))),
        "FromName": maybe(header_text),
        "FromFull": maybe(
            st.fixed_dictionaries(
                {}, optional={"Email": maybe(address), "Name": maybe(header_text)}
            )
        ),
        "OriginalRecipient": maybe(address),
        "Subject": maybe(header_text),
        "MessageID": maybe(hostile_text),
        "TextBody": maybe(hostile_text),
        "HtmlBody": maybe(html_input),
        "Headers": st.one_of(st.lists(maybe(postmark_header), max_size=4), maybe(json_value)),
        "Attachments": st.one_of(
            st.lists(postmark_attachment, min_size=1, max_size=3),
            st.lists(maybe(postmark_attachment), max_size=3),
            json_value,
        ),
        "Unknown": json_value,
    },
)


@st.composite
def postmark_body(draw: st.DrawFn) -> bytes:
    document = draw(postmark_document)
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        # JSON may escape code points that are not characters (lone surrogates): "\ud83d".
        text = text.replace('"Subject": "', '"Subject": "\\ud83d', 1).replace(
            '"Name": "', '"Name": "\\udc00', 1
        )
    return to_bytes(text)


@examples(200)
@given(
    body=st.one_of(
        postmark_body(),
        postmark_body(),
        postmark_body(),
        mutated(postmark_body()),
        json_value.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
    )
)
def test_postmark_documents(body: bytes) -> None:
    try:
        email = postmark.parse_document(body, len(body), SETTINGS)
    except MalformedMessage:
        event("MalformedMessage")
        return
    event(f"message with {min(len(email.attachments), 2)} attachments")
    check_email(email, raw_size=len(body))


# --- provider forms -------------------------------------------------------------------------------


def _json_text(value: Any) -> str:
    return json.dumps(value)


message_headers = st.one_of(
    st.lists(
        st.one_of(
            st.tuples(
                st.one_of(st.sampled_from(HEADER_NAMES), hostile_text),
                header_text,
            ).map(list),
            json_value,
        ),
        max_size=5,
    ).map(_json_text),
    json_value.map(_json_text),
    hostile_text,
)
envelope = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "to": maybe(st.one_of(st.lists(address, max_size=3), address)),
            "from": maybe(address),
        },
    ).map(_json_text),
    json_value.map(_json_text),
    hostile_text,
)
FIELD_VALUES: dict[str, st.SearchStrategy[str]] = {
    "message-headers": message_headers,
    "content-id-map": st.one_of(
        st.dictionaries(hostile_text, st.sampled_from(["attachment-1", "attachment-2"])).map(
            _json_text
        ),
        json_value.map(_json_text),
        hostile_text,
    ),
    "envelope": envelope,
    "charsets": st.one_of(
        st.dictionaries(
            st.sampled_from(["from", "subject", "text", "html", "headers", "to"]), charset
        ).map(_json_text),
        json_value.map(_json_text),
    ),
    "attachment-info": st.one_of(
        st.dictionaries(
            st.sampled_from(["attachment1", "attachment2"]),
            st.fixed_dictionaries(
                {},
                optional={
                    "filename": filename,
                    "type": st.one_of(st.sampled_from(LEAF_TYPES), hostile_text),
                    "content-id": hostile_text,
                },
            ),
        ).map(_json_text),
        json_value.map(_json_text),
    ),
    "content-ids": st.one_of(
        st.dictionaries(hostile_text, st.sampled_from(["attachment1", "attachment2"])).map(
            _json_text
        ),
        json_value.map(_json_text),
    ),
    "headers": header_text,
    "from": from_value.map(lambda b: b.decode("utf-8", "replace")),
    "html": html_input,
}
FIELD_NAMES = [
    *FIELD_VALUES,
    "recipient",
    "sender",
    "subject",
    "body-plain",
    "body-html",
    "stripped-text",
    "Message-Id",
    "X-Mailgun-Spf",
    "X-Mailgun-Dkim-Check-Result",
    "timestamp",
    "token",
    "signature",
    "text",
    "to",
    "SPF",
    "dkim",
    "attachments",
]


@st.composite
def form_field(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    name = draw(st.one_of(st.sampled_from(FIELD_NAMES), hostile_text))
    text = draw(FIELD_VALUES.get(name, header_text))
    label = draw(st.one_of(st.none(), charset))
    value = draw(
        st.one_of(
            st.just(to_bytes(text)),
            st.just(text.encode("utf-16", "surrogatepass")),
            st.just(text.encode("latin-1", "replace")),
            st.binary(max_size=40),
        )
    )
    return name, value, label


@st.composite
def form_file(draw: st.DrawFn) -> tuple[str, str, str | None, bytes]:
    name = draw(
        st.one_of(
            st.sampled_from(["attachment-1", "attachment-2", "attachment1", "attachment2"]),
            hostile_text,
        )
    )
    content_type = draw(st.one_of(st.none(), st.sampled_from(LEAF_TYPES), header_text))
    return name, draw(filename), content_type, draw(st.binary(max_size=MAX_ATTACHMENT + 20))


def build_form(
    fields: list[tuple[str, bytes, str | None]],
    files: list[tuple[str, str, str | None, bytes]],
    truncated: set[int],
    spool: Path,
) -> Form:
    parts = [
        FormPart(
            name=name,
            filename=None,
            content_type=None,
            charset=label,
            size=len(value),
            data=None if i in truncated else value,
            sha256=hashlib.sha256(value).hexdigest(),
            truncated=i in truncated,
        )
        for i, (name, value, label) in enumerate(fields)
    ]
    for name, file_name, content_type, data in files:
        too_large = len(data) > MAX_ATTACHMENT
        parts.append(
            FormPart(
                name=name,
                filename=file_name,
                content_type=content_type,
                charset=None,
                size=len(data),
                data=None if too_large else data,
                sha256=None if too_large else hashlib.sha256(data).hexdigest(),
                truncated=too_large,
            )
        )
    return Form(parts, spool)


form_inputs = st.tuples(
    st.lists(form_field(), max_size=10),
    st.lists(form_file(), max_size=3),
    st.sets(st.integers(0, 9), max_size=2),
)


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spool")


def parse_form_fields(form: Form) -> None:
    """Both providers' field parsers, and Mailgun's signature check, on one form."""
    parsers: list[Callable[[], InboundEmail]] = [
        lambda: mailgun.parse_fields(form, "token", SETTINGS),
        lambda: sendgrid.parse_fields(form, SETTINGS),
    ]
    for parse in parsers:
        try:
            email = parse()
        except MalformedMessage:
            event("field parser: MalformedMessage")
            continue
        event(f"field parser: message with {min(len(email.attachments), 2)} attachments")
        check_email(email)
    try:
        token = mailgun.verify(form, SETTINGS)
    except (InvalidCredentials, MalformedMessage):
        return
    raise AssertionError(f"a generated form passed the Mailgun signature check: {token!r}")


@examples(250)
@given(inputs=form_inputs)
def test_provider_field_parsers(inputs: Any, spool: Path) -> None:
    fields, files, truncated = inputs
    parse_form_fields(build_form(fields, files, truncated, spool))


# --- the form reader ------------------------------------------------------------------------------


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]
    yield b""


@st.composite
def multipart_form_body(draw: st.DrawFn) -> tuple[bytes, str]:
    mark = draw(st.one_of(st.text(BOUNDARY_CHARS.strip(), min_size=1, max_size=70), boundary))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    delimiter = b"--" + to_bytes(mark)
    body = b""
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            name, value, label = draw(form_field())
            head = f'Content-Disposition: form-data; name="{name}"'
            lines = [to_bytes(head)]
            if label is not None:
                lines.append(to_bytes(f"Content-Type: text/plain; charset={label}"))
        else:
            name, _, content_type, value = draw(form_file())
            lines = [
                to_bytes(
                    f'Content-Disposition: form-data; name="{name}"; '
                    + draw(name_parameter("filename"))
                )
            ]
            if content_type is not None:
                lines.append(to_bytes(f"Content-Type: {content_type}"))
        lines += draw(st.lists(st.builds(lambda v: b"X-Extra: " + v, header_value), max_size=2))
        body += delimiter + eol + b"".join(line + eol for line in lines) + eol + value + eol
    if draw(st.integers(0, 4)):
        body += delimiter + b"--" + eol
    content_type = draw(
        st.sampled_from(
            [
                f'multipart/form-data; boundary="{mark}"',
                f'multipart/form-data; boundary="{mark}"',
                f"multipart/form-data; boundary={mark}",
                "multipart/form-data",
                "application/x-www-form-urlencoded",
                "text/plain",
            ]
        )
    )
    return body, content_type


@examples(150)
@given(
    request=st.one_of(
        multipart_form_body(),
        multipart_form_body(),
        multipart_form_body(),
        mutated(multipart_form_body().map(lambda r: r[0])).map(
            lambda b: (b, "multipart/form-data; boundary=b")
        ),
        st.tuples(st.binary(max_size=300), st.just("application/x-www-form-urlencoded")),
    ),
    chunk=st.sampled_from([1, 7, 64, 1 << 20]),
)
def test_form_reader_and_field_parsers(request: tuple[bytes, str], chunk: int, spool: Path) -> None:
    body, content_type = request

    async def read() -> Form | None:
        try:
            return await read_form(
                _chunks(body, chunk),
                content_type,
                spool_root=spool,
                max_total=4096,
                max_file=MAX_ATTACHMENT,
                max_field=1024,
                memory_threshold=64,
            )
        except (MalformedBody, PayloadTooLarge):
            return None

    before = set(_spool_contents(spool))
    form = asyncio.run(read())
    event("refused" if form is None else f"read: {min(len(form.parts), 3)} parts")
    if form is None:
        assert set(_spool_contents(spool)) == before, "a refused body left files behind"
        return
    try:
        for part in form.parts:
            assert_storable(part.name, "a field name")
            if part.truncated:
                assert part.data is None
                assert part.path is None
        parse_form_fields(form)
    finally:
        form.cleanup()
    assert set(_spool_contents(spool)) == before, "the form's cleanup left files behind"


def _spool_contents(root: Path) -> Iterator[str]:
    for path in root.rglob("*"):
        if path.is_file():
            yield str(path.relative_to(root))


# --- what the properties found, end to end ---------------------------------------------------
# Each of these answered 500 or 503 (a provider retries those for days) before the fixes: a
# Postmark "Headers" that is not a list, lone surrogates in JSON strings, NUL characters that
# PostgreSQL refuses to store, a Mailgun content-id-map that is not a list of pairs.

_SURROGATE_SUBJECT = "SURROGATE-SUBJECT"
_SURROGATE_NAME = "SURROGATE-NAME"
POSTMARK_CASES: dict[str, Callable[[str], str]] = {
    "headers not a list": lambda to: json.dumps({**postmark_json(to), "Headers": 5}),
    "lone surrogates": lambda to: (
        json.dumps(
            postmark_json(
                to,
                subject=_SURROGATE_SUBJECT,
                text=_SURROGATE_SUBJECT,
                attachments=[payloads.postmark_attachment(_SURROGATE_NAME, "text/plain", b"x")],
            )
        )
        .replace(_SURROGATE_SUBJECT, "\\ud83d")
        .replace(_SURROGATE_NAME, "\\udc00.txt")
    ),
    "NUL characters": lambda to: json.dumps(
        postmark_json(
            to,
            from_="al\u0000ice@example.org",
            text="a\u0000b",
            html="<p>a\u0000b</p>",
            message_id="x\u0000y",
            attachments=[
                payloads.postmark_attachment("n\u0000.txt", "a\u0000/b", b"x", "c\u0000id")
            ],
        )
    ),
}


@pytest.mark.parametrize("case", sorted(POSTMARK_CASES))
async def test_hostile_postmark_strings_are_never_a_server_error(
    case: str, client: httpx.AsyncClient, inbox: Inbox
) -> None:
    body = POSTMARK_CASES[case](inbox.address).encode()
    r = await client.post(
        "/inbound/postmark",
        content=body,
        headers={**basic(), "Content-Type": "application/json"},
    )
    assert r.status_code in (200, 403), r.text
    if r.status_code == 200:
        (post,) = await inbox.posts()
        for attachment in post["attachments"]:
            assert_safe_filename(attachment["filename"])
            assert "\x00" not in attachment["content_type"]


MAILGUN_CASES: dict[str, dict[str, Any]] = {
    "NUL characters": {
        "body-plain": "a\x00b",
        "subject": "a\x00b",
        "message-headers": json.dumps([["Message-Id", "<a\u0000b@x>"], ["X", "\u0000"]]),
    },
    "a content-id-map that is not pairs": {"content-id-map": '[1, [], ["a"], null]'},
}


@pytest.mark.parametrize("case", sorted(MAILGUN_CASES))
async def test_hostile_mailgun_fields_are_never_a_server_error(
    case: str, client: httpx.AsyncClient, inbox: Inbox
) -> None:
    r = await client.post(
        "/inbound/mailgun", data=mailgun_form(inbox.address, **MAILGUN_CASES[case])
    )
    assert r.status_code == 200, r.text
    assert len(await inbox.posts()) == 1


@pytest.mark.parametrize("body", [b"", b"Content-Type: text/plain\r\n\r\nhello"])
async def test_a_nul_in_the_envelope_recipient_is_never_a_server_error(
    body: bytes, client: httpx.AsyncClient, inbox: Inbox
) -> None:
    r = await client.post(
        "/inbound/mime",
        params=[("recipient", "a\x00b@in.example.com"), ("recipient", inbox.address)],
        content=body,
        headers={**basic(), "Content-Type": "message/rfc822"},
    )
    assert r.status_code < 500, r.text


async def test_too_many_envelope_recipients_are_too_complex_not_a_server_error(
    client: httpx.AsyncClient, inbox: Inbox
) -> None:
    """100,000 envelope recipients answered 503 (a query with more parameters than the database
    takes), which an MTA retries for days; more than 500 are refused for good, and recorded."""
    others = ", ".join(f"user{i}@example.org" for i in range(100_000))
    raw = b"From: a@example.org\r\nSubject: many\r\n\r\nhello\r\n"
    r = await client.post(
        "/inbound/mime",
        content=raw,
        headers={**basic(), "Content-Type": "message/rfc822", "X-Envelope-To": f"{others}, "}
        | {"X-Envelope-From": "a@example.org"},
        params={"recipient": inbox.address},
    )
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == "message_too_complex"
    r = await client.post(
        "/inbound/mailgun",
        data={**mailgun_form(inbox.address), "recipient": f"{others}, {inbox.address}"},
    )
    assert r.status_code == 406, r.text
    assert r.json()["reason"] == "message_too_complex"
    assert await inbox.posts() == []
    deliveries = await inbox.deliveries()
    assert [d["reason"] for d in deliveries] == ["message_too_complex"] * 2
