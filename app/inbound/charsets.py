"""The one charset decoder of the inbound paths: MIME parts and headers, SendGrid's fields (with
the charsets SendGrid names), Mailgun's fields, and RFC 2231 filenames of form parts.

A charset label comes from the sender or the provider and may name any codec Python has. Codecs
that are not character sets of mail are refused, and the bytes decode as UTF-8 instead: some are
surprising (``unicode_escape`` interprets backslashes) and some are slow on hostile input
(``punycode`` and ``idna`` take time quadratic in the length: 1 MB of text took 14 s).
"""

from __future__ import annotations

import codecs

# Labels that mail software uses for a wider encoding than the label says (as browsers do).
CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "big5": "big5hkscs",
}
# Codecs that are not character sets of mail (or are slow or surprising on hostile input), by
# their canonical name (``codecs.lookup(label).name`` with "-" as "_").
REFUSED_CODECS = frozenset(
    {"idna", "punycode", "raw_unicode_escape", "unicode_escape", "undefined", "mbcs", "oem"}
)
_UTF8_LABELS = frozenset({"", "us-ascii", "ascii", "utf-8", "utf8"})


def codec_for(charset: str | None) -> codecs.CodecInfo | None:
    """The codec a label names, or None: no label, an unknown one, or a refused codec."""
    label = (charset or "").strip().strip("\"'").lower()
    if label in _UTF8_LABELS:
        return None
    try:
        codec = codecs.lookup(CHARSET_ALIASES.get(label, label))
    except (LookupError, ValueError):  # unknown, or not even a name (a NUL in it)
        return None
    if codec.name.replace("-", "_") in REFUSED_CODECS or not getattr(
        codec, "_is_text_encoding", True
    ):
        return None
    return codec


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Text of ``data`` in the declared charset; an unknown, refused or wrong one degrades to
    UTF-8, and undecodable bytes to U+FFFD (never an exception)."""
    codec = codec_for(charset)
    if codec is None:
        return data.decode("utf-8", "replace")
    try:
        text: str = codec.decode(data, "replace")[0]
    except Exception:  # a codec that fails even with errors="replace"
        return data.decode("utf-8", "replace")
    return text
