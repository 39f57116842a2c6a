"""MIME header parameters (RFC 2045 and RFC 2231): the one reader for form parts' headers and
for the parts of a message.

Read as mail clients read them, not as strictly as the grammar says: a value runs to the next
``;`` outside quotes, so an unquoted value keeps its ``=`` (Outlook's
``boundary=----=_NextPart_000_…``), its spaces (``filename=This is a test.txt``) and an RFC 2047
encoded word (``filename==?utf-8?B?…?=``), all of which the stdlib's ``policy.default`` header
parser cuts short. Linear in the length of the value.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from app.inbound.charsets import decode_bytes

_QUOTED_PAIR = re.compile(r'\\([\\"])')
_CONTINUATION = re.compile(r"(?P<key>[^*]+)\*(?P<index>\d+)(?P<encoded>\*?)")

Params = list[tuple[str, str]]


def parse_params(value: str) -> tuple[str, Params]:
    """Split ``type; key=value; key="quoted"`` into the lower-cased first token and the
    parameters (lower-cased keys, unquoted values), in order. ``;`` inside quotes is kept."""
    segments: list[str] = []
    current: list[str] = []
    in_quotes = escaped = False
    for ch in value:
        if in_quotes:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == ";":
            segments.append("".join(current))
            current = []
            continue
        current.append(ch)
    segments.append("".join(current))
    params: Params = []
    for segment in segments[1:]:
        key, sep, val = segment.partition("=")
        if not sep:
            continue
        val = val.strip(" \t")
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = _QUOTED_PAIR.sub(r"\1", val[1:-1])
        params.append((key.strip(" \t").lower(), val))
    return segments[0].strip(" \t").lower(), params


def param(params: Params, key: str) -> str | None:
    """The first value of ``key``."""
    for k, v in params:
        if k == key:
            return v
    return None


def _octets(value: str) -> bytes:
    """A value's bytes: header text is latin-1 (one character a byte) in a form part's headers;
    a message's headers are already text, of which only the ASCII is meant here."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def rfc2231_value(params: Params, key: str) -> str | None:
    """The RFC 2231 extended parameter ``key*`` (or its ``key*0*``, ``key*1`` … continuations),
    decoded, or None when the header has none."""
    charset: str | None = None
    extended = param(params, key + "*")
    if extended is not None:
        pieces = [(0, True, extended)]
    else:
        found: dict[int, tuple[bool, str]] = {}
        for k, v in params:
            match = _CONTINUATION.fullmatch(k)
            if match and match["key"] == key:
                found.setdefault(int(match["index"]), (bool(match["encoded"]), v))
        pieces = []
        while len(pieces) in found:
            encoded, v = found[len(pieces)]
            pieces.append((len(pieces), encoded, v))
        if not pieces:
            return None
    raw = bytearray()
    for index, encoded, v in pieces:
        if not encoded:
            raw += _octets(v)
            continue
        if index == 0 and v.count("'") >= 2:
            charset, _language, v = v.split("'", 2)
        raw += unquote_to_bytes(_octets(v))
    return decode_bytes(bytes(raw), charset or "utf-8")
