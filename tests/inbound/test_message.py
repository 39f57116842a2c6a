"""Raw MIME to InboundEmail: charsets, encoded words, bodies, attachments, hostile input."""

from __future__ import annotations

import email.parser
import hashlib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from app.inbound.charsets import decode_bytes
from app.inbound.errors import MalformedMessage, MessageTooComplex
from app.inbound.message import decode_header, parse_from, parse_mime
from app.inbound.model import InboundAttachment, InboundEmail

SAMPLES = Path(__file__).parent / "samples"
RECIPIENT = "news.k3x9@in.example.com"


def parse(raw: bytes | EmailMessage, **overrides: Any) -> InboundEmail:
    if isinstance(raw, EmailMessage):
        raw = raw.as_bytes()
    options: dict[str, Any] = {
        "provider": "mime",
        "recipients": (RECIPIENT,),
        "envelope_from": "bounce@example.org",
        "max_attachment_bytes": 5 * 1024 * 1024,
    }
    options.update(overrides)
    return parse_mime(raw, **options)


def sample(name: str, **overrides: Any) -> InboundEmail:
    return parse((SAMPLES / name).read_bytes(), **overrides)


def by_name(email: InboundEmail) -> dict[str, InboundAttachment]:
    return {a.filename: a for a in email.attachments}


def simple(body: str = "Hello", **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = headers.pop("From", "Alice <alice@example.com>")
    message["To"] = RECIPIENT
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


# --- the samples ----------------------------------------------------------------------------------


def test_iso_8859_1_quoted_printable_with_encoded_subject_and_sender() -> None:
    email = sample("latin1-qp.eml")
    assert email.from_address == "Joerg.Mueller@example.org"  # the domain is lower-cased
    assert email.from_name == "Jörg Müller"  # =?utf-8?B?...?=
    assert email.subject == "Réunion du comité à Zürich"  # two =?iso-8859-1?Q?...?= words
    assert email.text == "Chère collègue, la réunion a lieu à Zürich.\nGrüße\n"
    assert email.html is None
    assert email.message_id == "20240101.1234@mail.example.org"
    assert email.content_type == "text/plain"
    assert email.attachments == ()


def test_shift_jis_body_and_iso_2022_jp_subject() -> None:
    email = sample("shift-jis.eml")
    assert email.subject == "会議のお知らせ"
    assert email.text == "こんにちは、世界。①番の資料です。\n"  # ① is a Windows extension
    assert email.from_name == "Yamada Taro"
    assert email.from_address == "taro@example.jp"


def test_html_with_an_inline_image_and_an_rfc_2231_attachment_name() -> None:
    email = sample("inline-image.eml")
    assert email.text == "Here is the photo."
    assert email.html == (
        '<p>Here is the photo: <img src="cid:photo.001@example.com" alt="photo"></p>'
    )
    assert email.content_type == "multipart/mixed"
    photo, pdf = email.attachments
    assert photo.filename == "photo.png"
    assert photo.content_type == "image/png"
    assert photo.inline is True
    assert photo.content_id == "photo.001@example.com"
    assert photo.data is not None
    assert photo.data.startswith(b"\x89PNG")
    assert photo.size == len(photo.data)
    assert photo.sha256 == hashlib.sha256(photo.data).hexdigest()
    assert pdf.filename == "Zusammenfassung über €.pdf"
    assert pdf.content_type == "application/pdf"
    assert pdf.inline is False
    assert pdf.content_id is None
    assert pdf.data == b"%PDF-1.4 fake"


def test_a_forwarded_message_is_one_attachment_of_its_bytes() -> None:
    email = sample("forwarded.eml")
    assert email.text == "See the forwarded message."  # not the inner body
    (forwarded,) = email.attachments  # the inner attachment is not walked into
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename == "Quarterly figures Q3-Q4.eml"  # no "/" in a display name
    assert forwarded.data is not None
    inner = email_parser().parsebytes(forwarded.data)
    assert inner["Subject"] == "Quarterly figures Q3/Q4"
    assert inner["Message-ID"] == "<inner-1@example.net>"
    assert b"Inner body, not the post body." in forwarded.data
    assert b'filename="figures.xls"' in forwarded.data
    assert forwarded.sha256 == hashlib.sha256(forwarded.data).hexdigest()


def email_parser() -> email.parser.BytesParser:
    return email.parser.BytesParser()


def test_a_forwarded_message_without_subject_gets_a_generic_name() -> None:
    inner = EmailMessage()
    inner["From"] = "carol@example.net"
    inner.set_content("no subject here")
    outer = simple("see attached")
    outer.add_attachment(inner)
    (forwarded,) = parse(outer).attachments
    assert forwarded.filename == "forwarded-message.eml"


def test_html_only_mail_gets_a_text_body() -> None:
    email = sample("html-only.eml")
    assert email.content_type == "text/html"
    assert email.text == "Deals & offers\n\nCafé crème \u2013 50% off\n\nOne\nTwo"
    assert email.html is not None
    assert "<script>" in email.html  # as received: sanitising is the service's job
    assert email.header("list-id") == "Weekly deals <deals.shop.example>"


def test_a_bogus_charset_degrades_to_replacement_characters() -> None:
    email = sample("bogus-charset.eml")
    assert email.text == "Caf\ufffd au lait \ufffd\ufffd\n"
    assert email.subject == "Caf\ufffd ok"


def test_hostile_attachment_names() -> None:
    email = sample("hostile-names.eml")
    assert email.text == "body"
    names = [a.filename for a in email.attachments]
    assert names == [
        "passwd",  # "../../etc/passwd"
        "invoicegnp.exe",  # the right-to-left override is gone
        "attachment-3.png",  # no name: generated from the content type
        "Bericht über die Kosten.docx",  # RFC 2047 inside the quoted filename
    ]
    assert email.attachments[0].content_type == "text/plain"
    assert email.attachments[0].data == b"root:x:0:0"


def test_crlf_and_lf_samples_parse_alike() -> None:
    raw = (SAMPLES / "inline-image.eml").read_bytes()
    crlf, lf = parse(raw), parse(raw.replace(b"\r\n", b"\n"))
    assert (crlf.text, crlf.html, crlf.subject) == (lf.text, lf.html, lf.subject)
    assert [a.sha256 for a in crlf.attachments] == [a.sha256 for a in lf.attachments]


# --- envelope, identity and headers -------------------------------------------------------------


def test_envelope_and_provider_fields_pass_through() -> None:
    raw = simple().as_bytes()
    email = parse(
        raw,
        provider="mailgun",
        recipients=("a@in.example.com", "b@in.example.com"),
        envelope_from="bounce@example.org",
        spf="pass",
        dkim="{@example.com : pass}",
        event_id="token-1",
    )
    assert email.provider == "mailgun"
    assert email.recipients == ("a@in.example.com", "b@in.example.com")
    assert email.envelope_from == "bounce@example.org"
    assert (email.spf, email.dkim, email.event_id) == ("pass", "{@example.com : pass}", "token-1")
    assert email.size_bytes == len(raw)


@pytest.mark.parametrize("sender", [None, "", "<>", " <> "])
def test_a_null_envelope_sender_is_none(sender: str | None) -> None:
    assert parse(simple(), envelope_from=sender).envelope_from is None


def test_headers_are_kept_in_order_lower_case_and_decoded() -> None:
    raw = (
        b"Received: from a\r\n by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"Received: from c by d\r\n"
        b"From: a@example.com\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"X-Raw-8bit: caf\xc3\xa9\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"\r\nbody"
    )
    email = parse(raw)
    assert email.headers == (
        ("received", "from a by b; Mon, 1 Jan 2024 00:00:00 +0000"),
        ("received", "from c by d"),
        ("from", "a@example.com"),
        ("subject", "Grüße"),
        ("x-raw-8bit", "café"),
        ("auto-submitted", "auto-replied"),
    )
    assert email.header("Auto-Submitted") == "auto-replied"


def test_headers_that_the_stdlib_cannot_parse_are_kept_raw() -> None:
    raw = b"From: a@example.com\r\nMessage-ID: <<<>>>\r\nX-Null: a\x00b\r\n\r\nbody"
    email = parse(raw)
    assert email.header("message-id") == "<<<>>>"  # policy.default raises IndexError on it
    assert email.message_id is None
    assert email.header("x-null") == "ab"


def test_nul_characters_are_removed_from_bodies() -> None:
    raw = b"Content-Type: text/plain; charset=utf-16-le\r\n\r\n" + "a\x00b".encode("utf-16-le")
    assert parse(raw).text == "ab"
    assert parse(b"Subject: x\r\n\r\nnul\x00here").text == "nulhere"


@pytest.mark.parametrize(
    ("value", "address", "name"),
    [
        ("alice@Example.COM", "alice@example.com", None),
        ("Alice <Alice@Example.COM>", "Alice@example.com", "Alice"),
        ('"Doe, John" <john@example.com>', "john@example.com", "Doe, John"),
        ("=?utf-8?q?Doe=2C_John?= <john@example.com>", "john@example.com", "Doe, John"),
        ("=?iso-8859-1?Q?J=F6rg?= <j@example.de>", "j@example.de", "Jörg"),
        ("john@example.com (John Doe)", "john@example.com", None),
        ("<john@example.com>", "john@example.com", None),
        ("Bad\u202e Name <x@example.com>", "x@example.com", "Bad Name"),
        ("First <a@example.com>, Second <b@example.com>", "a@example.com", "First"),
        ("undisclosed-recipients:;", None, None),
        ("not an address", None, None),
        ("<>", None, None),
        ('"\\', None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_parse_from(value: str | None, address: str | None, name: str | None) -> None:
    assert parse_from(value) == (address, name)


def test_a_from_that_breaks_the_stdlib_parser_falls_back() -> None:
    # 2,000 nested comments: a RecursionError in policy.default's address parser.
    assert parse_from("a@example.com " + "(" * 2000) == ("a@example.com", None)


def test_a_very_long_from_is_read_in_linear_time() -> None:
    value = "x " * 100_000 + "<sender@example.com>"
    address, name = parse_from(value)
    assert address == "sender@example.com"
    assert name is not None
    assert len(name) <= 400


def test_a_broken_from_header_gives_no_address() -> None:
    email = parse(b"From: ((((\r\nSubject: s\r\n\r\nbody")
    assert email.from_address is None
    assert email.from_name is None


def test_a_missing_from_subject_and_message_id() -> None:
    email = parse(b"To: x@example.com\r\n\r\nbody")
    assert (email.from_address, email.from_name, email.subject, email.message_id) == (
        None,
        None,
        "",
        None,
    )
    assert email.text == "body"


def test_the_subject_is_plain_text() -> None:
    raw = b"Subject: =?utf-8?q?a=0Db=07c?= \xe2\x80\xae evil\r\n  folded\r\n\r\nbody"
    assert parse(raw).subject == "a bc evil folded"  # CR is a line break: a space


def test_a_long_subject_is_cut() -> None:
    assert len(parse(simple(Subject="x" * 5000)).subject) == 998


def test_message_id_without_angle_brackets() -> None:
    assert parse(simple(Message_ID="<abc.123@example.com>")).message_id == "abc.123@example.com"
    assert parse(b"Message-ID:  bare-id@example.com \r\n\r\nx").message_id == "bare-id@example.com"


def test_a_delivery_report_keeps_its_content_type() -> None:
    raw = (
        b"From: MAILER-DAEMON@example.com\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n"
        b"--r\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; x@example.com\r\nAction: failed\r\n\r\n"
        b"--r--\r\n"
    )
    email = parse(raw)
    assert email.content_type == "multipart/report"
    assert email.text == "Delivery failed."  # the last line break belongs to the boundary
    (status,) = email.attachments
    assert status.content_type == "message/delivery-status"
    assert status.data is not None
    assert b"Action: failed" in status.data


# --- encoded words and charsets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("plain", "plain"),
        ("=?utf-8?B?SGVsbG8g?= =?utf-8?B?V29ybGQ=?=", "Hello World"),  # the gap is dropped
        ("=?iso-8859-1?Q?caf=E9_au?= lait", "café au lait"),
        ("a =?utf-8?q?b?= c", "a b c"),
        ("=?UTF-8?Q?=E2=82?= =?UTF-8?Q?=AC?=", "€"),  # a character split across two words
        ("=?utf-8?b?w6k=?=\r\n =?iso-8859-1?q?=E9?=", "éé"),
        ("=?utf-8*en?q?English?=", "English"),  # RFC 2231 language
        ("=?utf-8?B?!!notbase64?=", "=?utf-8?B?!!notbase64?="),
        ("=?x-unknown?q?caf=E9?=", "caf\ufffd"),
        ("=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
        ("caf\udcc3\udca9", "café"),  # raw 8-bit UTF-8 kept by the parser as surrogates
    ],
)
def test_decode_header(value: str, decoded: str) -> None:
    assert decode_header(value) == decoded


@pytest.mark.parametrize(
    ("data", "charset", "text"),
    [
        ("café".encode("latin-1"), "ISO-8859-1", "café"),
        (b"\x93quoted\x94", "iso-8859-1", "\u201cquoted\u201d"),  # what Windows means by it
        ("日本語".encode("shift_jis"), "Shift_JIS", "日本語"),
        ("日本語".encode("euc-jp"), "euc-jp", "日本語"),
        ("中文".encode("gbk"), "gb2312", "中文"),
        ("привет".encode("koi8-r"), "koi8-r", "привет"),
        (b"ok", None, "ok"),
        (b"caf\xe9", "utf-8", "caf\ufffd"),  # mislabelled: replacement, not an error
        (b"caf\xe9", "x-unknown", "caf\ufffd"),
        (b"caf\xe9", '"bogus"', "caf\ufffd"),
        (b"hello", "zlib_codec", "hello"),  # not a text encoding
        (b"\\x41", "unicode_escape", "\\x41"),  # refused: not a mail charset
        (b"xn--abc", "punycode", "xn--abc"),
        (b"hi", "utf\x00-8", "hi"),
    ],
)
def test_decode_bytes(data: bytes, charset: str | None, text: str) -> None:
    assert decode_bytes(data, charset) == text


# --- bodies ---------------------------------------------------------------------------------------


def test_text_and_html_alternatives() -> None:
    message = simple("plain version")
    message.add_alternative("<p>html version</p>", subtype="html")
    email = parse(message)
    assert email.text == "plain version\n"
    assert email.html == "<p>html version</p>\n"
    assert email.attachments == ()


def test_a_body_split_around_an_inline_image_is_joined() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
        b"--m\r\nContent-Type: text/plain\r\n\r\nbefore\r\n"
        b"--m\r\nContent-Type: image/jpeg\r\nContent-Disposition: inline\r\n\r\njpeg\r\n"
        b"--m\r\nContent-Type: text/plain\r\n\r\nafter\r\n--m--\r\n"
    )
    email = parse(raw)
    assert email.text == "before\nafter"
    (image,) = email.attachments
    assert image.filename == "attachment-1.jpg"
    assert image.inline is False  # no Content-ID: nothing can reference it


def test_a_second_alternative_text_is_not_appended() -> None:
    raw = (
        b"Content-Type: multipart/alternative; boundary=a\r\n\r\n"
        b"--a\r\nContent-Type: text/plain\r\n\r\none\r\n"
        b"--a\r\nContent-Type: text/plain\r\n\r\none again\r\n--a--\r\n"
    )
    assert parse(raw).text == "one"


def test_a_text_attachment_is_not_the_body() -> None:
    message = simple("the body")
    message.add_attachment("notes", filename="notes.txt")
    message.add_attachment(b"a,b", maintype="text", subtype="csv", disposition="attachment")
    email = parse(message)
    assert email.text == "the body\n"
    assert [a.filename for a in email.attachments] == ["notes.txt", "attachment-2.csv"]


def test_a_mail_that_is_only_an_attachment() -> None:
    message = EmailMessage()
    message["From"] = "scanner@example.com"
    message.set_content(b"%PDF", maintype="application", subtype="pdf", filename="scan.pdf")
    email = parse(message)
    assert email.text is None
    assert email.html is None
    assert [(a.filename, a.content_type) for a in email.attachments] == [
        ("scan.pdf", "application/pdf")
    ]


def test_an_inline_part_with_a_content_id_and_no_disposition() -> None:
    raw = (
        b"Content-Type: multipart/related; boundary=r\r\n\r\n"
        b'--r\r\nContent-Type: text/html\r\n\r\n<img src="cid:logo">\r\n'
        b"--r\r\nContent-Type: image/gif\r\nContent-ID: < logo >\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nR0lGODlh\r\n--r--\r\n"
    )
    email = parse(raw)
    (logo,) = email.attachments
    assert (logo.inline, logo.content_id, logo.filename) == (True, "logo", "attachment-1.gif")
    assert logo.data == b"GIF89a"
    assert email.text == ""  # from the HTML, which has no text


def test_an_attachment_with_a_content_id_stays_an_attachment() -> None:
    message = simple()
    message.add_attachment(b"x", maintype="image", subtype="png", filename="a.png", cid="<c1>")
    (attachment,) = parse(message).attachments
    assert (attachment.inline, attachment.content_id) == (False, "c1")


# --- attachment size ----------------------------------------------------------------------------


def test_an_attachment_over_the_limit_is_described_not_kept() -> None:
    message = simple()
    message.add_attachment(b"x" * 1001, maintype="application", subtype="zip", filename="big.zip")
    message.add_attachment(b"y" * 1000, maintype="application", subtype="zip", filename="ok.zip")
    attachments = by_name(parse(message, max_attachment_bytes=1000))
    big, ok = attachments["big.zip"], attachments["ok.zip"]
    assert (big.kept, big.data, big.sha256, big.size) == (False, None, None, 1001)
    assert (ok.kept, ok.data, ok.size) == (True, b"y" * 1000, 1000)
    assert ok.sha256 == hashlib.sha256(b"y" * 1000).hexdigest()


def test_a_forwarded_message_over_the_limit_is_not_kept() -> None:
    (forwarded,) = sample("forwarded.eml", max_attachment_bytes=10).attachments
    assert forwarded.kept is False
    assert forwarded.size > 10


# --- hostile input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"garbage without headers",
        bytes(range(256)) * 20,
        b"\x00" * 100,
        b"Content-Type: multipart/mixed\r\n\r\nno boundary",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x",
        b"Content-Type: text/plain; charset=\x00\r\n\r\nx",
        b"Content-Type: text/plain; charset=punycode\r\n\r\n\xc3\xa9",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"Content-Type: /\r\nContent-Disposition: =\r\n\r\nx",
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644\r\n",
        b"Content-Disposition: attachment; filename*=zlib_codec''%41\r\n\r\nx",
        b"Content-Type: multipart/mixed; boundary*=utf-8''%C3%A9\r\n\r\n--\xc3\xa9\r\n\r\nx",
        b"Content-Type: message/rfc822\r\n\r\n"
        b"Content-Type: multipart/mixed; boundary*=utf-8''%FF\r\n\r\n--\xff\r\n\r\nx",
    ],
)
def test_garbage_still_yields_a_message(raw: bytes) -> None:
    email = parse(raw)
    assert email.size_bytes == len(raw)


def test_a_mime_bomb_is_refused_before_parsing() -> None:
    bomb = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(5000)
    )
    with pytest.raises(MessageTooComplex):
        parse(bomb)


def test_a_parser_failure_is_a_malformed_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(email.parser.BytesParser, "parsebytes", fail)
    with pytest.raises(MalformedMessage, match="ValueError"):
        parse(simple())


def test_a_parser_recursion_is_too_complex(monkeypatch: pytest.MonkeyPatch) -> None:
    def recurse(*args: object, **kwargs: object) -> None:
        raise RecursionError

    monkeypatch.setattr(email.parser.BytesParser, "parsebytes", recurse)
    with pytest.raises(MessageTooComplex):
        parse(simple())


@pytest.mark.parametrize(
    "value",
    [
        "Alice Example <alice@example.org>",
        "alice@Example.ORG",
        " Bob <b.c@d.e> ",
        "\tA1 B2 C3\t<x_y%z+tag@sub.Example-Mail.org>",
        "<only@angle.example>",
        "a.b.c@d",
    ],
)
def test_plain_from_lines_read_directly_as_the_stdlib_reads_them(value: str) -> None:
    from app.inbound.message import _SIMPLE_FROM, _parse_from_stdlib

    assert _SIMPLE_FROM.fullmatch(value) is not None  # the direct reading applies
    assert parse_from(value) == _parse_from_stdlib(value)
    assert parse_from(value)[0] is not None
