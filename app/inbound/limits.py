"""Bounds on a raw message, checked on its bytes before any parser sees them.

The stdlib parser (``email.parser`` with ``policy.default``) recurses once per MIME level, makes
an object per part, and parses structured MIME headers in super-linear time; a hostile mail
could therefore exhaust the stack, memory or CPU. ``check_complexity`` walks the MIME structure
the way ``email.feedparser`` does, but with regex searches over the bytes instead of per-line
Python code, so that it finishes in linear time however the mail is built, and refuses it
(``MessageTooComplex``) as soon as a bound is passed.

The walk mirrors the stdlib where it matters for counting: line ends are ``\\r\\n``, ``\\r`` or
``\\n``; a header block ends at the first line that is not a header line; a delimiter line of
any enclosing multipart ends the current part (the outermost matching level takes it);
``message/*`` bodies are nested messages, ``message/delivery-status`` bodies are blocks of
headers, and the parts of a ``multipart/digest`` default to ``message/rfc822``. The Content-Type
values themselves are interpreted by the stdlib (bounded in size first), so that boundaries
match exactly. Where the walk cannot be exact it over-counts.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import lru_cache

from app.inbound.errors import MessageTooComplex

# A structured MIME header value (Content-Type, Content-Disposition, Content-Transfer-Encoding):
# the stdlib parses these during parsing and on every access, in time super-linear in their
# number of tokens (measured: a 16 KiB parameter list 1 s, nested comments a RecursionError).
MAX_PARAMETER_BYTES = 16 * 1024
MAX_PARAMETER_TOKENS = 128  # separators and specials in one value (";", "=", quotes, spaces...)
MAX_COMMENTS = 16  # "(" in one value: comments nest and are parsed recursively
PARAMETER_TOKENS_PER_PART = 16  # budget for all the values of a mail: this times max_parts
MAX_BOUNDARY_BYTES = 200  # RFC 2046 allows 70

_SPECIALS = b' \t\n;"=(),<>@:\\/[]?'
_STRUCTURED = frozenset({b"content-type", b"content-disposition", b"content-transfer-encoding"})
_RECIPIENT_HEADERS = frozenset({b"to", b"cc", b"bcc", b"resent-to", b"resent-cc", b"resent-bcc"})
# A line that does not continue a header block (email.feedparser.headerRE, negated).
_HEADER_END = re.compile(rb"\n(?![!-9;-~]*:|[ \t]|From )")
_VALUE = rb":([^\n]*(?:\n[ \t][^\n]*)*)"
_PART_FIELD = re.compile(
    rb"\n(content-type|content-disposition|content-transfer-encoding)" + _VALUE, re.IGNORECASE
)
_TOP_FIELD = re.compile(
    rb"\n(content-type|content-disposition|content-transfer-encoding|to|cc|bcc|resent-to"
    rb"|resent-cc|resent-bcc)" + _VALUE,
    re.IGNORECASE,
)


@lru_cache(maxsize=256)
def _delimiter_pattern(boundaries: frozenset[bytes]) -> re.Pattern[bytes]:
    """A line ``--boundary``, ``--boundary--``, then blanks, for any of the boundaries."""
    alternatives = b"|".join(re.escape(b) for b in sorted(boundaries, key=len, reverse=True))
    return re.compile(rb"\n--(?:" + alternatives + rb")(?:--)?[ \t]*(?=\n)")


@lru_cache(maxsize=256)
def _run_pattern(boundary: bytes, outer: frozenset[bytes]) -> re.Pattern[bytes]:
    """Consecutive delimiter lines of ``boundary`` that no enclosing boundary takes."""
    line = b"--" + re.escape(boundary) + rb"(?:--)?[ \t]*(?=\n)"
    guard = b""
    if outer:
        alternatives = b"|".join(re.escape(b) for b in sorted(outer, key=len, reverse=True))
        guard = rb"(?!--(?:" + alternatives + rb")(?:--)?[ \t]*\n)"
    return re.compile(rb"(?:\n" + guard + line + rb")+")


@dataclass
class _Delimiter:
    start: int  # the first byte of the delimiter line
    end: int  # the first byte of the next line
    level: int
    close: bool


@dataclass
class _Walk:
    data: bytes  # normalised: one "\n" per line end, and one before the first line
    crlf: bool
    max_depth: int
    max_parts: int
    max_header_bytes: int
    max_recipients: int
    token_budget: int
    parts: int = 0
    levels: list[bytes] = field(default_factory=list)  # the boundary of each open multipart
    active: dict[bytes, int] = field(default_factory=dict)  # boundary → outermost level

    # --- delimiters -----------------------------------------------------------------------------

    def pattern(self) -> re.Pattern[bytes] | None:
        return _delimiter_pattern(frozenset(self.active)) if self.active else None

    def resolve(self, match: re.Match[bytes]) -> _Delimiter:
        rest = match.group()[3:].rstrip(b" \t")
        candidates = []
        if rest in self.active:
            candidates.append((self.active[rest], False))
        if rest.endswith(b"--") and rest[:-2] in self.active:
            candidates.append((self.active[rest[:-2]], True))
        level, close = min(candidates)
        return _Delimiter(match.start() + 1, match.end() + 1, level, close)

    def next_delimiter(self, position: int, end: int | None = None) -> _Delimiter | None:
        """The first delimiter line of an open multipart at or after ``position``."""
        pattern = self.pattern()
        if pattern is None:
            return None
        match = pattern.search(self.data, position - 1, len(self.data) if end is None else end)
        return self.resolve(match) if match else None

    def delimiter_at(self, position: int) -> _Delimiter | None:
        pattern = self.pattern()
        match = pattern.match(self.data, position - 1) if pattern is not None else None
        return self.resolve(match) if match else None

    # --- header blocks --------------------------------------------------------------------------

    def header_block(self, position: int, *, top: bool) -> tuple[int, int, bytes | None]:
        """``(end of the header block, start of the body, Content-Type value)``."""
        data = self.data
        window = min(len(data), position + self.max_header_bytes + 1)
        delimiter = self.next_delimiter(position, window)
        stop = delimiter.start if delimiter else window
        match = _HEADER_END.search(data, position - 1, stop)
        end = match.start() + 1 if match else stop
        size = end - position + (data.count(b"\n", position, end) if self.crlf else 0)
        if size > self.max_header_bytes:
            raise MessageTooComplex(f"a header block is larger than {self.max_header_bytes} bytes")
        content_type = self.fields(position, end, top=top)
        at_delimiter = delimiter is not None and end == delimiter.start
        blank = not at_delimiter and end < len(data) and data[end : end + 1] == b"\n"
        return end, (end + 1 if blank else end), content_type

    def fields(self, start: int, end: int, *, top: bool) -> bytes | None:
        content_type: bytes | None = None
        recipients = 0
        pattern = _TOP_FIELD if top else _PART_FIELD
        for match in pattern.finditer(self.data, start - 1, end):
            name, value = match.group(1).lower(), match.group(2)
            if name in _STRUCTURED:
                self.check_parameters(name, value)
                if name == b"content-type" and content_type is None:
                    content_type = value
            elif top and name in _RECIPIENT_HEADERS:
                recipients += max(value.count(b"@"), value.count(b",") + value.count(b";") + 1)
                if recipients > self.max_recipients:
                    raise MessageTooComplex(f"more than {self.max_recipients} recipients")
        return content_type

    def check_parameters(self, name: bytes, value: bytes) -> None:
        label = name.decode("ascii").title()
        if len(value) > MAX_PARAMETER_BYTES:
            raise MessageTooComplex(f"a {label} value is longer than {MAX_PARAMETER_BYTES} bytes")
        tokens = len(value) - len(value.translate(None, _SPECIALS))
        if tokens > MAX_PARAMETER_TOKENS or value.count(b"(") > MAX_COMMENTS:
            raise MessageTooComplex(f"a {label} value has too many parameters or comments")
        self.token_budget -= max(tokens, 1)
        if self.token_budget < 0:
            raise MessageTooComplex("the MIME headers of the parts have too many parameters")

    # --- entities -------------------------------------------------------------------------------

    def count_part(self, depth: int) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise MessageTooComplex(f"more than {self.max_parts} MIME parts")
        if depth > self.max_depth:
            raise MessageTooComplex(f"MIME nesting deeper than {self.max_depth} levels")

    def entity(self, position: int, depth: int, default_type: str) -> int:
        """Walk one message or part; returns where it ends (a delimiter line, or the end)."""
        _, body, raw_type = self.header_block(position, top=depth == 0)
        content_type, boundary = _interpret(raw_type, default_type)
        if content_type == "message/delivery-status":
            return self.delivery_status(body, depth)
        if content_type.startswith("message/"):
            self.count_part(depth + 1)
            return self.entity(body, depth + 1, "text/plain")
        if content_type.startswith("multipart/") and boundary is not None:
            child_type = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
            return self.multipart(body, depth, boundary, child_type)
        delimiter = self.next_delimiter(body)
        return delimiter.start if delimiter else len(self.data)

    def multipart(self, position: int, depth: int, boundary: bytes, child_type: str) -> int:
        level = len(self.levels)
        self.levels.append(boundary)
        self.active.setdefault(boundary, level)
        try:
            delimiter = self.next_delimiter(position)
            while delimiter is not None and delimiter.level == level and not delimiter.close:
                # Repeated delimiter lines make no empty parts (as in email.feedparser).
                position = delimiter.end
                outer = frozenset(b for b, at in self.active.items() if at < level)
                run = _run_pattern(boundary, outer).match(self.data, position - 1)
                if run is not None:
                    position = run.end() + 1
                self.count_part(depth + 1)
                position = self.entity(position, depth + 1, child_type)
                delimiter = self.delimiter_at(position)
        finally:
            self.levels.pop()
            if self.active.get(boundary) == level:
                del self.active[boundary]
        if delimiter is None:
            return len(self.data)
        if delimiter.level < level:
            return delimiter.start
        # The close delimiter: the epilogue runs to a delimiter of an enclosing multipart.
        after = self.next_delimiter(delimiter.end)
        return after.start if after else len(self.data)

    def delivery_status(self, position: int, depth: int) -> int:
        """Blocks of headers separated by blank lines, each parsed as a message by the stdlib."""
        delimiter = self.next_delimiter(position)
        end = delimiter.start if delimiter else len(self.data)
        data = self.data
        while True:  # at least one block, even an empty one
            self.count_part(depth + 1)
            blank = data.find(b"\n\n", position - 1, end) if position < end else -1
            block_end = blank + 1 if blank >= 0 else end
            if block_end - position > self.max_header_bytes:
                raise MessageTooComplex(
                    f"a header block is larger than {self.max_header_bytes} bytes"
                )
            raw_type = self.fields(position, block_end, top=False)
            content_type, _ = _interpret(raw_type, "text/plain")
            if content_type.startswith(("message/", "multipart/")):
                # The stdlib makes at most a part and a nested message of it here.
                self.count_part(depth + 2)
                self.count_part(depth + 2)
            position = block_end + 1  # the blank line is consumed; a next line starts a block
            if position >= end:
                return end


@lru_cache(maxsize=256)  # values are at most MAX_PARAMETER_BYTES
def _interpret(raw: bytes | None, default_type: str) -> tuple[str, bytes | None]:
    """``(content type, boundary)`` exactly as the stdlib's parser reads the value."""
    if raw is None:
        return default_type, None
    message = EmailMessage(policy=email.policy.default)
    message.set_default_type(default_type)
    try:
        message.set_raw("Content-Type", raw.decode("ascii", "surrogateescape").lstrip(" \t"))
        content_type = message.get_content_type()
        if not content_type.startswith("multipart/"):
            return content_type, None
        boundary = message.get_boundary()
    except Exception:  # the parser will fail on it as well; count it as a leaf
        return "text/plain", None
    if boundary is None:
        return content_type, None
    try:
        encoded = boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # can never match a line of the raw message
        return content_type, None
    if b"\n" in encoded or b"\r" in encoded:
        return content_type, None
    if len(encoded) > MAX_BOUNDARY_BYTES:
        raise MessageTooComplex(f"a MIME boundary is longer than {MAX_BOUNDARY_BYTES} bytes")
    return content_type, encoded


def _normalise(raw: bytes) -> bytes:
    """One ``\\n`` per line end (as ``\\r\\n``, ``\\r`` and ``\\n`` all end lines), framed."""
    data = raw.replace(b"\r\n", b"\n") if b"\r" in raw else raw
    if b"\r" in data:
        data = data.replace(b"\r", b"\n")
    return b"\n" + data + (b"" if data.endswith(b"\n") else b"\n")


def check_complexity(
    raw: bytes,
    *,
    max_depth: int = 50,
    max_parts: int = 1000,
    max_header_bytes: int = 256 * 1024,
    max_recipients: int = 500,
) -> None:
    """Raise ``MessageTooComplex`` when the raw message passes a bound; linear in its size.

    Bounds: MIME nesting depth (the top-level message is level 0, each part or nested message
    one more), the number of parts and nested messages, the size of every header block (the
    message's and each part's), the number of addresses in To/Cc/Bcc and Resent-To/-Cc/-Bcc
    (counted conservatively: the larger of the ``@`` count and the separator count plus one,
    per header), and the size and token count of structured MIME header values.
    """
    raw = bytes(raw)
    walk = _Walk(
        data=_normalise(raw),
        crlf=b"\r\n" in raw,
        max_depth=max_depth,
        max_parts=max_parts,
        max_header_bytes=max_header_bytes,
        max_recipients=max_recipients,
        token_budget=PARAMETER_TOKENS_PER_PART * max(max_parts, 1) + MAX_PARAMETER_TOKENS,
    )
    try:
        walk.entity(1, 0, "text/plain")
    except RecursionError as exc:  # only with a max_depth near the interpreter's own limit
        raise MessageTooComplex(f"MIME nesting deeper than {max_depth} levels") from exc
