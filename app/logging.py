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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

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


# What every rule above needs to find in a text: without any of it, nothing is replaced (most
# records, such as each request's access-log line, are let through after this one scan).
_TRIGGER = re.compile(
    r"authoriz|basic|bearer|eyJ|://|passw|secret|signing_key|api_key|/inbound/[\w./-]*\?|@|%40",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with addresses' local parts, credentials and inbound query strings replaced."""
    if not text or _TRIGGER.search(text) is None:
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
