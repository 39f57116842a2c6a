"""One charset decoder for every inbound path; codecs that are no mail charset are refused, and
large forms are parsed off the event loop."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.inbound import charsets
from app.inbound.multipart import read_form
from app.inbound.providers import base, mailgun, sendgrid
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import basic, mailgun_form, sendgrid_form

# "bücher" in punycode: decoding it with the codec would give "bücher".
PUNY = b"bcher-kva"


@pytest.mark.parametrize("label", sorted(charsets.REFUSED_CODECS - {"mbcs", "oem"}))
def test_refused_codecs_decode_as_utf_8(label: str) -> None:
    assert charsets.decode_bytes(PUNY + b"\\x41", label) == "bcher-kva\\x41"
    assert charsets.decode_bytes(PUNY, label.upper().replace("_", "-")) == "bcher-kva"


class TestSendGridCharsets:
    @pytest.mark.parametrize("label", ["punycode", "PUNYCODE", " idna ", "unicode_escape"])
    async def test_a_refused_codec_named_in_charsets_decodes_as_utf_8(
        self, client: httpx.AsyncClient, inbox: Inbox, label: str
    ) -> None:
        fields = sendgrid_form(inbox.address, text=(PUNY + b"\\x41").decode())
        fields["charsets"] = json.dumps({"text": label, "subject": label, "from": "UTF-8"})
        r = await client.post("/inbound/sendgrid", data=fields, headers=basic())
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        assert post["text"] == "bcher-kva\\x41"
        assert post["subject"] == "Hello"

    async def test_a_widened_charset_is_the_same_as_for_mime_parts(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        fields = {k: (None, v.encode(), None) for k, v in sendgrid_form(inbox.address).items()}
        fields["text"] = (None, b"\x93quoted\x94", None)
        fields["charsets"] = (None, json.dumps({"text": "iso-8859-1"}).encode(), None)
        r = await client.post("/inbound/sendgrid", files=fields, headers=basic())
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        assert post["text"] == "\u201cquoted\u201d"  # cp1252, as decode_bytes reads it


async def test_a_refused_codec_in_an_rfc_2231_filename_decodes_as_utf_8(tmp_path: Path) -> None:
    body = (
        b'--B\r\nContent-Disposition: form-data; name="attachment-1"; '
        b"filename*=punycode''" + PUNY + b"\r\n\r\nx\r\n--B--\r\n"
    )

    async def stream() -> Any:
        yield body

    form = await read_form(
        stream(),
        "multipart/form-data; boundary=B",
        spool_root=tmp_path,
        max_total=1 << 20,
        max_file=1 << 20,
    )
    try:
        assert [p.filename for p in form.files()] == ["bcher-kva"]
    finally:
        form.cleanup()


class TestLargeFormsAreParsedOffTheEventLoop:
    @pytest.fixture
    def threads(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        seen: list[str] = []
        for module in (mailgun, sendgrid):
            original = module.parse_fields

            def recording(*args: Any, _original: Any = original) -> Any:
                seen.append(threading.current_thread().name)
                return _original(*args)

            monkeypatch.setattr(module, "parse_fields", recording)
        return seen

    @pytest.mark.parametrize("provider", ["mailgun", "sendgrid"])
    async def test_small_on_the_loop_large_in_a_worker_thread(
        self, client: httpx.AsyncClient, inbox: Inbox, threads: list[str], provider: str
    ) -> None:
        main = threading.current_thread().name
        for size in (1000, base.INLINE_FIELD_BYTES + 1):
            text = "x" * size
            if provider == "mailgun":
                form = mailgun_form(inbox.address, text=text, html=None)
                r = await client.post("/inbound/mailgun", data=form)
            else:
                form = sendgrid_form(inbox.address, text=text)
                r = await client.post("/inbound/sendgrid", data=form, headers=basic())
            assert r.status_code == 200, r.text
        assert threads[0] == main
        assert threads[1] != main
        assert len(await inbox.posts()) == 2
