"""Real mail read as mail clients read it: the shapes found in public corpora of real and
malformed mail (written here as minimal messages of our own), through every endpoint that takes
a raw message, read back through the API."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.inbound.message import enriched_to_text
from tests.auth import bearer
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import basic, mailgun_form, sign_mailgun

RAW_ENDPOINTS = ("mime", "mailgun/mime", "sendgrid")
RAPPORT = "Rapport \u00e9t\u00e9.pdf"


async def send_raw(
    client: httpx.AsyncClient, endpoint: str, recipient: str, raw: bytes
) -> httpx.Response:
    """``raw`` as each endpoint that takes a whole message receives it."""
    if endpoint == "mime":
        return await client.post(
            "/inbound/mime",
            params={"recipient": recipient, "sender": "alice@example.org"},
            content=raw,
            headers={**basic(), "Content-Type": "message/rfc822"},
        )
    if endpoint == "mailgun/mime":
        fields = {"recipient": recipient, "sender": "alice@example.org", **sign_mailgun()}
        return await client.post(
            "/inbound/mailgun/mime", data=fields, files={"body-mime": (None, raw, None)}
        )
    envelope = json.dumps({"to": [recipient], "from": "alice@example.org"})
    return await client.post(
        "/inbound/sendgrid",
        data={"envelope": envelope},
        files={"email": (None, raw, None)},
        headers=basic(),
    )


async def one_post(
    client: httpx.AsyncClient, inbox: Inbox, endpoint: str, raw: bytes
) -> dict[str, Any]:
    r = await send_raw(client, endpoint, inbox.address, raw)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted", r.text
    [post] = await inbox.posts()
    return post


def message(content_type: str, body: str, *, headers: str = "") -> bytes:
    return (
        "From: Alice Example <alice@example.org>\r\n"
        "To: group@in.example.com\r\n"
        "Subject: Real mail\r\n"
        "Message-ID: <real-mail@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        f"{headers}"
        f"Content-Type: {content_type}\r\n"
        "\r\n"
        f"{body}"
    ).encode()


@pytest.mark.parametrize("endpoint", RAW_ENDPOINTS)
class TestBodiesMailClientsShow:
    async def test_an_unquoted_outlook_boundary_with_equals_signs(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        boundary = "----=_NextPart_000_0012_01DA2B3C.4D5E6F70"
        inner = "----=_NextPart_001_0013_01DA2B3C.4D5E6F70"
        raw = message(
            f"multipart/mixed; boundary={boundary}",
            "This is a multi-part message in MIME format.\r\n\r\n"
            f"--{boundary}\r\n"
            f"Content-Type: multipart/alternative; boundary={inner}\r\n\r\n"
            f"--{inner}\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Minutes attached.\r\n"
            f"--{inner}\r\n"
            "Content-Type: text/html; charset=us-ascii\r\n\r\n"
            "<p>Minutes <b>attached</b>.</p>\r\n"
            f"--{inner}--\r\n\r\n"
            f"--{boundary}\r\n"
            "Content-Type: application/pdf; name=minutes.pdf\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=minutes.pdf\r\n\r\n"
            "JVBERi0xLjQKJcfsj6IK\r\n"
            f"--{boundary}--\r\n",
        )
        post = await one_post(client, inbox, endpoint, raw)
        assert post["text"].strip() == "Minutes attached."
        assert "<b>attached</b>" in post["html"]
        [attachment] = post["attachments"]
        assert (attachment["filename"], attachment["content_type"]) == (
            "minutes.pdf",
            "application/pdf",
        )
        assert await inbox.download(attachment) == b"%PDF-1.4\n%\xc7\xec\x8f\xa2\n"

    @pytest.mark.parametrize(
        "content_type",
        ["multipart/mixed", 'multipart/mixed; boundary="never-seen"'],
        ids=["no-boundary", "boundary-lines-absent"],
    )
    async def test_a_multipart_whose_parts_cannot_be_found_is_text(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str, content_type: str
    ) -> None:
        raw = message(content_type, "Meeting moved to Thursday.\r\nSee you there.\r\n")
        post = await one_post(client, inbox, endpoint, raw)
        assert post["text"] == "Meeting moved to Thursday.\nSee you there.\n"
        assert post["attachments"] == []

    @pytest.mark.parametrize(
        "tail",
        [
            "Content-Type: application/octet-stream\r\n\r\n",
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            "\r\nJVBE",
            "Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K",
        ],
        ids=["empty", "three-bytes", "six-bytes"],
    )
    async def test_a_truncated_message_makes_no_junk_attachment(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str, tail: str
    ) -> None:
        raw = message(
            'multipart/mixed; boundary="cut"',
            "--cut\r\nContent-Type: text/plain\r\n\r\nThe rest was lost.\r\n--cut\r\n" + tail,
        )
        post = await one_post(client, inbox, endpoint, raw)
        assert post["text"] == "The rest was lost."
        assert post["attachments"] == []
        assert post["omitted_attachments"] == []

    async def test_a_named_file_cut_short_is_still_the_senders_file(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        raw = message(
            'multipart/mixed; boundary="cut"',
            "--cut\r\nContent-Type: text/plain\r\n\r\nHalf a file.\r\n--cut\r\n"
            "Content-Type: application/pdf\r\nContent-Disposition: attachment; "
            'filename="report.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0x',
        )
        post = await one_post(client, inbox, endpoint, raw)
        [attachment] = post["attachments"]
        assert (attachment["filename"], attachment["size"]) == ("report.pdf", 6)

    async def test_inline_text_parts_with_file_names_give_the_body(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        raw = message(
            'multipart/mixed; boundary="b"',
            "--b\r\n"
            'Content-Type: text/plain; charset=utf-8; name="message.txt"\r\n'
            'Content-Disposition: inline; filename="message.txt"\r\n\r\n'
            "Caf\u00e9 at ten.\r\n"
            "--b\r\n"
            'Content-Type: text/plain; name="notes.txt"\r\n'
            'Content-Disposition: inline; filename="notes.txt"\r\n\r\n'
            "Bring the notes.\r\n"
            "--b--\r\n",
        )
        post = await one_post(client, inbox, endpoint, raw)
        assert post["text"] == "Caf\u00e9 at ten."
        assert [a["filename"] for a in post["attachments"]] == ["notes.txt"]

    async def test_a_named_text_part_beside_a_body_stays_an_attachment(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        raw = message(
            'multipart/mixed; boundary="b"',
            "--b\r\nContent-Type: text/plain\r\n\r\nSee the notes.\r\n--b\r\n"
            'Content-Type: text/plain; name="notes.txt"\r\n'
            'Content-Disposition: inline; filename="notes.txt"\r\n\r\n'
            "The notes.\r\n--b--\r\n",
        )
        post = await one_post(client, inbox, endpoint, raw)
        assert post["text"] == "See the notes."
        assert [a["filename"] for a in post["attachments"]] == ["notes.txt"]

    async def test_text_enriched_is_text(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        raw = message(
            'multipart/alternative; boundary="b"',
            "--b\r\nContent-Type: text/enriched\r\n\r\n"
            "<bold>Agenda</bold> for <<monday>\r\n\r\n"
            "<color><param>red</param>Room 4</color>\r\n--b--\r\n",
        )
        post = await one_post(client, inbox, endpoint, raw)
        assert post["text"] == "Agenda for <monday>\nRoom 4"
        assert post["attachments"] == []

    async def test_a_text_enriched_alternative_repeats_the_plain_text(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        raw = message(
            'multipart/alternative; boundary="b"',
            "--b\r\nContent-Type: text/plain\r\n\r\nAgenda\r\n"
            "--b\r\nContent-Type: text/enriched\r\n\r\n<bold>Agenda</bold>\r\n--b--\r\n",
        )
        post = await one_post(client, inbox, endpoint, raw)
        assert post["text"] == "Agenda"
        assert post["attachments"] == []

    async def test_an_external_body_is_listed_and_never_stored(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        raw = message(
            'multipart/mixed; boundary="b"',
            "--b\r\nContent-Type: text/plain\r\n\r\nThe image is on the server.\r\n--b\r\n"
            "Content-Type: message/external-body; access-type=URL; size=1048576;\r\n"
            ' URL="http://files.example.org/dist/image.iso"\r\n\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
            "--b\r\n"
            'Content-Type: message/external-body; access-type=anon-ftp; site="ftp.example.org";'
            ' directory="pub"; name="notes.txt"\r\n\r\n'
            "Content-Type: text/plain\r\n\r\n"
            "--b--\r\n",
        )
        post = await one_post(client, inbox, endpoint, raw)
        assert post["attachments"] == []
        assert post["omitted_attachments"] == [
            {"filename": "image.iso", "size": 1048576, "reason": "external_body"},
            {"filename": "notes.txt", "size": None, "reason": "external_body"},
        ]


@pytest.mark.parametrize("endpoint", RAW_ENDPOINTS)
class TestNamesTheSenderMeant:
    @pytest.mark.parametrize(
        ("disposition", "expected"),
        [
            (
                "attachment; filename==?utf-8?B?UmFwcG9ydCDDqXTDqS5wZGY=?=",
                RAPPORT,
            ),
            (
                'attachment; filename="=?utf-8?Q?Rapport_=C3=A9t=C3=A9.pdf?="',
                RAPPORT,
            ),
            ("attachment; filename=This is a test.txt", "This is a test.txt"),
            (
                "attachment; filename*=utf-8''Rapport%20%C3%A9t%C3%A9.pdf",
                RAPPORT,
            ),
            ('attachment; filename="a;b.txt"', "a;b.txt"),
        ],
        ids=[
            "encoded-word-unquoted",
            "encoded-word-quoted",
            "spaces-unquoted",
            "rfc2231",
            "semicolon",
        ],
    )
    async def test_file_names(
        self,
        client: httpx.AsyncClient,
        inbox: Inbox,
        endpoint: str,
        disposition: str,
        expected: str,
    ) -> None:
        raw = message(
            'multipart/mixed; boundary="b"',
            "--b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n--b\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Disposition: {disposition}\r\n\r\ndata\r\n--b--\r\n",
        )
        post = await one_post(client, inbox, endpoint, raw)
        [attachment] = post["attachments"]
        assert attachment["filename"] == expected

    async def test_an_unquoted_encoded_word_in_a_content_type_name(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        raw = message(
            'multipart/mixed; boundary="b"',
            "--b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n--b\r\n"
            "Content-Type: application/pdf; name==?iso-8859-1?Q?r=E9sum=E9.pdf?=\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0x\r\n--b--\r\n",
        )
        post = await one_post(client, inbox, endpoint, raw)
        [attachment] = post["attachments"]
        assert attachment["filename"] == "r\u00e9sum\u00e9.pdf"


class TestMailgunStoredAttachments:
    async def test_attachments_given_by_url_are_listed_never_fetched(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        files = [
            {
                "url": "https://storage.eu.mailgun.net/v3/domains/d/messages/k/attachments/0",
                "content-type": "application/pdf",
                "name": "agenda.pdf",
                "size": 48213,
            },
            {"url": "https://storage.example/a/1", "content-type": "image/png", "name": "../x.png"},
        ]
        fields = mailgun_form(inbox.address, attachments=json.dumps(files))
        r = await client.post("/inbound/mailgun", data=fields)
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        assert post["attachments"] == []
        assert post["omitted_attachments"] == [
            {"filename": "agenda.pdf", "size": 48213, "reason": "not_fetched"},
            {"filename": "x.png", "size": None, "reason": "not_fetched"},
        ]

    @pytest.mark.parametrize("value", ["not json", '{"url": "x"}', "[1, null, []]"])
    async def test_an_attachments_field_that_is_no_list_of_files_is_malformed(
        self, client: httpx.AsyncClient, inbox: Inbox, value: str
    ) -> None:
        r = await client.post(
            "/inbound/mailgun", data=mailgun_form(inbox.address, attachments=value)
        )
        assert r.status_code == 406, r.text
        assert r.json()["reason"] == "malformed_message"
        assert await inbox.posts() == []


def test_enriched_text_rules() -> None:
    assert enriched_to_text("a\nb") == "a b"
    assert enriched_to_text("a\n\n\nb") == "a\n\nb"
    assert enriched_to_text("<nofill>a\nb</nofill>") == "a\nb"
    assert enriched_to_text("<<x> <param>gone</param>kept") == "<x> kept"
    assert enriched_to_text("<param>unclosed") == ""
    assert enriched_to_text("<" * 100_000) == "<" * 50_000


async def test_a_replayed_mail_keeps_what_it_omitted(
    client: httpx.AsyncClient, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.inbound.rows as rows

    files = [{"url": "https://storage.example/a/0", "name": "agenda.pdf", "size": 10}]
    fields = mailgun_form(inbox.address, attachments=json.dumps(files))
    monkeypatch.setattr(rows, "sanitize_html", lambda html: 1 / 0)
    r = await client.post("/inbound/mailgun", data=fields)
    assert (r.status_code, r.json()["status"]) == (500, "failed")
    monkeypatch.undo()
    [delivery_id] = r.json()["delivery_ids"]
    r = await client.post(f"/v1/deliveries/{delivery_id}/replay", headers=bearer("root"))
    assert r.json()["status"] == "accepted", r.text
    [post] = await inbox.posts()
    assert post["omitted_attachments"] == [
        {"filename": "agenda.pdf", "size": 10, "reason": "not_fetched"}
    ]


@pytest.mark.parametrize(
    "parameter",
    ['boundary="quoted=="', "boundary*=us-ascii''rfc%3D2231", "boundary=plain"],
)
async def test_other_spellings_of_a_boundary_still_split_the_parts(
    client: httpx.AsyncClient, inbox: Inbox, parameter: str
) -> None:
    boundary = parameter.split("=", 1)[1].strip('"').replace("us-ascii''", "").replace("%3D", "=")
    raw = message(
        f"multipart/mixed; {parameter}",
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nBody.\r\n--{boundary}\r\n"
        "Content-Type: image/png\r\nContent-Disposition: attachment; filename=dot.png\r\n\r\n"
        f"png\r\n--{boundary}--\r\n",
    )
    post = await one_post(client, inbox, "mime", raw)
    assert post["text"] == "Body."
    assert [a["filename"] for a in post["attachments"]] == ["dot.png"]
