"""A raw RFC 5322 message (bytes) to the normalised ``InboundEmail``.

The structure is parsed by the stdlib (``BytesParser`` with ``policy.default``) after
``check_complexity`` has bounded it. Header *values* are not read through ``policy.default``'s
structured parsers, which are super-linear in the length of a value (measured: a 256 KiB To
header takes minutes) and raise on some malformed input: they are unfolded and RFC 2047-decoded
here in linear time. Only a short From value is given to the stdlib's address parser.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.policy
import hashlib
import io
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.generator import BytesGenerator, Generator
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from typing import cast

from app.inbound.charsets import decode_bytes
from app.inbound.errors import MalformedMessage, MessageTooComplex
from app.inbound.limits import check_complexity
from app.inbound.model import InboundAttachment, InboundEmail, OmittedPart
from app.inbound.names import plain_text, safe_filename
from app.inbound.normalise import MAX_NAME_CHARS, MAX_SUBJECT_CHARS, normalise
from app.inbound.params import Params, param, parse_params, rfc2231_value

MAX_PARSED_FROM_CHARS = 2048  # longer From values are read by a linear fallback
FORWARDED_NAME = "forwarded-message.eml"
EXTERNAL_BODY_NAME = "external-body"

_MIME_TYPES = mimetypes.MimeTypes()  # the stdlib's table only: the same names on every host
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_FOLD = re.compile(r"\r?\n|\r")
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_SPACE_ONLY = re.compile(r"[ \t]*")
_ANGLE_ADDRESS = re.compile(r"<\s*([^<>\s@]+@[^<>\s@]+?)\s*>")
_BARE_ADDRESS = re.compile(r"[^\s<>(),;:\"\[\]@]+@[^\s<>(),;:\"\[\]@]+")


def _undo_surrogates(value: str) -> str:
    """Raw 8-bit header bytes (kept by the parser as surrogates) read as UTF-8 (RFC 6532)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def _decode_word(encoding: str, text: str) -> bytes | None:
    try:
        if encoding in "bB":
            return base64.b64decode(text + "=" * (-len(text) % 4))
        return binascii.a2b_qp(text.encode("ascii"), header=True)
    except (binascii.Error, ValueError):
        return None


def decode_header(value: str) -> str:
    """A raw header value unfolded and RFC 2047-decoded, in linear time.

    Encoded words separated only by white space are joined (their bytes too, when they share a
    charset, so that a character split across two words survives); undecodable words stay as
    they are.
    """
    value = _undo_surrogates(_FOLD.sub("", value))
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    after_word = False
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        data = _decode_word(match.group(2), match.group(3))
        if data is None:
            continue  # left as it is: it becomes part of the next gap
        charset = match.group(1).lower()
        gap = value[position : match.start()]
        adjacent = after_word and _SPACE_ONLY.fullmatch(gap) is not None
        if pending and not (adjacent and charset == pending_charset):
            out.append(decode_bytes(b"".join(pending), pending_charset))
            pending = []
        if not adjacent:
            out.append(gap)
        pending.append(data)
        pending_charset = charset
        after_word = True
        position = match.end()
    if pending:
        out.append(decode_bytes(b"".join(pending), pending_charset))
    out.append(value[position:])
    return "".join(out)


# --- headers ------------------------------------------------------------------------------------


def _headers(message: Message) -> tuple[tuple[str, str], ...]:
    """Every header, in order, as ``(lower-case name, decoded value)``; NUL characters (which
    no database text column takes) removed."""
    return tuple(
        (
            _undo_surrogates(str(name)).strip().lower().replace("\x00", ""),
            decode_header(str(value)).replace("\x00", ""),
        )
        for name, value in message.raw_items()
    )


def header_items(block: str) -> tuple[tuple[str, str], ...]:
    """The headers of a header block given as text (SendGrid's ``headers`` field), read like a
    message's (``decode_header``); ``()`` when it cannot be read."""
    try:
        return _headers(HeaderParser(policy=_PARSE_POLICY).parsestr(block, headersonly=True))
    except Exception:  # the stdlib parser's assorted failures on hostile input
        return ()


def _first(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    return next((value for key, value in headers if key == name), None)


def _raw_header(part: Message, name: str) -> str | None:
    """The first ``name`` header of the part, unfolded but not decoded."""
    for key, value in part.raw_items():
        if str(key).strip().lower() == name:
            return _undo_surrogates(_FOLD.sub("", str(value)))
    return None


def _address(spec: str) -> str | None:
    local, at, domain = spec.strip().rpartition("@")
    if not at or not local or not domain or plain_text(spec) != spec.strip():
        return None
    return f"{local}@{domain.lower()}"


def _parse_from_stdlib(value: str) -> tuple[str, str | None] | None:
    try:
        header = email.policy.default.header_factory("from", value)
        addresses = getattr(header, "addresses", ())
        if not addresses:
            return None
        first = addresses[0]
        spec = _address(str(first.addr_spec))
        name = plain_text(str(first.display_name or ""), MAX_NAME_CHARS) or None
    except Exception:  # the stdlib's address parser raises on assorted hostile input
        return None
    return (spec, name) if spec is not None else None


# "Name <local@domain>" or a bare "local@domain" in plain ASCII atoms (most From lines): read
# directly, with the result the stdlib's parser gives for them (tests/inbound/test_message.py).
_ATOM_ADDRESS = r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE_FROM = re.compile(
    rf"[ \t]*(?:(?P<name>[A-Za-z0-9]+(?: [A-Za-z0-9]+)*)[ \t]*)?<(?P<angle>{_ATOM_ADDRESS})>[ \t]*"
    rf"|[ \t]*(?P<bare>{_ATOM_ADDRESS})[ \t]*"
)


def parse_from(value: str | None) -> tuple[str | None, str | None]:
    """``(addr-spec, display name)`` of a raw From value (RFC 2047 words still encoded).

    ``(None, None)`` when it cannot be read; never an exception. A value longer than
    MAX_PARSED_FROM_CHARS, or one the stdlib's parser rejects, is read by a linear fallback.
    """
    if not value or not value.strip():
        return None, None
    simple = _SIMPLE_FROM.fullmatch(value) if len(value) <= MAX_PARSED_FROM_CHARS else None
    if simple is not None:
        spec = _address(simple["angle"] or simple["bare"])
        if spec is not None:
            return spec, plain_text(simple["name"] or "", MAX_NAME_CHARS) or None
    if len(value) <= MAX_PARSED_FROM_CHARS:
        parsed = _parse_from_stdlib(value)
        if parsed is not None:
            return parsed
    # Linear fallback: "Name <user@domain>" or a bare addr-spec.
    angle = _ANGLE_ADDRESS.search(value)
    if angle is not None:
        spec = _address(angle.group(1))
        name = decode_header(value[: angle.start()]).strip().strip('"')
        return spec, (plain_text(name, MAX_NAME_CHARS) or None) if spec else None
    bare = _BARE_ADDRESS.search(value)
    return (_address(bare.group()) if bare else None), None


# --- parts --------------------------------------------------------------------------------------


def _header(part: Message, name: str) -> object | None:
    """The parsed header (``policy.default``), or None when absent or unparsable."""
    try:
        return part.get(name)
    except Exception:  # the header parser raises on some malformed values
        return None


def _raw_params(part: Message, name: str) -> tuple[str, Params]:
    """The first token and the parameters of a part's header, read by app.inbound.params (the
    stdlib's parser cuts unquoted values at ``=`` or a space)."""
    raw = _raw_header(part, name)
    return parse_params(raw) if raw is not None else ("", [])


def _name(params: Params, key: str) -> str | None:
    """A file name parameter: RFC 2231 (``filename*=``), else the plain value, whose RFC 2047
    encoded words (which many clients send, quoted or not) are decoded."""
    value = rfc2231_value(params, key)
    if value is None:
        plain = param(params, key)
        value = decode_header(plain) if plain is not None else None
    return plain_text(value) or None if value is not None else None


class _Part(EmailMessage):
    """A message part whose multipart boundary is read by app.inbound.params: the stdlib's
    ``policy.default`` cuts Outlook's unquoted ``boundary=----=_NextPart_…`` at the ``=`` and
    then finds no parts at all."""

    def get_boundary(self, failobj: object = None) -> object:  # type: ignore[override]
        params = _raw_params(self, "content-type")[1]
        value = rfc2231_value(params, "boundary") or param(params, "boundary")
        return value.rstrip() if value else failobj


_PARSE_POLICY = email.policy.default.clone(message_factory=_Part)


@dataclass(frozen=True)
class _PartInfo:
    """What is read of a part's MIME headers (each parsed once: the parser is slow)."""

    content_type: str
    disposition: str | None
    filename: str | None
    charset: str | None
    content_id: str | None


def _content_type_of(part: Message, header: object | None) -> str:
    if header is None:
        try:
            value = part.get_default_type()
        except Exception:
            value = "text/plain"
    else:
        value = str(getattr(header, "content_type", "") or "text/plain").lower()
    return value if _CONTENT_TYPE.fullmatch(value) else "application/octet-stream"


def _info(part: Message) -> _PartInfo:
    _, type_params = _raw_params(part, "content-type")
    disposition, disposition_params = _raw_params(part, "content-disposition")
    content_id = _raw_header(part, "content-id")
    return _PartInfo(
        content_type=_content_type_of(part, _header(part, "content-type")),
        disposition=disposition or None,
        filename=_name(disposition_params, "filename") or _name(type_params, "name"),
        charset=param(type_params, "charset"),
        content_id=(plain_text(decode_header(content_id), MAX_SUBJECT_CHARS).strip("<> ") or None)
        if content_id
        else None,
    )


def _content_type(part: Message) -> str:
    return _content_type_of(part, _header(part, "content-type"))


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    return data if isinstance(data, bytes) else b""


_GENERATOR_POLICY = email.policy.default.clone(refold_source="none", linesep="\r\n")


def _nested(part: Message) -> list[Message]:
    """The messages inside a ``message/*`` part (get_payload() only for those: on a leaf it
    decodes with the declared charset, which may be anything)."""
    if not part.is_multipart():
        return []
    payload = part.get_payload()
    return [inner for inner in payload if isinstance(inner, Message)]


def _flatten(inner: Message) -> bytes:
    buffer = io.BytesIO()
    try:
        BytesGenerator(buffer, mangle_from_=False, policy=_GENERATOR_POLICY).flatten(
            cast(EmailMessage, inner)
        )
    except UnicodeError:  # a decoded boundary that is not ASCII: write it as text instead
        text = io.StringIO()
        Generator(text, mangle_from_=False, policy=_GENERATOR_POLICY).flatten(
            cast(EmailMessage, inner)
        )
        return text.getvalue().encode("utf-8", "surrogateescape")
    return buffer.getvalue()


def _message_bytes(part: Message) -> bytes:
    """The body of a ``message/*`` part: its nested message(s), as received (not refolded)."""
    if not part.is_multipart():
        return _payload(part)
    # One message; or the header blocks of a message/delivery-status.
    return b"".join(_flatten(inner) for inner in _nested(part))


def _nested_subject(part: Message) -> str | None:
    messages = _nested(part)
    inner = messages[0] if messages else None
    if not isinstance(inner, Message):
        return None
    subject = _raw_header(inner, "subject")
    return plain_text(decode_header(subject), 200) if subject else None


_ENRICHED_TOKEN = re.compile(r"<<|<(/?)([A-Za-z0-9-]{1,60})>|\n+")


def enriched_to_text(text: str) -> str:
    """``text/enriched`` (RFC 1896) as plain text: formatting commands and their ``<param>``
    values removed, ``<<`` read as ``<``, a lone line break as a space and n breaks as n - 1
    (as written inside ``<nofill>``). Linear in the length."""
    out: list[str] = []
    position = in_param = nofill = 0
    for match in _ENRICHED_TOKEN.finditer(text):
        found = match.group()
        if not in_param:
            out.append(text[position : match.start()])
        position = match.end()
        if found == "<<":
            out.append("" if in_param else "<")
        elif found[0] == "\n":
            if not in_param:
                out.append(found if nofill else " " if len(found) == 1 else found[1:])
        else:
            step = -1 if match.group(1) else 1
            command = match.group(2).lower()
            if command == "param":
                in_param = max(0, in_param + step)
            elif command == "nofill":
                nofill = max(0, nofill + step)
    if not in_param:
        out.append(text[position:])
    return "".join(out)


@dataclass
class _Leaf:
    part: Message
    info: _PartInfo
    in_alternative: bool
    cut: bool  # the last part of a multipart whose closing boundary never came


def _unclosed(part: Message) -> bool:
    return any(isinstance(d, email.errors.CloseBoundaryNotFoundDefect) for d in part.defects)


def _leaves(root: Message) -> Iterator[_Leaf]:
    """Leaf parts in document order; a nested message (``message/*``) is one leaf."""
    stack: list[tuple[Message, bool, bool]] = [(root, False, False)]
    while stack:
        part, in_alternative, cut = stack.pop()
        info = _info(part)
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list) and not info.content_type.startswith("message/"):
            alternative = in_alternative or info.content_type == "multipart/alternative"
            children = [child for child in payload if isinstance(child, Message)]
            last = len(children) - 1 if _unclosed(part) else -1
            stack.extend(
                (child, alternative, index == last)
                for index, child in reversed(list(enumerate(children)))
            )
            continue
        # A forwarded message (or a report) is one leaf: its parts are not walked into.
        yield _Leaf(part, info, in_alternative, cut)


@dataclass
class _Collected:
    text: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[InboundAttachment] = field(default_factory=list)
    omitted: list[OmittedPart] = field(default_factory=list)


def _attachment(leaf: _Leaf, index: int, max_attachment_bytes: int) -> InboundAttachment:
    part, info = leaf.part, leaf.info
    name = info.filename
    if info.content_type in {"message/rfc822", "message/global"}:
        data = _message_bytes(part)
        fallback = FORWARDED_NAME
        if name is None:
            subject = _nested_subject(part)
            if subject:
                name = subject.replace("/", "-").replace("\\", "-") + ".eml"
    elif info.content_type.startswith("message/"):
        data = _message_bytes(part)
        fallback = f"attachment-{index}.txt"
    else:
        data = _payload(part)
        extension = _MIME_TYPES.guess_extension(info.content_type) or ".bin"
        fallback = f"attachment-{index}{extension}"
    too_large = len(data) > max_attachment_bytes
    return InboundAttachment(
        filename=safe_filename(name, fallback),
        content_type=info.content_type,
        size=len(data),
        sha256=None if too_large else hashlib.sha256(data).hexdigest(),
        content_id=info.content_id,
        inline=info.content_id is not None and info.disposition != "attachment",
        data=None if too_large else data,
        kept=not too_large,
    )


_TEXT_BODIES = frozenset({"text/plain", "text/enriched"})
_NAMED_BODIES = frozenset({"text/plain", "text/html"})


def _body_kind(leaf: _Leaf) -> str | None:
    """``"text"`` or ``"html"`` for a part that mail clients show as the body, else None.

    A ``multipart/*`` leaf is one whose parts could not be found (no boundary, or boundary
    lines that never appear): clients show its body as text, and so does the service.
    """
    info = leaf.info
    if info.disposition == "attachment":
        return None
    if info.content_type.startswith("multipart/"):
        return "text"
    if info.filename is not None:
        return None
    if info.content_type in _TEXT_BODIES:
        return "text"
    return "html" if info.content_type == "text/html" else None


def _named_body(leaves: list[_Leaf]) -> _Leaf | None:
    """With no other body, the first inline text part that carries a file name is the body (as
    the stdlib's ``get_body()`` has it), not an attachment."""
    if any(_body_kind(leaf) for leaf in leaves):
        return None
    return next(
        (
            leaf
            for leaf in leaves
            if leaf.info.content_type in _NAMED_BODIES and leaf.info.disposition != "attachment"
        ),
        None,
    )


def _body_text(leaf: _Leaf) -> str:
    text = decode_bytes(_payload(leaf.part), leaf.info.charset).replace("\x00", "")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return enriched_to_text(text) if leaf.info.content_type == "text/enriched" else text


def _external_body(leaf: _Leaf) -> OmittedPart:
    """A ``message/external-body`` part only points to a file (RFC 2046 §5.2.3): it is listed
    as omitted, with the name and size it declares, and never fetched."""
    _, params = _raw_params(leaf.part, "content-type")
    url = param(params, "url") or ""
    name = leaf.info.filename or url.rstrip("/").rsplit("/", 1)[-1] or None
    size = (param(params, "size") or "").strip()
    return OmittedPart(
        filename=safe_filename(name, EXTERNAL_BODY_NAME),
        size=int(size) if size.isascii() and size.isdigit() and len(size) < 19 else None,
        reason="external_body",
    )


def _junk(leaf: _Leaf) -> bool:
    """The unnamed last part of a multipart that ends before its closing boundary: the remnant
    of a truncated mail (most often a few bytes, or none), not a file the sender named. A named
    part, or one the HTML shows (Content-ID), is kept even when cut short."""
    return leaf.cut and leaf.info.filename is None and leaf.info.content_id is None


def _collect(root: Message, max_attachment_bytes: int) -> _Collected:
    collected = _Collected()
    leaves = list(_leaves(root))
    named_body = _named_body(leaves)
    for leaf in leaves:
        kind = _body_kind(leaf)
        if kind is None and leaf is named_body:
            kind = "html" if leaf.info.content_type == "text/html" else "text"
        if kind is not None:
            bodies = collected.text if kind == "text" else collected.html
            # The first one is the body; further ones outside an alternative continue it
            # (clients split a body around inline images); in an alternative they repeat it.
            if not bodies or not leaf.in_alternative:
                bodies.append(_body_text(leaf))
        elif leaf.info.content_type == "message/external-body":
            collected.omitted.append(_external_body(leaf))
        elif not _junk(leaf):
            index = len(collected.attachments) + 1
            collected.attachments.append(_attachment(leaf, index, max_attachment_bytes))
    return collected


# --- the message --------------------------------------------------------------------------------


def _build(
    message: Message,
    raw: bytes,
    *,
    provider: str,
    recipients: tuple[str, ...],
    envelope_from: str | None,
    max_attachment_bytes: int,
    spf: str | None,
    dkim: str | None,
    event_id: str | None,
) -> InboundEmail:
    headers = _headers(message)
    from_address, from_name = parse_from(_raw_header(message, "from"))
    collected = _collect(message, max_attachment_bytes)
    return normalise(
        provider=provider,
        recipients=recipients,
        envelope_from=envelope_from,
        from_address=from_address,
        from_name=from_name,
        subject=_first(headers, "subject"),
        text="\n".join(collected.text) if collected.text else None,
        html="".join(collected.html) if collected.html else None,
        message_id_header=_first(headers, "message-id"),
        headers=headers,
        attachments=collected.attachments,
        omitted=collected.omitted,
        content_type_header=_content_type(message),
        size_bytes=len(raw),
        spf=spf,
        dkim=dkim,
        event_id=event_id,
    )


def parse_mime(
    raw: bytes,
    *,
    provider: str,
    recipients: tuple[str, ...],
    envelope_from: str | None,
    max_attachment_bytes: int,
    spf: str | None = None,
    dkim: str | None = None,
    event_id: str | None = None,
) -> InboundEmail:
    """Parse a raw message; ``MessageTooComplex`` or ``MalformedMessage`` when it cannot be.

    The mail is built by ``app.inbound.normalise.normalise`` (``envelope_from`` may be its
    ``MISSING``: the payload gave no envelope sender at all).

    The bounds of ``check_complexity`` are checked first, on the bytes. The parser is lenient:
    most garbage still yields a message (without From, subject or body, perhaps).
    """
    raw = bytes(raw)
    check_complexity(raw)
    try:
        message = BytesParser(policy=_PARSE_POLICY).parsebytes(raw)
        return _build(
            message,
            raw,
            provider=provider,
            recipients=recipients,
            envelope_from=envelope_from,
            max_attachment_bytes=max_attachment_bytes,
            spf=spf,
            dkim=dkim,
            event_id=event_id,
        )
    except (MalformedMessage, MessageTooComplex):
        raise
    except RecursionError as exc:
        raise MessageTooComplex("the message is nested too deeply to parse") from exc
    except Exception as exc:  # the stdlib parser's assorted failures on hostile input
        raise MalformedMessage(f"unreadable MIME message ({type(exc).__name__})") from exc
