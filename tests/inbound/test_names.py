"""Plain-text subjects and names; attachment display names."""

from __future__ import annotations

import unicodedata

import pytest

from app.inbound.names import plain_text, safe_filename

BIDI_CONTROLS = [
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
]


def test_plain_text_keeps_ordinary_text() -> None:
    assert plain_text("Réunion du comité — 会議") == "Réunion du comité — 会議"


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x1b", "\x7f", "\x80", "\x9b", "\x9f"])
def test_plain_text_removes_c0_and_c1_controls(control: str) -> None:
    assert plain_text(f"ab{control}cd") == "abcd"


@pytest.mark.parametrize("control", BIDI_CONTROLS)
def test_plain_text_removes_bidi_controls(control: str) -> None:
    assert plain_text(f"invoice{control}gnp.exe") == "invoicegnp.exe"


@pytest.mark.parametrize("separator", ["\r\n", "\n", "\t", "\u2028", "\u2029", "\x85", "\x0b"])
def test_plain_text_turns_line_breaks_into_one_space(separator: str) -> None:
    assert plain_text(f"Hello{separator}World") == "Hello World"


def test_plain_text_collapses_and_strips_whitespace() -> None:
    assert plain_text("  a \t\t b\u00a0\u3000 c  ") == "a b c"


def test_plain_text_removes_a_header_injection() -> None:
    assert plain_text("Hi\r\nBcc: victim@example.com") == "Hi Bcc: victim@example.com"


def test_plain_text_cuts_to_max_length() -> None:
    assert plain_text("abcdef", 3) == "abc"
    assert plain_text("ab   cdef", 3) == "ab"  # the cut is stripped again
    assert plain_text("abc", 10) == "abc"
    assert plain_text("x" * 2000, 998) == "x" * 998


def test_plain_text_of_nothing_is_empty() -> None:
    assert plain_text("") == ""
    assert plain_text("\x00\u202e \t") == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\Windows\\system32\\cmd.exe", "cmd.exe"),
        ("C:\\Users\\me\\Desktop\\notes.txt", "notes.txt"),
        ("dir/sub\\mixed/name.txt", "name.txt"),
        (".htaccess", "htaccess"),
        ("...hidden", "hidden"),
        ("invoice\u202egnp.exe", "invoicegnp.exe"),
        ("in\u2066voice\u2069.pdf", "invoice.pdf"),
        ("a\x00b\x1f.txt", "ab.txt"),
        ("two   spaces  .txt", "two spaces .txt"),
        ("  padded.txt  ", "padded.txt"),
        ("trailing.txt.", "trailing.txt"),
        ("Zusammenfassung über €.pdf", "Zusammenfassung über €.pdf"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name, "fallback.bin") == expected


@pytest.mark.parametrize("name", [None, "", "   ", ".", "..", "../..", "/", "\\", "\u202e", "\x00"])
def test_safe_filename_falls_back_when_nothing_is_left(name: str | None) -> None:
    assert safe_filename(name, "attachment-1.bin") == "attachment-1.bin"


def test_safe_filename_is_nfc() -> None:
    decomposed = "cafe\u0301.txt"
    result = safe_filename(decomposed, "x")
    assert result == "caf\u00e9.txt"
    assert unicodedata.is_normalized("NFC", result)


def test_safe_filename_shortens_to_255_bytes_keeping_the_extension() -> None:
    result = safe_filename("é" * 300 + ".pdf", "x")
    assert len(result.encode("utf-8")) <= 255
    assert result.endswith(".pdf")
    assert result.startswith("é")
    result.encode("utf-8").decode("utf-8")  # no split character


def test_safe_filename_shortens_a_name_with_a_huge_extension() -> None:
    result = safe_filename("name." + "x" * 400, "x")
    assert len(result.encode("utf-8")) <= 255
    assert result.startswith("name.")


def test_safe_filename_shortens_multibyte_names_on_character_boundaries() -> None:
    result = safe_filename("会" * 200 + ".docx", "x")
    assert len(result.encode("utf-8")) <= 255
    assert result.endswith(".docx")
    assert set(result[:-5]) == {"会"}
