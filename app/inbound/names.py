"""Plain-text subjects and names, and attachment display names, from sender-controlled strings."""

from __future__ import annotations

import re
import unicodedata

# Characters that end a line or separate words: they become a space before the run is collapsed.
_SPACING = "\t\n\v\f\r\x85\u2028\u2029"
# C0 and C1 controls, DEL, and the bidirectional formatting characters (embeddings,
# overrides, isolates, marks): removed outright, so "invoice\u202egnp.exe" shows as it is.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r"\s+")
# Lone surrogates (a JSON "\ud83d", a utf-7 or unicode_escape "charset") are not characters: they
# cannot be encoded, stored or shown, and become U+FFFD like any other undecodable input.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACING_TABLE = str.maketrans(dict.fromkeys(_SPACING, " "))

MAX_FILENAME_BYTES = 255
_MAX_EXTENSION_BYTES = 32


def plain_text(value: str, max_length: int | None = None) -> str:
    """One line of plain text: no control or bidi characters, whitespace runs collapsed, stripped.

    ``max_length`` cuts the result to at most that many characters (the cut is stripped again).
    """
    text = _INVISIBLE.sub("", _SURROGATE.sub("\ufffd", value).translate(_SPACING_TABLE))
    text = _SPACES.sub(" ", text).strip()
    if max_length is not None and len(text) > max_length:
        text = text[: max(max_length, 0)].rstrip()
    return text


def safe_filename(name: str | None, fallback: str) -> str:
    """A display name for an attachment: never a path, never hidden, at most 255 UTF-8 bytes.

    Only the last path component (after ``/`` or ``\\``) is kept; control and bidi characters are
    removed, leading dots dropped (``../../etc/passwd`` → ``passwd``, ``.htaccess`` →
    ``htaccess``), the result NFC-normalised and spaces collapsed. A name longer than 255 UTF-8
    bytes is shortened before its extension. ``fallback`` is returned when nothing is left.
    """
    if not name:
        return fallback
    name = re.split(r"[/\\]", name)[-1]
    name = unicodedata.normalize("NFC", plain_text(name))
    name = name.lstrip(". ").rstrip(". ")
    if not name:
        return fallback
    return _shorten(name, MAX_FILENAME_BYTES)


def _shorten(name: str, limit: int) -> str:
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = dot + extension
    if not stem or len(suffix.encode("utf-8")) > _MAX_EXTENSION_BYTES:
        stem, suffix = name, ""
    room = limit - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(". ")
    return cut + suffix
