"""Streaming reader for webhook request bodies, replacing Starlette's ``request.form()``.

Starlette's form parser caps every plain field at 1 MiB and decodes fields with a silent
latin-1 fallback (``research/providers.md`` 10.1, 10.2); both would lose legitimate mail.
:func:`read_form` parses ``multipart/form-data`` and ``application/x-www-form-urlencoded``
bodies incrementally with python-multipart's low-level parsers and keeps every value as bytes:

* parts with a filename are written, as they arrive, to files in a fresh per-request directory
  under ``spool_root/"tmp"``; plain fields stay in memory up to ``memory_threshold`` and are
  spilled to a file after that;
* a value that passes its cap (``max_file`` / ``max_field``) is dropped (its file deleted) but its
  size is still counted, and the rest of the body is still read, so that the request can be
  authenticated and answered;
* the whole body passing ``max_total`` stops the read at once with :class:`PayloadTooLarge`;
* :class:`FormLimits` bound what a body can make the reader keep or do, whoever sent it: the
  number of parts, the length of a field name, the plain values held in memory (past that they
  are spooled like large ones), and, while a :class:`FieldGate` has not yet authenticated the
  request, the bytes of everything but file contents. Passing a bound stops the read at once
  with :class:`FormTooComplex`;
* disk writes (and hashing of spooled values) run in a worker thread, one hop per batch of at
  least 1 MiB or at the end of a part, never once per network chunk.

Files are flushed and closed at the end of their part but not fsynced: the blob store writes the
final copy. The caller owns the returned :class:`Form` and must call :meth:`Form.cleanup`;
:func:`sweep_spool` removes what a crashed process left behind.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import anyio.to_thread
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError

from app.blobs.store import LocalBlobStore
from app.inbound.charsets import decode_bytes
from app.inbound.errors import FormTooComplex, MalformedBody, PayloadTooLarge
from app.inbound.params import param, parse_params, rfc2231_value

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = [
    "FieldGate",
    "Form",
    "FormLimits",
    "FormPart",
    "FormTooComplex",
    "MalformedBody",
    "PayloadTooLarge",
    "read_form",
    "spool_body",
    "sweep_spool",
]

_MiB = 1024 * 1024
_BATCH = _MiB
"""Bytes buffered for one value before they are written out in one worker-thread hop."""
_FEED = _MiB
"""Network chunks larger than this are fed to the parser in slices of this size."""
_MAX_PART_HEADERS = 16
_MAX_PART_HEADER_SIZE = 16 * 1024

_FORM_DATA = "multipart/form-data"
_URLENCODED = "application/x-www-form-urlencoded"

_Op = Callable[[], None]


MAX_FORM_PARTS = 2000
"""Parts (fields and files) of one form. Mailgun sends a few dozen fields, one per header of the
mail and one per attachment; a mail has at most 1,000 MIME parts (app.inbound.limits). Each
part costs the reader a Python object and some work: 4 million empty fields once took a worker
to 3.5 GB."""
MAX_FIELD_NAME_BYTES = 1024
"""Longest field name: the providers' names are header names (a line is at most 998 bytes)."""
FORM_MEMORY_BYTES = 8 * _MiB
"""Bytes of plain values one form holds in memory; past them, values are spooled to disk."""
MAX_UNAUTHENTICATED_BYTES = 8 * _MiB
"""Body bytes, file contents aside, read before a :class:`FieldGate` has authenticated the
request. Mailgun posts its signature fields near the end of the form, after every other plain
field: the mail's text and HTML twice each (``body-*`` and ``stripped-*``) and its headers twice
(as fields and in ``message-headers``). A newsletter of a few hundred KB of HTML makes 1 to
2 MB of them; 8 MiB leaves room for an HTML body of about 3.5 MiB."""


@dataclass(frozen=True)
class FormLimits:
    """What one form may make the reader keep or do: by default the module constants, read when
    a form is read (so that a test or an operator's patch can change them)."""

    max_parts: int = field(default_factory=lambda: MAX_FORM_PARTS)
    max_name_bytes: int = field(default_factory=lambda: MAX_FIELD_NAME_BYTES)
    memory_bytes: int = field(default_factory=lambda: FORM_MEMORY_BYTES)
    max_unauthenticated_bytes: int = field(default_factory=lambda: MAX_UNAUTHENTICATED_BYTES)


class FieldGate(Protocol):
    """Authenticates a request from fields of its own body (Mailgun's signature).

    ``field`` is called with every plain field once its value is complete: at once for a value
    held in memory (``data``), after its file is written for a large one (``path``), so not
    always in body order. It raises to stop the read. Until ``authenticated`` is
    true, the body bytes other than file contents and ``content_fields`` are bounded by
    ``FormLimits.max_unauthenticated_bytes``.
    """

    @property
    def authenticated(self) -> bool: ...

    @property
    def content_fields(self) -> frozenset[str]:
        """Plain fields that carry the mail itself (Mailgun's ``body-mime``): counted as files."""
        ...

    def field(self, part: FormPart) -> None: ...


@dataclass
class FormPart:
    """One field or file of a form. Its value is in ``data`` (small, in memory) or ``path``."""

    name: str  # field name (decoded as UTF-8 with errors="replace")
    filename: str | None  # filename as sent, not sanitised (None for plain fields)
    content_type: str | None  # the part's Content-Type header value (None for urlencoded)
    charset: str | None  # charset parameter of the part's Content-Type, if any
    size: int = 0  # total bytes of this part's value, counted even past the cap
    data: bytes | None = None  # the value, when small and held in memory
    path: Path | None = None  # the value spooled to a temporary file (inside the spool dir)
    sha256: str | None = None  # hex digest of the value, when kept (not truncated)
    truncated: bool = False  # the value passed its cap: data and path are None

    def read(self) -> bytes:
        """The value's bytes (reads the spooled file: meant for small values and tests).

        Raises ValueError for a truncated part, whose value was not kept.
        """
        if self.truncated:
            raise ValueError(f"form part {self.name!r} passed its size limit and was not kept")
        if self.data is not None:
            return self.data
        if self.path is not None:
            return self.path.read_bytes()
        return b""


@dataclass
class Form:
    """The parts of one request, in body order, and the directory holding their files."""

    parts: list[FormPart]
    spool_dir: Path  # a temporary directory holding this request's files

    def get(self, name: str) -> FormPart | None:
        """The first part named ``name``."""
        for part in self.parts:
            if part.name == name:
                return part
        return None

    def getall(self, name: str) -> list[FormPart]:
        return [part for part in self.parts if part.name == name]

    def text(self, name: str, charset: str | None = "utf-8") -> str | None:
        """The first part named ``name`` decoded with ``charset`` (None: the part's own charset,
        else UTF-8); an unknown charset or invalid bytes degrade to UTF-8 with replacement
        characters. None when there is no such part; ValueError when it was truncated."""
        part = self.get(name)
        if part is None:
            return None
        return decode_bytes(part.read(), part.charset if charset is None else charset)

    def field_bytes(self) -> int:
        """Bytes of the plain fields' values (not files)."""
        return sum(part.size for part in self.parts if part.filename is None)

    def files(self) -> list[FormPart]:
        """The parts that carry a filename (attachments), in body order."""
        return [part for part in self.parts if part.filename is not None]

    def remove_if_empty(self) -> bool:
        """Remove ``spool_dir`` if nothing is left in it (one system call): whether it is gone."""
        try:
            os.rmdir(self.spool_dir)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    def cleanup(self) -> None:
        """Remove ``spool_dir`` and every file in it."""
        shutil.rmtree(self.spool_dir, ignore_errors=True)


# --- header parsing ---------------------------------------------------------------------------


def _field_name(name: str) -> str:
    """A field name as text any database stores: a NUL (no provider's name has one) becomes
    U+FFFD."""
    return name.replace("\x00", "\ufffd")


def _latin1_to_text(value: str) -> str:
    """Header text was decoded as latin-1 (lossless); re-read its bytes as UTF-8."""
    return value.encode("latin-1").decode("utf-8", errors="replace")


# --- value sinks ------------------------------------------------------------------------------


class _Sink:
    """Receives one value: counts, caps, buffers, and prepares batched disk operations.

    ``feed`` and ``take_ops`` run on the event loop; the operations they return (``_write``,
    ``_discard``) run in a worker thread while the loop awaits them, so the two never overlap.
    """

    def __init__(
        self, part: FormPart, spool_dir: Path, index: int, cap: int, threshold: int | None
    ) -> None:
        self.part = part
        self.spool_dir = spool_dir
        self.index = index
        self.cap = cap
        self.threshold = threshold  # None: always on disk (file parts)
        self.on_disk = threshold is None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.opened = False  # a write operation was issued (the file may exist)
        self.discarded = False
        self.hasher: hashlib._Hash | None = None  # made when the value goes to disk
        self.fh: BinaryIO | None = None  # touched only by operations (and error cleanup)

    @property
    def resident(self) -> int:
        """Bytes of this value that stay in memory (0 once it goes to disk or is dropped)."""
        return 0 if self.on_disk or self.part.truncated else self.part.size

    def feed(self, data: bytes) -> None:
        part = self.part
        part.size += len(data)
        if part.truncated:
            return
        if part.size > self.cap:
            part.truncated = True
            self.chunks = []
            self.buffered = 0
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if not self.on_disk and self.threshold is not None and part.size > self.threshold:
            self.on_disk = True

    def take_ops(self, *, final: bool) -> list[_Op]:
        part = self.part
        if part.truncated:
            if self.discarded:
                return []
            self.discarded = True
            return [self._discard] if self.opened else []
        if not self.on_disk:
            if final:
                part.data = b"".join(self.chunks)
                part.sha256 = hashlib.sha256(part.data).hexdigest()
                self.chunks = []
            return []
        if not final and self.buffered < _BATCH:
            return []
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        self.opened = True
        return [partial(self._write, chunks, final)]

    @property
    def path(self) -> Path:
        """The value's file (named only when a value goes to disk)."""
        return self.spool_dir / f"{self.index:06d}.part"

    def _write(self, chunks: list[bytes], final: bool) -> None:
        if self.fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # made on first use
            self.fh = open(self.path, "xb")  # noqa: SIM115 - closed at the part's end
        if self.hasher is None:
            self.hasher = hashlib.sha256()
        for chunk in chunks:
            self.hasher.update(chunk)
        self.fh.writelines(chunks)
        if final:
            self.fh.close()
            self.fh = None
            self.part.sha256 = self.hasher.hexdigest()
            self.part.path = self.path

    def _discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.fh is not None:
            fh, self.fh = self.fh, None
            fh.close()


def _run_ops(ops: list[_Op]) -> None:
    for op in ops:
        op()


class _Collector:
    """State shared by the parser callbacks of one request, and the bounds of FormLimits."""

    def __init__(
        self,
        spool_dir: Path,
        *,
        max_file: int,
        max_field: int,
        memory_threshold: int,
        limits: FormLimits,
        gate: FieldGate | None,
    ) -> None:
        self.spool_dir = spool_dir
        self.max_file = max_file
        self.max_field = max_field
        self.memory_threshold = memory_threshold
        self.limits = limits
        self.gate = gate
        self.content_fields = gate.content_fields if gate is not None else frozenset()
        self.parts: list[FormPart] = []
        self.sinks: list[_Sink] = []
        self.current: _Sink | None = None
        self.current_is_content = False
        self.finished: list[_Sink] = []
        self.empty = 0  # empty urlencoded segments ("&&"): no part, but counted as one
        self.in_memory = 0  # bytes of plain values held in memory
        self.content_bytes = 0  # body bytes of file contents (and of the gate's content fields)

    @property
    def authenticated(self) -> bool:
        return self.gate is None or self.gate.authenticated

    def refuse(self, detail: str) -> FormTooComplex:
        return FormTooComplex(detail, authenticated=self.authenticated)

    def count_part(self) -> None:
        if len(self.parts) + self.empty >= self.limits.max_parts:
            raise self.refuse(f"the form has more than {self.limits.max_parts} parts")

    def check_name(self, size: int) -> None:
        if size > self.limits.max_name_bytes:
            raise self.refuse(f"a field name is longer than {self.limits.max_name_bytes} bytes")

    def skip_empty(self) -> None:
        self.count_part()
        self.empty += 1

    def begin(self, part: FormPart) -> None:
        self.count_part()
        index = len(self.parts)
        if part.filename is not None:
            sink = _Sink(part, self.spool_dir, index, self.max_file, None)
        else:
            sink = _Sink(part, self.spool_dir, index, self.max_field, self.memory_threshold)
        self.parts.append(part)
        self.sinks.append(sink)
        self.current = sink
        self.current_is_content = part.filename is not None or part.name in self.content_fields

    def data(self, data: bytes, raw: int | None = None) -> None:
        """``data`` of the current value (``raw``: how many body bytes it was decoded from)."""
        sink = self.current
        if sink is None:
            return
        if self.current_is_content:
            self.content_bytes += len(data) if raw is None else raw
        before = sink.resident
        sink.feed(data)
        after = sink.resident
        self.in_memory += after - before
        if after and self.in_memory > self.limits.memory_bytes:
            sink.on_disk = True  # this value, and each one after it, goes to disk
            self.in_memory -= after

    def end(self) -> None:
        sink, self.current = self.current, None
        if sink is None:
            return
        if not (sink.on_disk or sink.part.truncated):  # held in memory: complete now
            sink.take_ops(final=True)
            self.show(sink.part)
        else:  # its file is finished (or removed) in the next drain, then shown
            self.finished.append(sink)

    def show(self, part: FormPart) -> None:
        """Give a completed plain field to the gate (which may raise to stop the read)."""
        if self.gate is not None and part.filename is None:
            self.gate.field(part)

    def unauthenticated_bytes(self, total: int) -> int:
        """Body bytes read so far that are not file contents, while no gate has let it in."""
        return 0 if self.authenticated else total - self.content_bytes

    async def drain(self) -> None:
        """Run the disk operations that are due, in one worker-thread hop; then show the
        plain fields they completed to the gate."""
        ops: list[_Op] = []
        finished, self.finished = self.finished, []
        for sink in finished:
            ops += sink.take_ops(final=True)
        if self.current is not None:
            ops += self.current.take_ops(final=False)
        if ops:
            await anyio.to_thread.run_sync(_run_ops, ops)
        for sink in finished:
            self.show(sink.part)

    def close_files(self) -> None:
        for sink in self.sinks:
            sink.close()


class _Multipart:
    """Feeds a ``multipart/form-data`` body to python-multipart and builds the parts."""

    def __init__(self, boundary: bytes, collector: _Collector) -> None:
        self.collector = collector
        self.ended = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._field = bytearray()
        self._value = bytearray()
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }
        self.parser = MultipartParser(
            boundary,
            callbacks,
            max_header_count=_MAX_PART_HEADERS,
            max_header_size=_MAX_PART_HEADER_SIZE,
        )

    def write(self, data: bytes) -> None:
        self.parser.write(data)

    def finish(self) -> None:
        self.parser.finalize()
        if not self.ended:
            raise MalformedBody("the body ended before the closing multipart boundary")

    def _on_part_begin(self) -> None:
        self._headers = []
        self._field.clear()
        self._value.clear()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers.append((bytes(self._field), bytes(self._value)))
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        disposition = content_type = None
        for key, value in self._headers:
            name = key.decode("latin-1").strip().lower()
            if name == "content-disposition" and disposition is None:
                disposition = value.decode("latin-1").strip()
            elif name == "content-type" and content_type is None:
                content_type = value.decode("latin-1").strip()
        params = parse_params(disposition)[1] if disposition is not None else []
        field_name = param(params, "name")
        if field_name is not None:
            self.collector.check_name(len(field_name))  # latin-1: one character per byte
        filename = rfc2231_value(params, "filename")
        if filename is None:
            plain = param(params, "filename")
            filename = None if plain is None else _latin1_to_text(plain)
        charset = None
        if content_type is not None:
            charset = param(parse_params(content_type)[1], "charset") or None
        part = FormPart(
            name="" if field_name is None else _field_name(_latin1_to_text(field_name)),
            filename=filename,
            content_type=None if content_type is None else _latin1_to_text(content_type),
            charset=None if charset is None else _latin1_to_text(charset).strip(),
        )
        self.collector.begin(part)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.collector.data(data[start:end])

    def _on_part_end(self) -> None:
        self.collector.end()

    def _on_end(self) -> None:
        self.ended = True


_ESCAPES = re.compile(rb"(?:%[0-9A-Fa-f]{2})+")


def _unhex_run(match: re.Match[bytes]) -> bytes:
    return binascii.unhexlify(match[0].replace(b"%", b""))


def _unquote_plus(data: bytes) -> bytes:
    """``urllib.parse.unquote_to_bytes`` after ``+`` → space, in C.

    ``%XX`` becomes ``\\xXX`` for ``codecs.escape_decode`` (what pickle uses), backslashes being
    doubled first: a 10 MB heavily escaped value then takes tens of milliseconds on the event
    loop instead of half a second. Invalid escapes (``%zz``, a lone ``%``) make it fail, and
    the value is then decoded run by run, leaving them as they are, like urllib does.
    """
    data = data.replace(b"+", b" ")
    if b"%" not in data:
        return data
    try:
        return codecs.escape_decode(data.replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0]
    except ValueError:
        return _ESCAPES.sub(_unhex_run, data)


class _PercentDecoder:
    """Incremental ``application/x-www-form-urlencoded`` decoding (``+`` and ``%XX``)."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data
        # Hold back an escape that may continue in the next chunk ("%" or "%X").
        cut = len(data)
        if data.endswith(b"%"):
            cut -= 1
        elif data[-2:-1] == b"%":
            cut -= 2
        data, self._carry = data[:cut], data[cut:]
        return _unquote_plus(data)

    def flush(self) -> bytes:
        data, self._carry = self._carry, b""
        return _unquote_plus(data)


class _Urlencoded:
    """Reads an ``application/x-www-form-urlencoded`` body as ``urllib.parse.parse_qsl`` with
    ``keep_blank_values`` does (``&`` separates fields, the first ``=`` a name from its value,
    empty fields are skipped), incrementally. Separators are found with ``bytes.find``: the work
    per field is constant, and the number of fields, empty ones included, is bounded."""

    def __init__(self, collector: _Collector) -> None:
        self.collector = collector
        self._name = bytearray()
        self._decoder = _PercentDecoder()
        self._seen = False  # the current field has a byte
        self._in_value = False  # its "=" was seen: the part has begun

    def write(self, data: bytes) -> None:
        position, size = 0, len(data)
        while position < size:
            separator = data.find(b"&", position)
            stop = size if separator < 0 else separator
            if stop > position:
                self._feed(data, position, stop)
            if separator < 0:
                return
            self._end_field()
            position = separator + 1

    def finish(self) -> None:
        if self._seen:
            self._end_field()

    def _feed(self, data: bytes, start: int, stop: int) -> None:
        self._seen = True
        if not self._in_value:
            equals = data.find(b"=", start, stop)
            self._name += data[start : stop if equals < 0 else equals]
            self.collector.check_name(len(self._name))
            if equals < 0:
                return
            self._begin()
            start = equals + 1
        if start < stop:
            decoded = self._decoder.feed(data[start:stop])
            if decoded:
                self.collector.data(decoded, stop - start)

    def _begin(self) -> None:
        self._in_value = True
        name = _unquote_plus(bytes(self._name))
        self.collector.begin(
            FormPart(
                name=_field_name(name.decode("utf-8", errors="replace")),
                filename=None,
                content_type=None,
                charset=None,
            )
        )

    def _end_field(self) -> None:
        if not self._seen:
            self.collector.skip_empty()
            return
        if not self._in_value:
            self._begin()
        tail = self._decoder.flush()
        if tail:
            self.collector.data(tail, 0)
        self.collector.end()
        self._name.clear()
        self._decoder = _PercentDecoder()
        self._seen = self._in_value = False


# --- entry points -----------------------------------------------------------------------------


def _new_spool_dir(spool_root: Path) -> Path:
    tmp = spool_root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=tmp))


def _spool_dir_name(spool_root: Path) -> Path:
    """A fresh folder name under ``spool_root/"tmp"``, made when a part is first spooled: a form
    held in memory (most urlencoded mails) touches no disk."""
    return spool_root / "tmp" / f"form-{uuid.uuid4().hex}"


def _feed_slices(chunk: bytes) -> list[bytes]:
    if len(chunk) <= _FEED:
        return [chunk]
    return [chunk[i : i + _FEED] for i in range(0, len(chunk), _FEED)]


async def read_form(
    stream: AsyncIterable[bytes],
    content_type_header: str,
    *,
    spool_root: Path,
    max_total: int,
    max_file: int,
    max_field: int = 64 * _MiB,
    memory_threshold: int = _MiB,
    limits: FormLimits | None = None,
    gate: FieldGate | None = None,
) -> Form:
    """Read a ``multipart/form-data`` or ``application/x-www-form-urlencoded`` body.

    Raises :class:`MalformedBody` (another content type, no boundary, broken framing, a body
    ending mid-part), :class:`PayloadTooLarge` (more than ``max_total`` bytes) and
    :class:`FormTooComplex` (a bound of ``limits`` passed); reading stops at once. ``gate``, when
    given, sees each plain field as it completes and may raise to stop the read; until it has
    authenticated the request, ``limits.max_unauthenticated_bytes`` applies. On any error
    nothing is left on disk. On success the caller owns the :class:`Form` and must call
    :meth:`Form.cleanup`.
    """
    media_type, params = parse_params(content_type_header)
    boundary: bytes | None = None
    if media_type == _FORM_DATA:
        value = param(params, "boundary")
        if not value:
            raise MalformedBody("multipart/form-data without a boundary")
        try:
            boundary = value.encode("latin-1")
        except UnicodeEncodeError:
            raise MalformedBody("the multipart boundary is not ASCII") from None
    elif media_type != _URLENCODED:
        raise MalformedBody(f"unsupported content type {media_type!r}")

    spool_dir = _spool_dir_name(spool_root)
    limits = limits or FormLimits()
    collector = _Collector(
        spool_dir,
        max_file=max_file,
        max_field=max_field,
        memory_threshold=memory_threshold,
        limits=limits,
        gate=gate,
    )
    try:
        reader: _Multipart | _Urlencoded
        try:
            reader = _Multipart(boundary, collector) if boundary else _Urlencoded(collector)
        except FormParserError as exc:
            raise MalformedBody(str(exc)) from None
        total = 0
        async for chunk in stream:
            if not chunk:
                continue
            total += len(chunk)
            if total > max_total:
                raise PayloadTooLarge(max_total)
            for piece in _feed_slices(chunk):
                try:
                    reader.write(piece)
                except FormParserError as exc:
                    raise MalformedBody(str(exc)) from None
                await collector.drain()
                if collector.unauthenticated_bytes(total) > limits.max_unauthenticated_bytes:
                    raise collector.refuse(
                        f"more than {limits.max_unauthenticated_bytes} bytes of fields arrived "
                        "before the request was authenticated"
                    )
        try:
            reader.finish()
        except FormParserError as exc:
            raise MalformedBody(str(exc)) from None
        await collector.drain()
    except BaseException:
        # Synchronous on purpose: this also runs when the task is being cancelled.
        collector.close_files()
        shutil.rmtree(spool_dir, ignore_errors=True)
        raise
    return Form(parts=collector.parts, spool_dir=spool_dir)


class _RawSpool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.hasher = hashlib.sha256()
        self.fh: BinaryIO | None = None

    def write(self, chunks: list[bytes]) -> None:
        if self.fh is None:
            self.fh = open(self.path, "xb")  # noqa: SIM115 - closed by close()
        for chunk in chunks:
            self.hasher.update(chunk)
        self.fh.writelines(chunks)

    def close(self) -> None:
        if self.fh is not None:
            fh, self.fh = self.fh, None
            fh.close()


async def spool_body(
    stream: AsyncIterable[bytes], *, spool_root: Path, max_total: int
) -> tuple[Path, int, str]:
    """Write a whole raw body (e.g. a ``message/rfc822`` post) to a file in a fresh spool dir.

    Returns ``(path, size, sha256)``; ``path.parent`` is the request's own directory, which the
    caller removes (``shutil.rmtree(path.parent)``) once done. Raises :class:`PayloadTooLarge`
    past ``max_total`` bytes, leaving nothing on disk.
    """
    spool_dir = await anyio.to_thread.run_sync(_new_spool_dir, spool_root)
    spool = _RawSpool(spool_dir / "body")
    try:
        pending: list[bytes] = []
        buffered = 0
        async for chunk in stream:
            if not chunk:
                continue
            spool.size += len(chunk)
            if spool.size > max_total:
                raise PayloadTooLarge(max_total)
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= _BATCH:
                batch, pending, buffered = pending, [], 0
                await anyio.to_thread.run_sync(spool.write, batch)

        def finish(batch: list[bytes]) -> None:
            spool.write(batch)
            spool.close()

        await anyio.to_thread.run_sync(finish, pending)
    except BaseException:
        spool.close()
        shutil.rmtree(spool_dir, ignore_errors=True)
        raise
    return spool.path, spool.size, spool.hasher.hexdigest()


def sweep_spool(spool_root: Path, older_than_seconds: float = 0) -> int:
    """Remove what earlier requests left in ``spool_root/"tmp"`` (``LocalBlobStore.sweep_tmp``)."""
    return LocalBlobStore(spool_root).sweep_tmp(older_than_seconds)
