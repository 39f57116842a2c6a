"""Log redaction: no address's local part, credential or ``/inbound`` query string is ever logged.

An integration's address is its secret (``slug.<token>@domain``), and the relay puts it in the
request line (``/inbound/mime?recipient=…``), which uvicorn's access log writes out. Every log
record is therefore redacted before any handler formats it:

- email addresses keep their domain only (``<redacted>@in.example.com``, also ``%40``-encoded);
- the query string of an ``/inbound/…`` path becomes ``?<redacted>``;
- ``Authorization`` values, ``Basic``/``Bearer`` credentials, JWTs, the user and password of a
  URL, and ``password=…``-style values become ``<redacted>``.

``install()`` (called by ``create_app``) sets a log record factory, so records of every logger are
redacted where they are made (SQLAlchemy's parameters, httpx's URLs, handlers added later), and
puts :class:`RedactingFilter` on the root logger's handlers, on ``logging.lastResort`` and on
uvicorn's loggers and handlers, which uvicorn configures before it imports the application.

``configure(log_format)`` (called by ``create_app``, after ``install``) formats every line:
JSON lines (``json``, production's default) or readable text (``text``). It puts one handler
(standard error) on the root logger, lets the app's own loggers (``mailslot.*``) through at
INFO, and in JSON gives uvicorn's handlers the same formatter. A line written while a request
is served carries its ``request_id``; the fields a line adds (``extra={FIELDS: {...}}``, as the
inbound request line does) are redacted like the message. uvicorn's access line is dropped for
``/inbound/`` paths, which have a line of their own (``app.observability.inbound``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

from app.observability import context

REDACTED = "<redacted>"
_MARK = "_mailslot_redacted"
# Loggers whose formatters read ``record.args`` positionally: their args are never collapsed.
_POSITIONAL_ARGS_LOGGERS = frozenset({"uvicorn.access"})
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")

_CREDENTIAL = r"[A-Za-z0-9._~+/=-]"
_RULES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # "Authorization: Basic …", "'authorization': 'Bearer …'", "(b'authorization', b'…')".
    (
        re.compile(
            r"""(\b(?:proxy-)?authorization\b['"]?\s*[:=,]\s*(?:b?['"])?)"""
            r"""(?:(basic|bearer|digest|token)\s+)?[^\s'",;)}\]]+""",
            re.IGNORECASE,
        ),
        lambda m: f"{m[1]}{m[2] + ' ' if m[2] else ''}{REDACTED}",
    ),
    # A credential after its scheme anywhere (it has a digit or base64/JWT punctuation).
    (
        re.compile(
            rf"\b(basic|bearer)\s+(?={_CREDENTIAL}*[0-9+/=.~_-]){_CREDENTIAL}{{8,}}",
            re.IGNORECASE,
        ),
        rf"\1 {REDACTED}",
    ),
    # A JWT on its own.
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), REDACTED),
    # The user and password of a URL: "postgresql://user:secret@host".
    (
        re.compile(r"\b([a-z][a-z0-9+.-]*://)[^\s/@:'\"]+:[^\s/@'\"]*@", re.IGNORECASE),
        rf"\1{REDACTED}@",
    ),
    # "password=…", "'password': '…'", "secret: …".
    (
        re.compile(
            r"""\b((?:[\w-]*_)?(?:password|passwd|secret|signing_key|api_key)s?"""
            r"""['"]?\s*[:=]\s*(?:b?['"])?)"""
            r"""[^\s'",;&)}\]]+""",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    # The query string of an inbound path (the envelope recipient, the sender).
    (re.compile(r"(/inbound/[\w./-]*)\?[^\s'\"<>]+"), rf"\1?{REDACTED}"),
    # Email addresses, plain or percent-encoded, and quoted local parts: the domain stays.
    (
        re.compile(
            r"""(?:"[^"\r\n@]*"|(?<![\w.!#$&*+^`{|}~%-])(?:[\w.!#$&*+^`{|}~-]|%[0-9a-f]{2})+)"""
            r"""(@|%40)"""
            r"""(?=[\w-]+(?:\.[\w-]+)*|\[)""",
            re.IGNORECASE,
        ),
        rf"{REDACTED}\1",
    ),
)


def _may_hold_secret(text: str) -> bool:
    """Whether ``text`` has what one of the rules above needs to find (an ``@`` or ``%40``, a
    ``://``, ``eyJ``, a ``/inbound/`` path with a ``?``, or one of their words in any case).
    Without it, nothing is replaced: most records, such as each request's access-log line, are
    let through after these substring tests (a few times faster than one regex scan)."""
    if "@" in text or "%40" in text or "://" in text or "eyJ" in text:
        return True
    if "/inbound/" in text and "?" in text:
        return True
    lower = text.lower()
    return (
        "authoriz" in lower
        or "basic" in lower
        or "bearer" in lower
        or "passw" in lower
        or "secret" in lower
        or "signing_key" in lower
        or "api_key" in lower
    )


def redact(text: str) -> str:
    """``text`` with addresses' local parts, credentials and inbound query strings replaced."""
    if not text or not _may_hold_secret(text):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place: its message, arguments, traceback and stack.

    A record is redacted once; the mark names the message and arguments it left, so that a record
    refilled afterwards (``logging.makeLogRecord``) is redacted again.
    """
    if record.__dict__.get(_MARK) == (id(record.msg), id(record.args)):
        return record
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_redact_value(a) for a in args)
    elif isinstance(args, Mapping):
        record.args = {k: _redact_value(v) for k, v in args.items()}
    # An argument that is not a string (an exception, a tuple, SQL parameters) may still carry
    # an address: render the message, and keep the rendering when redaction changes it.
    if record.args and record.name not in _POSITIONAL_ARGS_LOGGERS:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: the handler reports it itself
            message = None
        if message is not None:
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, ()
    elif not isinstance(record.msg, str):
        record.msg = redact(str(record.msg))
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record.__dict__[_MARK] = (id(record.msg), id(record.args))
    return record


_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Redacts each record it sees (see the module's docstring); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


FILTER = RedactingFilter()


def _redacting_factory(
    previous: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    setattr(factory, _MARK, previous)
    return factory


def _add_filter(target: logging.Filterer) -> None:
    if FILTER not in target.filters:
        target.addFilter(FILTER)


def install() -> None:
    """Redact every log record of the process from now on. Idempotent."""
    current = logging.getLogRecordFactory()
    if not getattr(current, _MARK, None):
        logging.setLogRecordFactory(_redacting_factory(current))
    root = logging.getLogger()
    for handler in root.handlers:
        _add_filter(handler)
    if logging.lastResort is not None:
        _add_filter(logging.lastResort)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        _add_filter(logger)
        for handler in logger.handlers:
            _add_filter(handler)


# --- formats ---------------------------------------------------------------------------------

FIELDS = "mailslot_fields"
"""The ``extra`` key of a line's own fields: ``logger.info(msg, extra={FIELDS: {...}})``."""
INBOUND_PREFIX = "/inbound/"
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def _redacted_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [redact(v) if isinstance(v, str) else v for v in value]
    return value


def fields_of(record: logging.LogRecord, *, redacted: bool = True) -> dict[str, Any]:
    """What a line says besides its message: the request's id (when it was written while a
    request was served) and the record's own fields; for uvicorn's access lines, the request
    line's parts. ``redacted``: as the rules say (else the caller redacts them)."""
    found: dict[str, Any] = {}
    request = context.current()
    if request is not None:
        found["request_id"] = request.request_id
    args = record.args
    if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        found.update(zip(_ACCESS_FIELDS, args, strict=True))
    own = record.__dict__.get(FIELDS)
    if own:
        found.update(own)
    return _redacted_fields(found) if redacted else found


def _redacted_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with their texts (and the texts of their lists) redacted. All of them are
    tested at once: what a rule needs to find in one text is in them all put together."""
    texts: list[str] = []
    for value in fields.values():
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list | tuple):
            texts.extend(v for v in value if isinstance(v, str))
    if not _may_hold_secret("\n".join(texts)):
        return fields
    return {key: _redacted_value(value) for key, value in fields.items()}


_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))  # made once, not per line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, milliseconds), ``level``, ``logger``, ``pid``,
    ``message``, then the line's fields (``fields_of``), ``exc_info`` and ``stack_info``."""

    _second = -1
    _prefix = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime a second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)  # done where it was made, normally: then this costs a look-up
        document: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        document.update(fields_of(record, redacted=False))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            document["exc_info"] = record.exc_text
        if record.stack_info:
            document["stack_info"] = record.stack_info
        line = _ENCODER.encode(document)
        # JSON writes what the rules look for as it is (``@``, ``://``, the words): a line
        # without any of it has nothing to redact. Otherwise each of its texts is redacted (the
        # message and traceback were already: again, it changes nothing), and the line remade.
        if not _may_hold_secret(line):
            return line
        return _ENCODER.encode(_redacted_fields(document))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` (the line's fields), then any traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)  # done where it was made, normally: then this costs a look-up
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extra = fields_of(record)
        if record.name == "uvicorn.access":
            extra = {k: v for k, v in extra.items() if k not in _ACCESS_FIELDS}
        if not extra:
            return line
        return line + " " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to the ``sys.stderr`` of the moment (a test runner may replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def _is_inbound_access(args: Any) -> bool:
    """uvicorn's access line arguments (client, method, path, version, status) of an
    ``/inbound/`` request."""
    return (
        isinstance(args, tuple)
        and len(args) > 2
        and isinstance(args[2], str)
        and args[2].startswith(INBOUND_PREFIX)
    )


class InboundAccessFilter(logging.Filter):
    """Drops uvicorn's access line of an ``/inbound/`` request (it has a line of its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_inbound_access(record.args)


class _AccessLogger(logging.Logger):
    """uvicorn's access logger, given this class by ``configure``: the access line of an
    ``/inbound/`` request is dropped before its record is made (making one only for the filter
    to drop it costs more than a few microseconds a mail). The filter stays, for any other
    way a record reaches it."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if not _is_inbound_access(args):
            super().info(msg, *args, **kwargs)


_HANDLER = "_mailslot_handler"
_UVICORN_FORMATTER = "_mailslot_uvicorn_formatter"
INBOUND_ACCESS_FILTER = InboundAccessFilter()


def configure(log_format: Literal["json", "text"] | None) -> None:
    """Redaction (``install``), then every line in ``log_format`` (see the module's docstring).
    Idempotent; a later call with another format switches it."""
    install()
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, _HANDLER, False)), None)
    if handler is None:
        handler = _Stderr()
        setattr(handler, _HANDLER, True)
        _add_filter(handler)
        root.addHandler(handler)
    handler.setFormatter(formatter)
    app_logger = logging.getLogger("mailslot")
    if app_logger.level == logging.NOTSET:
        app_logger.setLevel(logging.INFO)
    for name in UVICORN_LOGGERS:
        for uvicorn_handler in logging.getLogger(name).handlers:
            original = uvicorn_handler.__dict__.setdefault(
                _UVICORN_FORMATTER, uvicorn_handler.formatter
            )
            uvicorn_handler.setFormatter(formatter if log_format == "json" else original)
    access = logging.getLogger("uvicorn.access")
    if INBOUND_ACCESS_FILTER not in access.filters:
        access.addFilter(INBOUND_ACCESS_FILTER)
    if type(access) is logging.Logger:
        access.__class__ = _AccessLogger
