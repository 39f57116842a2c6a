"""``Authentication-Results`` (RFC 8601): the verdicts of the hosts the operator trusts.

Pure and tolerant: comments, quoted strings, a version after the authserv-id, ``none``, and
``method/version`` are read; anything unreadable is skipped, never raised. Every header is read in
time linear in its length, and no more than ``MAX_HEADER_CHARS`` of it are read.

Which headers count (docs/decisions.md, "Trust only what the provider added"):

- only those whose authserv-id is one of the trusted ids (the operator's own MTA, which removes
  or renames any such header arriving from outside, as RFC 8601 §5 requires of it);
- read from the top, and only down to the first ``Authentication-Results`` of another
  authserv-id: that one was added by another administrative domain before the mail reached
  the trusted host, so a trusted-looking header below it was written outside too;
- per method, the topmost result wins (for DKIM, the topmost per signing domain).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

HEADER = "authentication-results"
MAX_HEADER_CHARS = 8192
"""Longest part of one header that is read; the result cut by the bound is dropped."""
MAX_RESULTS = 64
"""Most results read from one header."""
MAX_HEADERS = 32
"""Most trusted headers read from one message."""

_JOINERS = "=./"
"""Characters around which RFC 8601 allows white space (``dkim = pass``, ``header . d``)."""


@dataclass(frozen=True)
class Result:
    """One ``method=result`` with its properties (``header.d``, ``smtp.mailfrom`` …)."""

    method: str  # lower-case, without a version ("dkim", "spf", "dmarc")
    result: str  # lower-case ("pass", "fail", "none" …)
    properties: dict[str, str] = field(default_factory=dict)  # lower-case "ptype.property"


@dataclass(frozen=True)
class AuthResults:
    authserv_id: str  # lower-case, without a trailing dot
    version: int | None
    results: tuple[Result, ...]


@dataclass(frozen=True)
class Verdicts:
    """What the trusted headers say, in the forms ``InboundEmail`` keeps."""

    spf: str | None = None  # the result for the envelope sender, e.g. "pass"
    dkim: str | None = None  # "{@example.org : pass}, {@other.example : fail}"
    dmarc: str | None = None  # "{@example.org : pass}" (the header.from domain)


def normalise_id(value: str) -> str:
    """An authserv-id as compared: lower-case, unquoted, without a trailing dot."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value.strip().rstrip(".").lower()


def _strip_comments(value: str) -> str:
    """``value`` with every (nested, escaped) comment replaced by a space; quoted strings kept.

    One pass over the characters: linear whatever the nesting."""
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\" and (depth or quoted):
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if depth:
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    out.append(" ")
            continue
        if quoted:
            quoted = char != '"'
            out.append(char)
            continue
        if char == '"':
            quoted = True
        elif char == "(":
            depth = 1
            continue
        out.append(char)
    return "".join(out)


def _split_semicolons(value: str) -> list[str]:
    """Split on ``;`` outside quoted strings (comments are already gone)."""
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            parts.append(value[start:index])
            start = index + 1
    parts.append(value[start:])
    return parts


def _words(text: str, *, join: bool = True) -> list[str]:
    """The white-space separated words of ``text`` (quoted strings kept whole); ``join``: words
    joined across white space around ``=``, ``.`` and ``/``. Linear in the length."""
    words: list[list[str]] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if quoted:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            continue
        if char.isspace():
            if current:
                words.append(current)
                current = []
            continue
        if char == '"':
            quoted = True
        current.append(char)
    if current:
        words.append(current)
    if not join:
        return ["".join(word) for word in words]
    joined: list[list[str]] = []
    for word in words:
        if joined and (joined[-1][-1] in _JOINERS or word[0] in _JOINERS):
            joined[-1].extend(word)
        else:
            joined.append(word)
    return ["".join(word) for word in joined]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _result(text: str) -> Result | None:
    pairs = [word.partition("=") for word in _words(text)]
    if not pairs or not pairs[0][1]:
        return None
    method, _, verdict = pairs[0]
    method = method.split("/", 1)[0].strip().lower()
    verdict = _unquote(verdict).strip().lower()
    if not method or not verdict or "." in method:
        return None
    properties: dict[str, str] = {}
    for name, sep, value in pairs[1:]:
        name = name.lower()
        if sep and "." in name:  # "reason" and unknown bare keys carry no identity: skipped
            properties.setdefault(name, _unquote(value).strip())
    return Result(method=method, result=verdict, properties=properties)


def parse(value: str) -> AuthResults | None:
    """One header's value; None when it has no readable authserv-id. Never raises."""
    cut = len(value) > MAX_HEADER_CHARS
    text = _strip_comments(value[:MAX_HEADER_CHARS])
    segments = _split_semicolons(text)
    if cut and len(segments) > 1:
        segments.pop()  # the result the bound cut through is not read at all
    head = _words(segments[0], join=False)  # "mx.example.com. 1": an id and a version
    authserv_id = normalise_id(head[0]) if head else ""
    if not authserv_id:
        return None
    version = (
        int(head[1])
        if len(head) > 1 and head[1].isascii() and head[1].isdigit() and len(head[1]) < 6
        else None
    )
    results: list[Result] = []
    for segment in segments[1 : MAX_RESULTS + 1]:
        if segment.strip().lower() == "none":
            continue
        result = _result(segment)
        if result is not None:
            results.append(result)
    return AuthResults(authserv_id=authserv_id, version=version, results=tuple(results))


def trusted(headers: Iterable[tuple[str, str]], trusted_ids: Collection[str]) -> list[AuthResults]:
    """The trusted ``Authentication-Results`` of a message's headers (lower-case names, in
    order), topmost first, down to the first one of another authserv-id."""
    ids = {normalise_id(i) for i in trusted_ids}
    found: list[AuthResults] = []
    if not ids:
        return found
    for name, value in headers:
        if name != HEADER:
            continue
        parsed = parse(value)
        if parsed is None or parsed.authserv_id not in ids:
            break  # another domain's verdict (or none readable): what follows came from outside
        found.append(parsed)
        if len(found) >= MAX_HEADERS:
            break
    return found


def _domain(value: str | None) -> str | None:
    """The domain of an address, ``@domain`` or bare domain property value."""
    if not value:
        return None
    domain = value.strip().strip("<>").rsplit("@", 1)[-1].strip().rstrip(".").lower()
    return domain or None


def _entries(verdicts: list[tuple[str | None, str]]) -> str | None:
    if not verdicts:
        return None
    return ", ".join(f"{{@{d} : {r}}}" if d else r for d, r in verdicts)


def verdicts(
    headers: Iterable[tuple[str, str]], trusted_ids: Collection[str], envelope_from: str | None
) -> Verdicts:
    """SPF, DKIM and DMARC from the trusted headers.

    SPF counts only when it was checked for the envelope sender: its ``smtp.mailfrom`` must name
    the envelope sender's domain (a HELO check, or a check of another identity, is not read).
    DKIM and DMARC name their domain (``header.d`` or ``header.i``; ``header.from``)."""
    spf: str | None = None
    dkim: list[tuple[str | None, str]] = []
    dkim_seen: set[str | None] = set()
    dmarc: str | None = None
    envelope_domain = _domain(envelope_from)
    for header in trusted(headers, trusted_ids):
        for result in header.results:
            if result.method == "spf" and spf is None:
                mailfrom = result.properties.get("smtp.mailfrom")
                if envelope_domain and _domain(mailfrom) == envelope_domain:
                    spf = result.result
            elif result.method == "dkim":
                domain = _domain(
                    result.properties.get("header.d") or result.properties.get("header.i")
                )
                if domain not in dkim_seen:
                    dkim_seen.add(domain)
                    dkim.append((domain, result.result))
            elif result.method == "dmarc" and dmarc is None:
                dmarc = _entries([(_domain(result.properties.get("header.from")), result.result)])
    return Verdicts(spf=spf, dkim=_entries(dkim), dmarc=dmarc)
