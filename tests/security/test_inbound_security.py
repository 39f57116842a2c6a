"""Hostile inbound mail: Mailgun signatures and token replay, an XSS corpus, remote references that
must never be fetched, and routing on the envelope only.

tests/inbound/test_router.py (TestMailgun, TestHostileContent) checks the basic cases; this module
extends them: the signature window's edges, every way a signature can be wrong on both Mailgun
endpoints, replay to other recipients and platforms, and a corpus through Postmark and raw MIME
in the body, the subject, the sender's name and the attachments' names and types.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import re
import threading
import time
import unicodedata
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import nh3
import pytest

from app.config import Settings
from app.inbound.multipart import MAX_FIELD_NAME_BYTES, MAX_FORM_PARTS, MAX_UNAUTHENTICATED_BYTES
from app.main import create_app
from tests.auth import OPERATOR, bearer
from tests.conftest import make_settings
from tests.factories import World
from tests.inbound.payloads import (
    INBOUND_PASSWORD,
    INBOUND_USER,
    MAILGUN_KEY,
    basic,
    mailgun_form,
    mailgun_real_order,
    mime_message,
    postmark_attachment,
    postmark_json,
    sign_mailgun,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
HOUR = 3600


def inbound_settings(database_url: str, blob_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mailgun_signing_key": MAILGUN_KEY,
        "inbound_username": INBOUND_USER,
        "inbound_password": INBOUND_PASSWORD,
        "rate_limits": "",
        **overrides,
    }
    return make_settings(database_url, blob_dir, **values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return inbound_settings(database_url, tmp_path / "blobs")


@dataclass
class Box:
    """One integration of a platform, and what arrived there."""

    client: httpx.AsyncClient
    platform: str
    group: str
    integration: dict[str, Any]

    @property
    def address(self) -> str:
        return str(self.integration["address"])

    @property
    def admin(self) -> dict[str, str]:
        return bearer("root", self.platform, "admin")

    async def posts(self) -> list[dict[str, Any]]:
        r = await self.client.get(
            f"/v1/groups/{self.group}/posts", params={"limit": 200}, headers=self.admin
        )
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def deliveries(self) -> list[dict[str, Any]]:
        r = await self.client.get(
            f"/v1/integrations/{self.integration['id']}/deliveries",
            params={"limit": 200},
            headers=self.admin,
        )
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items


async def box(
    world: World, platform: str = "p1", title: str = "Newsletter", *, new: bool = True
) -> Box:
    if new:
        await world.platform(platform)
    group = await world.group(platform, f"{title} group")
    integration = await world.integration(group, title, platform)
    return Box(world.client, platform, group, integration)


async def platform_deliveries(client: httpx.AsyncClient, platform: str) -> list[dict[str, Any]]:
    r = await client.get(
        "/v1/deliveries", params={"limit": 200}, headers=bearer("root", platform, "admin")
    )
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def unrouted(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/v1/unrouted-deliveries", params={"limit": 200}, headers=OPERATOR)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def stored_files(settings: Settings) -> list[Path]:
    """Every file in the blob folder: stored objects and spooled leftovers alike."""
    root = Path(settings.blob_dir)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- Mailgun signatures ---------------------------------------------------------------------------


def _hmac(message: str, key: str = MAILGUN_KEY, digest: Any = hashlib.sha256) -> str:
    return hmac.new(key.encode(), message.encode(), digest).hexdigest()


def _signed(timestamp: str, token: str = "a" * 50) -> dict[str, str | None]:
    return {"timestamp": timestamp, "token": token, "signature": _hmac(timestamp + token)}


def bad_signatures() -> dict[str, dict[str, str | None]]:
    """Signature fields (``None``: the field is left out) that must all answer 401."""
    now = str(int(time.time()))
    valid = sign_mailgun()
    ts, token, sig = valid["timestamp"], valid["token"], valid["signature"]
    cases: dict[str, dict[str, str | None]] = {
        "timestamp-absent": {**valid, "timestamp": None},
        "token-absent": {**valid, "token": None},
        "signature-absent": {**valid, "signature": None},
        "all-absent": {"timestamp": None, "token": None, "signature": None},
        "timestamp-changed": {**valid, "timestamp": str(int(ts) + 1)},
        "token-changed": {**valid, "token": token[:-1] + ("0" if token[-1] != "0" else "1")},
        "token-then-timestamp": {**valid, "signature": _hmac(token + ts)},
        "sha1": {**valid, "signature": _hmac(ts + token, digest=hashlib.sha1)},
        "empty-key": {**valid, "signature": _hmac(ts + token, key="")},
        "truncated": {**valid, "signature": sig[:32]},
        "extended": {**valid, "signature": sig + "00"},
        "not-hex": {**valid, "signature": "z" * 64},
        "base64": {
            **valid,
            "signature": base64.b64encode(bytes.fromhex(sig)).decode(),
        },
        "the-key-itself": {**valid, "signature": MAILGUN_KEY},
        "float-timestamp": _signed(now + ".5"),
        "exponent-timestamp": _signed(f"{int(now[:4]) / 1000}e9"),
        "negative-timestamp": _signed("-" + now),
        "zero-timestamp": _signed("0"),
        "huge-timestamp": _signed("9" * 5000),
        "signed-stale": _signed(str(int(now) - 9 * HOUR - 60)),
        "signed-future": _signed(str(int(now) + 6 * 60)),
    }
    return cases


def _with_signature(fields: dict[str, str], signature: dict[str, str | None]) -> dict[str, str]:
    out = {k: v for k, v in fields.items() if k not in {"timestamp", "token", "signature"}}
    return out | {k: v for k, v in signature.items() if v is not None}


async def post_mailgun(
    client: httpx.AsyncClient,
    fields: dict[str, str],
    *,
    mime: bytes | None = None,
    files: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    if mime is not None:
        return await client.post(
            "/inbound/mailgun/mime",
            data=fields,
            files={"body-mime": (None, mime, None)},
            headers=headers,
        )
    return await client.post("/inbound/mailgun", data=fields, files=files, headers=headers)


class TestMailgunSignatures:
    @pytest.mark.parametrize(
        ("offset", "code"),
        [
            pytest.param(-9 * HOUR + 60, 200, id="9h-ago-less-a-minute"),
            pytest.param(-9 * HOUR - 60, 401, id="9h-ago-and-a-minute"),
            pytest.param(4 * 60, 200, id="4-minutes-ahead"),
            pytest.param(6 * 60, 401, id="6-minutes-ahead"),
        ],
    )
    async def test_window_is_9_hours_back_and_5_minutes_ahead(
        self, client: httpx.AsyncClient, world: World, offset: int, code: int
    ) -> None:
        inbox = await box(world)
        signature = sign_mailgun(timestamp=int(time.time()) + offset)
        r = await post_mailgun(client, mailgun_form(inbox.address, signature=signature))
        assert r.status_code == code, r.text
        assert len(await inbox.posts()) == (1 if code == 200 else 0)

    @pytest.mark.parametrize("mime", [False, True], ids=["parsed", "mime"])
    async def test_every_bad_signature_is_401_on_both_endpoints_and_nothing_is_kept(
        self,
        client: httpx.AsyncClient,
        world: World,
        settings: Settings,
        subtests: pytest.Subtests,
        mime: bool,
    ) -> None:
        inbox = await box(world)
        for case, signature in bad_signatures().items():
            with subtests.test(case):
                fields = _with_signature(mailgun_form(inbox.address), signature)
                if mime:
                    r = await post_mailgun(client, fields, mime=mime_message(inbox.address))
                else:  # with an attachment: it is spooled before the signature can be read
                    fields["attachment-count"] = "1"
                    data = b"%PDF-1.4 secret" * 1000
                    files = {"attachment-1": ("report.pdf", data, "application/pdf")}
                    r = await post_mailgun(client, fields, files=files)
                assert r.status_code == 401, r.text
                assert r.headers["content-type"] == "application/problem+json"
                assert r.headers["www-authenticate"].startswith("Mailgun")
                assert await inbox.posts() == []
                assert await platform_deliveries(client, inbox.platform) == []
                assert await unrouted(client) == []
                assert stored_files(settings) == []

    async def test_basic_credentials_or_a_bearer_token_are_no_signature(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        inbox = await box(world)
        fields = _with_signature(mailgun_form(inbox.address), {})
        for headers in (basic(), bearer("root", inbox.platform), OPERATOR):
            r = await post_mailgun(client, fields, headers=headers)
            assert r.status_code == 401, r.text
        assert await unrouted(client) == []
        assert await inbox.posts() == []

    @pytest.mark.parametrize(
        ("content", "content_type"),
        [
            pytest.param(b'{"recipient": "x"}', "application/json", id="json"),
            pytest.param(b"--x\r\nbroken", "multipart/form-data", id="multipart-no-boundary"),
            pytest.param(b"\xff\xfe\x00garbage", "application/octet-stream", id="binary"),
        ],
    )
    async def test_an_unsigned_body_that_is_not_a_form_is_401_and_recorded_nowhere(
        self, client: httpx.AsyncClient, world: World, content: bytes, content_type: str
    ) -> None:
        inbox = await box(world)
        for path in ("/inbound/mailgun", "/inbound/mailgun/mime"):
            r = await client.post(path, content=content, headers={"Content-Type": content_type})
            assert r.status_code == 401, r.text
        assert await unrouted(client) == []
        assert await platform_deliveries(client, inbox.platform) == []


class TestMailgunReplay:
    async def test_a_captured_signature_sent_elsewhere_with_another_body_is_the_first_delivery(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        first_box = await box(world, "p1", "First")
        second_box = await box(world, "p1", "Second", new=False)
        foreign_box = await box(world, "p2", "Foreign")
        signature = sign_mailgun()
        first = await post_mailgun(
            client, mailgun_form(first_box.address, signature=signature, subject="Original")
        )
        assert (first.status_code, first.json()["status"]) == (200, "accepted"), first.text

        forged: dict[str, Any] = {
            "subject": "Forged",
            "text": "Forged",
            "html": "<p>Forged</p>",
            "from_": "CEO <ceo@example.org>",
        }
        replays = [
            post_mailgun(client, mailgun_form(second_box.address, signature=signature, **forged)),
            post_mailgun(client, mailgun_form(foreign_box.address, signature=signature, **forged)),
            post_mailgun(
                client,
                mailgun_form(
                    f"{second_box.address},{foreign_box.address}", signature=signature, **forged
                ),
            ),
            post_mailgun(
                client,
                {"recipient": foreign_box.address, "sender": "ceo@example.org", **signature},
                mime=mime_message(foreign_box.address, subject="Forged", text="Forged"),
            ),
        ]
        answers = [await replay for replay in replays]
        for r in answers:
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "duplicate"
            assert r.json()["post_ids"] == first.json()["post_ids"]

        assert [p["subject"] for p in await first_box.posts()] == ["Original"]
        assert await second_box.posts() == []
        assert await foreign_box.posts() == []
        # Each replay is logged where the token was first used, as that delivery recorded the
        # mail: neither the forged body nor the addresses it names reach anyone's log.
        *duplicates, accepted = await first_box.deliveries()
        assert accepted["id"] == first.json()["delivery_ids"][0]
        assert [[d["id"]] for d in reversed(duplicates)] == [
            r.json()["delivery_ids"] for r in answers
        ]
        for duplicate in duplicates:
            assert duplicate["status"] == "duplicate"
            assert duplicate["post_id"] == accepted["post_id"]
            assert (duplicate["subject"], duplicate["from"]) == ("Original", accepted["from"])
            assert duplicate["envelope_to"] == first_box.address
        assert await second_box.deliveries() == []
        assert await platform_deliveries(client, foreign_box.platform) == []
        assert await unrouted(client) == []

    @pytest.mark.parametrize("first_refusal", ["unknown_recipient", "auto_reply"])
    async def test_a_token_first_refused_stays_refused_whatever_body_comes_with_it(
        self, client: httpx.AsyncClient, world: World, first_refusal: str
    ) -> None:
        inbox = await box(world)
        signature = sign_mailgun()
        if first_refusal == "unknown_recipient":
            first_fields = mailgun_form("nobody.x1@in.example.com", signature=signature)
        else:
            first_fields = mailgun_form(
                inbox.address, signature=signature, headers=[["Auto-Submitted", "auto-replied"]]
            )
        first = await post_mailgun(client, first_fields)
        assert (first.status_code, first.json()["reason"]) == (406, first_refusal), first.text

        clean = mailgun_form(inbox.address, signature=signature, subject="Forged")
        again = await post_mailgun(client, clean)

        assert again.status_code == 406, again.text
        assert again.json()["reason"] == first_refusal
        assert again.json()["delivery_ids"] == first.json()["delivery_ids"]
        assert await inbox.posts() == []


class TestMailgunReplayAfterARetryableAnswer:
    """A token whose first use was answered 429 or 500 must be processed again (the provider's
    retry), but only with the body it came with: the signature does not cover the body."""

    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path) -> Settings:
        return inbound_settings(database_url, tmp_path / "blobs", rate_limits="1/3600")

    @pytest.fixture
    async def unlimited(
        self, database_url: str, settings: Settings
    ) -> AsyncIterator[httpx.AsyncClient]:
        """The same database and blobs, without rate limits (as once the hour has passed)."""
        app = create_app(inbound_settings(database_url, settings.blob_dir))
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                yield c
        finally:
            await app.state.engine.dispose()

    async def _replay_then_retry(
        self, client: httpx.AsyncClient, inbox: Box, signature: dict[str, str]
    ) -> None:
        forged = mailgun_form(inbox.address, signature=signature, subject="Forged", text="F")
        r = await post_mailgun(client, forged)
        assert r.status_code in (200, 401, 406, 409, 422), r.text
        assert "Forged" not in [p["subject"] for p in await inbox.posts()]
        original = mailgun_form(inbox.address, signature=signature, subject="Original")
        r = await post_mailgun(client, original)
        assert r.status_code == 200, r.text
        assert "Original" in [p["subject"] for p in await inbox.posts()]

    async def test_after_rate_limited(
        self, client: httpx.AsyncClient, unlimited: httpx.AsyncClient, world: World
    ) -> None:
        inbox = await box(world)
        assert (await post_mailgun(client, mailgun_form(inbox.address))).status_code == 200
        signature = sign_mailgun()
        first = await post_mailgun(
            client, mailgun_form(inbox.address, signature=signature, subject="Original")
        )
        assert first.status_code == 429, first.text
        await self._replay_then_retry(unlimited, inbox, signature)

    async def test_after_failed(
        self,
        client: httpx.AsyncClient,
        unlimited: httpx.AsyncClient,
        world: World,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        inbox = await box(world)
        signature = sign_mailgun()

        def boom(_: str) -> str:
            raise RuntimeError("a bug while sanitising")

        with monkeypatch.context() as patch:
            patch.setattr("app.inbound.rows.sanitize_html", boom)
            first = await post_mailgun(
                unlimited, mailgun_form(inbox.address, signature=signature, subject="Original")
            )
        assert first.status_code == 500, first.text
        await self._replay_then_retry(unlimited, inbox, signature)


# --- XSS corpus -----------------------------------------------------------------------------------

HTML_CORPUS = [
    "<script>alert(1)</script>",
    "<ScRiPt SrC=//evil.example/x.js></sCrIpT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    '"><script>alert(1)</script>',
    "<script\x00>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<img src=x OnErRoR=alert(1)>",
    "<img/src=x/onerror=alert(1)>",
    '<img src="x" onerror\t=\n"alert(1)">',
    "<body onload=alert(1)>",
    "<div onmouseover=alert(1)>hover</div>",
    "<details open ontoggle=alert(1)>d</details>",
    "<marquee onstart=alert(1)>m</marquee>",
    "<x onclick=alert(1)>x</x>",
    '<a href="https://ok.example/" onclick="alert(1)">x</a>',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    "<a href=' \x01javascript:alert(1)'>x</a>",
    '<a href="jav\tascript:alert(1)">x</a>',
    '<a href="jav\nascript:alert(1)">x</a>',
    '<a href="jav\r\nascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<a href="jav&#10;ascript:alert(1)">x</a>',
    '<a href="java&Tab;script:alert(1)">x</a>',
    '<a href="java&NewLine;script:alert(1)">x</a>',
    '<a href="java\x00script:alert(1)">x</a>',
    '<a href="\u2028javascript:alert(1)">x</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">x</a>',
    '<a href="&#x6A;&#x61;&#x76;&#x61;&#x73;&#x63;&#x72;&#x69;&#x70;&#x74;&#x3A;alert(1)">x</a>',
    '<a href="&#0000106&#0000097&#0000118&#0000097&#0000115&#0000099&#0000114&#0000105'
    '&#0000112&#0000116&#0000058alert(1)">x</a>',
    '<a href="javascript&colon;alert(1)">x</a>',
    '<a href="javascript&#58;alert(1)">x</a>',
    '<a href="javascript&#x3a;alert(1)">x</a>',
    '<a href="&#x26;#x6A;avascript:alert(1)">x</a>',
    '<a href="%6A%61%76%61%73%63%72%69%70%74:alert(1)">x</a>',
    '<a href="javascript://%0Aalert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    "<a href='javascript:alert(1)'>unclosed",
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    '<svg><a xlink:href="javascript:alert(1)"><text x="0" y="20">x</text></a></svg>',
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    '<svg><set attributeName="href" to="javascript:alert(1)"/></svg>',
    "<svg><p><style><img src=x onerror=alert(1)></style></p></svg>",
    '<svg></p><style><a id="</style><img src=1 onerror=alert(1)>">',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<math><mi><table><mi><style><img src=x onerror=alert(1)>",
    "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
    '<math href="javascript:alert(1)">x</math>',
    '<math><maction actiontype="statusline" xlink:href="javascript:alert(1)">x</maction></math>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<template><style></template><img src=x onerror=alert(1)>",
    '<!--<img src="--><img src=x onerror=alert(1)//">',
    "<![CDATA[><img src=x onerror=alert(1)>]]>",
    "<xmp><img src=x onerror=alert(1)></xmp>",
    '<base href="javascript:alert(1)//">',
    '<base href="https://evil.example/"><a href="/x">relative</a>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<meta http-equiv="refresh" content="0; url=https://evil.example/">',
    '<iframe srcdoc="&lt;script&gt;alert(1)&lt;/script&gt;"></iframe>',
    '<iframe src="javascript:alert(1)"></iframe>',
    '<object data="javascript:alert(1)"></object>',
    '<embed src="javascript:alert(1)">',
    '<form action="javascript:alert(1)"><input type=submit></form>',
    '<button formaction="javascript:alert(1)">x</button>',
    '<isindex action="javascript:alert(1)" type="image">',
    '<input type="image" src="x" onerror="alert(1)">',
    '<div style="background:url(javascript:alert(1))">x</div>',
    '<div style="width: expression(alert(1))">x</div>',
    '<style>@import "javascript:alert(1)";</style>',
    '<link rel="stylesheet" href="javascript:alert(1)">',
    '<table background="javascript:alert(1)"><tr><td>x</td></tr></table>',
    '<img src="javascript:alert(1)">',
    '<img dynsrc="javascript:alert(1)" lowsrc="javascript:alert(1)">',
    '<img srcset="javascript:alert(1) 1x">',
    '<video poster="javascript:alert(1)"><source onerror="alert(1)"></video>',
    "<audio src=x onerror=alert(1)>",
    # Text inside an attribute that looks like an image reference (read-time cid rewriting).
    '<a href="https://ok.example/" title="src=\'cid:logo\' onmouseover=alert(1) x=\'">t</a>',
    '<img src="cid:logo" alt="src=\'cid:logo\' onerror=alert(1) x=\'">',
    '<img src="cid:logo&quot; onerror=alert(1) x=&quot;">',
    '<img src="cid:%22%20onerror=alert(1)%20x=%22">',
]
# Plain-text fields: the corpus, and what breaks headers and display.
TEXT_CORPUS = [
    *HTML_CORPUS,
    "x\r\nBcc: victim@example.org",
    "invoice\u202egnp.exe",
    "\u2066hidden\u2069 \u200ftext",
    "nul\x00byte and bell\x07",
    "=?utf-8?b?PHNjcmlwdD4=?=",
    "<admin@victim.example>",
    '"; filename="evil.exe',
    "../../etc/passwd",
    "..\\..\\windows\\evil.bat",
    ".htaccess",
]
# Attachment types a browser could run in our origin: served as a download of octet-stream.
ACTIVE_TYPES = [
    "text/html",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "text/css",
    "application/x-shockwave-flash",
    "multipart/x-mixed-replace",
    "text/xsl",
    "application/vnd.wap.xhtml+xml",
    "text/vnd.wap.wml",
    "application/mathml+xml",
]
ACTIVE_CONTENT = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'
    b"<html><body><script>alert(document.cookie)</script></body></html>"
)
SAFE_TAGS = frozenset(
    [
        "a",
        "b",
        "big",
        "blockquote",
        "br",
        "center",
        "code",
        "div",
        "em",
        "font",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "u",
        "ul",
    ]
)
SAFE_ATTRIBUTES = {
    "*": {"align", "dir"},
    "a": {"href", "title", "rel"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, list[tuple[str, str]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, [(name, value or "") for name, value in attrs]))

    handle_startendtag = handle_starttag


def elements(html: str) -> list[tuple[str, list[tuple[str, str]]]]:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser.found


def url_as_browsers_read_it(value: str) -> str:
    """Leading/trailing C0 and space stripped, tabs and newlines removed, lower-case."""
    value = value.strip("".join(map(chr, range(0x21))))
    return re.sub(r"[\t\n\r]", "", value).lower()


def strictly_sanitised(html: str) -> str:
    """``html`` through a browser-grade parser (html5ever, under nh3) and the allow-list above.

    Stored HTML that is a fixed point of this parses, as a browser parses it, into nothing but
    the allowed elements and attributes; Python's html.parser alone would skip a broken tag.
    """
    return nh3.clean(
        html,
        tags=set(SAFE_TAGS),
        clean_content_tags=set(),
        attributes={
            tag: names - {"rel"} | SAFE_ATTRIBUTES["*"]
            for tag, names in SAFE_ATTRIBUTES.items()
            if tag != "*"
        }
        | {"*": set(SAFE_ATTRIBUTES["*"])},
        url_schemes={"http", "https", "mailto", "cid"},
        url_relative=lambda url: url if url.startswith("/v1/attachments/") else None,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def assert_inert_html(html: str) -> None:
    assert strictly_sanitised(html) == html
    for tag, attributes in elements(html):
        assert tag in SAFE_TAGS, (tag, html)
        for name, value in attributes:
            assert name in SAFE_ATTRIBUTES["*"] | SAFE_ATTRIBUTES.get(tag, set()), (name, html)
            url = url_as_browsers_read_it(value)
            if name == "href":
                assert re.match(r"(https?|mailto):", url), (value, html)
            if name == "src":  # the mail's own parts only
                assert url.startswith(("/v1/attachments/", "cid:")), (value, html)


def plain(value: str) -> str:
    """What a plain-text field keeps of a value: no controls or bidi marks, no whitespace."""
    kept = (c for c in value if c not in BIDI and unicodedata.category(c) != "Cc")
    return re.sub(r"\s+", "", "".join(kept))


def assert_plain_text(value: str | None, sent: str) -> None:
    assert value is not None
    assert not any(unicodedata.category(c) == "Cc" for c in value), repr(value)
    assert not BIDI & set(value), repr(value)
    assert plain(value) == plain(sent), (value, sent)


def assert_safe_filename(filename: str) -> None:
    assert filename
    assert not {"/", "\\"} & set(filename), filename
    assert not filename.startswith("."), filename
    assert not any(unicodedata.category(c) == "Cc" for c in filename), repr(filename)
    assert not BIDI & set(filename), repr(filename)


_DISPOSITION = re.compile(
    r"attachment; filename=\"([\x20-\x7e]*)\"; filename\*=UTF-8''([A-Za-z0-9!#$&+.^_`|~%-]*)"
)


async def assert_served_inert(
    client: httpx.AsyncClient, attachment: dict[str, Any], sent_type: str
) -> None:
    for method in ("GET", "HEAD"):
        r = await client.request(method, attachment["url"])
        assert r.status_code == 200, r.text
        served = r.headers["content-type"]
        if sent_type in ACTIVE_TYPES:
            assert served == "application/octet-stream", (sent_type, served)
        assert "utf-7" not in served.lower()
        assert r.headers["x-content-type-options"] == "nosniff"
        policy = r.headers["content-security-policy"]
        assert "sandbox" in policy, policy
        assert "default-src 'none'" in policy, policy
        disposition = r.headers["content-disposition"]
        match = _DISPOSITION.fullmatch(disposition)
        assert match, disposition
        assert not {'"', "\\"} & set(match[1]), disposition
        shown = "".join(c for c in attachment["filename"] if unicodedata.category(c)[0] != "C")
        assert unquote(match[2]) == shown.strip() or not shown.strip(), disposition


def encoded_words(text: str) -> str:
    """``text`` as RFC 2047 base64 words, folded: any character can travel in a header."""
    words, chunk = [], ""
    for char in text:
        if len((chunk + char).encode()) > 45:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w.encode()).decode()}?=" for w in words)


def _b64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def raw_mail(
    to: str,
    *,
    subject: str,
    from_name: str,
    html: str,
    attachments: list[tuple[str, str, bytes, str | None]],
    headers: dict[str, str] | None = None,
    extra_parts: list[bytes] | None = None,
) -> bytes:
    """A multipart message built by hand, so that hostile values reach the parser unchanged."""
    head = [
        f"From: {encoded_words(from_name)} <eve@evil.example>",
        f"To: {to}",
        f"Subject: {encoded_words(subject)}",
        f"Message-ID: <{hashlib.sha256((to + subject + html).encode()).hexdigest()}@evil.example>",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="=_b"',
    ]
    parts = [
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + _b64_lines(html.encode("utf-8", "surrogatepass"))
    ]
    for filename, content_type, data, content_id in attachments:
        name = quote(filename, safe="")
        part_head = [
            f"Content-Type: {content_type}; name*=utf-8''{name}",
            f"Content-Disposition: {'inline' if content_id else 'attachment'};"
            f" filename*=utf-8''{name}",
            "Content-Transfer-Encoding: base64",
        ]
        if content_id:
            part_head.append(f"Content-ID: <{content_id}>")
        parts.append("\r\n".join(part_head).encode() + b"\r\n\r\n" + _b64_lines(data))
    parts += extra_parts or []
    body = b"".join(b"--=_b\r\n" + part + b"\r\n" for part in parts) + b"--=_b--\r\n"
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


async def send_postmark(
    client: httpx.AsyncClient,
    to: str,
    *,
    subject: str,
    from_name: str,
    html: str,
    attachments: list[tuple[str, str, bytes, str | None]],
    headers: list[dict[str, str]] | None = None,
) -> httpx.Response:
    payload = postmark_json(
        to,
        from_="eve@evil.example",
        from_name=from_name,
        subject=subject,
        html=html,
        text="",
        headers=headers,
        attachments=[postmark_attachment(n, t, d, c or "") for n, t, d, c in attachments],
    )
    return await client.post("/inbound/postmark", json=payload, headers=basic())


async def send_mime(client: httpx.AsyncClient, to: str, raw: bytes) -> httpx.Response:
    return await client.post(
        "/inbound/mime",
        params={"recipient": to},
        content=raw,
        headers={**basic(), "Content-Type": "message/rfc822"},
    )


_SIGNATURE = re.compile(r"expires=\d+&amp;sig=[0-9a-f]+")


def unsigned(html: str | None) -> str | None:
    return None if html is None else _SIGNATURE.sub("expires=…&amp;sig=…", html)


@pytest.mark.parametrize("provider", ["postmark", "mime"])
async def test_xss_corpus_is_stored_and_served_inert(
    client: httpx.AsyncClient, world: World, subtests: pytest.Subtests, provider: str
) -> None:
    inbox = await box(world)
    sent: dict[str, tuple[str, str, str, str]] = {}
    for i in range(max(len(HTML_CORPUS), len(TEXT_CORPUS))):
        html = HTML_CORPUS[i % len(HTML_CORPUS)]
        text = TEXT_CORPUS[i % len(TEXT_CORPUS)]
        subject = f"{i}: {text}"
        content_type = ACTIVE_TYPES[i % len(ACTIVE_TYPES)]
        attachments = [
            (text, content_type, ACTIVE_CONTENT + str(i).encode(), None),
            ("logo.png", "image/png", PNG, "logo"),
        ]
        if provider == "postmark":
            r = await send_postmark(
                client,
                inbox.address,
                subject=subject,
                from_name=text,
                html=html,
                attachments=attachments,
            )
        else:
            raw = raw_mail(
                inbox.address, subject=subject, from_name=text, html=html, attachments=attachments
            )
            r = await send_mime(client, inbox.address, raw)
        assert (r.status_code, r.json()["status"]) == (200, "accepted"), (i, r.text)
        [post_id] = r.json()["post_ids"]
        sent[post_id] = (html, subject, text, content_type)

    posts = await inbox.posts()
    assert len(posts) == len(sent)
    for post in posts:
        html, subject, text, content_type = sent[post["id"]]
        with subtests.test(html):
            r = await client.get(f"/v1/posts/{post['id']}", headers=inbox.admin)
            assert r.headers["content-type"].startswith("application/json")
            # the same HTML, but for the URL signatures, which may renew between the reads
            assert unsigned(r.json()["html"]) == unsigned(post["html"])
            assert_inert_html(post["html"] or "")
            assert_plain_text(post["subject"], subject)
            assert post["author"]["email"] == "eve@evil.example"
            assert_plain_text(post["author"]["name"] or "", text)
            assert len(post["attachments"]) == 2, post["attachments"]
            for attachment in post["attachments"]:
                assert_safe_filename(attachment["filename"])
                kind = "image/png" if attachment["filename"] == "logo.png" else content_type
                await assert_served_inert(client, attachment, kind)


# --- Remote references: a canary must never be contacted ----------------------------------------


class Canary(http.server.ThreadingHTTPServer):
    """An HTTP server on loopback that records every connection it accepts."""

    daemon_threads = True

    def __init__(self) -> None:
        self.connections: list[tuple[str, int]] = []
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                self.wfile.write(PNG)

            do_POST = do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections.append(client_address)
        return True

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def canary() -> Iterator[Canary]:
    server = Canary()
    server.thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def canary_html(origin: str) -> str:
    port = origin.rsplit(":", 1)[1]
    return f"""<html><head>
<link rel="stylesheet" href="{origin}/link.css">
<link rel="preload" as="image" href="{origin}/preload.png">
<link rel="dns-prefetch" href="{origin}/dns">
<style>@import url({origin}/import.css); @import "{origin}/import2.css";
body {{ background: url({origin}/css-bg.png) }}
@font-face {{ font-family: x; src: url({origin}/font.woff) }}</style>
<base href="{origin}/base/">
<meta http-equiv="refresh" content="0;url={origin}/refresh">
<script src="{origin}/script.js"></script>
</head><body background="{origin}/body-bg.png">
<img src="{origin}/img.png"><img src="//127.0.0.1:{port}/scheme-relative.png">
<img src="http://localhost:{port}/localhost.png"><img src="relative-to-base.png">
<img srcset="{origin}/srcset.png 2x"><img lowsrc="{origin}/lowsrc.png">
<img src="cid:logo" style="behavior:url({origin}/behavior.htc)">
<a href="{origin}/link">a plain link</a> <a href="{origin}/ping" ping="{origin}/pinged">ping</a>
<svg><image href="{origin}/svg-image.png"/><image xlink:href="{origin}/svg-xlink.png"/>
<use href="{origin}/use.svg#x"/><filter><feImage href="{origin}/feimage.png"/></filter></svg>
<video poster="{origin}/poster.png" src="{origin}/video.mp4"><source src="{origin}/s.mp4"></video>
<audio src="{origin}/audio.mp3"></audio><iframe src="{origin}/iframe"></iframe>
<embed src="{origin}/embed"><object data="{origin}/object"></object>
<table background="{origin}/table-bg.png"><tr><td background="{origin}/td-bg.png">t</td></tr>
</table><div style="background-image:url({origin}/style-bg.png)">styled</div>
<input type="image" src="{origin}/input.png"><form action="{origin}/form">
<button formaction="{origin}/formaction">go</button></form>
</body></html>"""


def fetched_references(html: str, hosts: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """Attributes naming a canary host that a browser would fetch (a plain link is not)."""
    return [
        (tag, name, value)
        for tag, attributes in elements(html)
        for name, value in attributes
        if any(host in value for host in hosts) and (tag, name) != ("a", "href")
    ]


@pytest.mark.parametrize("provider", ["postmark", "mime"])
async def test_nothing_a_mail_references_is_ever_fetched(
    client: httpx.AsyncClient, world: World, canary: Canary, provider: str
) -> None:
    inbox = await box(world)
    origin = canary.origin
    port = origin.rsplit(":", 1)[1]
    hosts = (f"127.0.0.1:{port}", f"localhost:{port}")
    html = canary_html(origin)
    headers = {
        "List-Unsubscribe": f"<{origin}/unsubscribe>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Disposition-Notification-To": "eve@evil.example",
        "X-Image-URL": f"{origin}/x-image-url.png",
        "Content-Location": f"{origin}/content-location",
    }
    attachments = [
        ("page.html", "text/html", html.encode(), None),
        ("image.svg", "image/svg+xml", f'<svg><image href="{origin}/a.png"/></svg>'.encode(), None),
        ("logo.png", "image/png", PNG, "logo"),
    ]
    if provider == "postmark":
        r = await send_postmark(
            client,
            inbox.address,
            subject=f"See {origin}/subject",
            from_name="Canary",
            html=html,
            attachments=attachments,
            headers=[{"Name": k, "Value": v} for k, v in headers.items()],
        )
    else:
        external = (
            b"Content-Type: message/external-body; access-type=URL;"
            + f' URL="{origin}/external-body"\r\n\r\n'.encode()
            + b"Content-Type: image/png\r\n\r\n"
        )
        raw = raw_mail(
            inbox.address,
            subject=f"See {origin}/subject",
            from_name="Canary",
            html=html,
            attachments=attachments,
            headers=headers,
            extra_parts=[external],
        )
        r = await send_mime(client, inbox.address, raw)
    assert (r.status_code, r.json()["status"]) == (200, "accepted"), r.text

    [post] = await inbox.posts()
    r = await client.get(f"/v1/posts/{post['id']}", headers=inbox.admin)
    assert r.status_code == 200
    for attachment in post["attachments"]:
        assert (await client.get(attachment["url"])).status_code == 200
    await asyncio.sleep(1)

    assert canary.connections == [], canary.requests
    assert fetched_references(post["html"], hosts) == []
    assert any(
        f"{origin}/link" in v for _, a in elements(post["html"]) for n, v in a if n == "href"
    )
    # The canary was listening all along.
    await asyncio.to_thread(urllib.request.urlopen, f"{origin}/self-check", timeout=5)
    assert canary.requests == ["GET /self-check"]


# --- Routing on the envelope only ----------------------------------------------------------------


async def two_platforms(world: World) -> tuple[Box, Box]:
    return await box(world, "pa", "Alpha"), await box(world, "pb", "Bravo")


def _misleading_headers(other: str) -> dict[str, str]:
    return {
        "Cc": other,
        "Bcc": other,
        "Delivered-To": other,
        "X-Original-To": other,
        "X-Envelope-To": other,
        "Envelope-To": other,
        "Resent-To": other,
        "X-Forwarded-To": other,
    }


async def assert_posted_only_to(target: Box, other: Box, client: httpx.AsyncClient) -> None:
    assert len(await target.posts()) == 1
    assert await other.posts() == []
    assert await other.deliveries() == []
    assert await platform_deliveries(client, other.platform) == []
    assert await unrouted(client) == []


@pytest.mark.parametrize("reverse", [False, True], ids=["a-envelope", "b-envelope"])
async def test_raw_mime_routes_on_the_envelope_not_on_to_or_cc(
    client: httpx.AsyncClient, world: World, reverse: bool
) -> None:
    alpha, bravo = await two_platforms(world)
    target, other = (bravo, alpha) if reverse else (alpha, bravo)
    raw = mime_message(other.address, headers=_misleading_headers(other.address))

    r = await send_mime(client, target.address, raw)

    assert r.status_code == 200, r.text
    assert len(r.json()["post_ids"]) == 1
    await assert_posted_only_to(target, other, client)


async def test_postmark_routes_on_original_recipient_not_on_to_or_cc(
    client: httpx.AsyncClient, world: World
) -> None:
    alpha, bravo = await two_platforms(world)
    payload = postmark_json(
        alpha.address,
        headers=[{"Name": k, "Value": v} for k, v in _misleading_headers(bravo.address).items()],
    )
    payload["To"] = payload["Cc"] = payload["Bcc"] = bravo.address
    full = [{"Email": bravo.address, "Name": "", "MailboxHash": ""}]
    payload["ToFull"] = payload["CcFull"] = payload["BccFull"] = full

    r = await client.post("/inbound/postmark", json=payload, headers=basic())

    assert r.status_code == 200, r.text
    assert len(r.json()["post_ids"]) == 1
    await assert_posted_only_to(alpha, bravo, client)


async def test_postmark_without_original_recipient_is_not_routed_by_to(
    client: httpx.AsyncClient, world: World
) -> None:
    _, bravo = await two_platforms(world)
    payload = postmark_json(bravo.address)
    del payload["OriginalRecipient"]

    r = await client.post("/inbound/postmark", json=payload, headers=basic())

    assert r.json()["post_ids"] == [], r.text
    assert await bravo.posts() == []
    assert await bravo.deliveries() == []


async def test_mailgun_and_sendgrid_route_on_the_envelope_not_on_headers(
    client: httpx.AsyncClient, world: World
) -> None:
    alpha, bravo = await two_platforms(world)
    misleading = [[k, v] for k, v in _misleading_headers(bravo.address).items()]
    form = mailgun_form(alpha.address, headers=[["To", bravo.address], *misleading])
    form["To"] = bravo.address
    r = await post_mailgun(client, form)
    assert r.status_code == 200, r.text
    fields = {
        "envelope": json.dumps({"to": [alpha.address], "from": "alice@example.org"}),
        "to": bravo.address,
        "cc": bravo.address,
        "from": "alice@example.org",
        "subject": "SendGrid",
        "text": "hello",
        "headers": "".join(f"{k}: {v}\n" for k, v in _misleading_headers(bravo.address).items()),
    }
    r = await client.post("/inbound/sendgrid", data=fields, headers=basic())
    assert r.status_code == 200, r.text

    assert len(await alpha.posts()) == 2
    assert await bravo.posts() == []
    assert await platform_deliveries(client, bravo.platform) == []


# --- unauthenticated bodies: bounded before the signature, stopped at it -------------------------


class Upload:
    """A request body in 64 KiB chunks, counting the bytes the service pulled."""

    def __init__(self, body: bytes, chunk: int = 64 * 1024) -> None:
        self.body, self.chunk, self.pulled = body, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), self.chunk):
            self.pulled += len(self.body[i : i + self.chunk])
            yield self.body[i : i + self.chunk]


def multipart_body(
    parts: Sequence[tuple[str, str | None, bytes]], boundary: str = "b0und"
) -> bytes:
    out: list[bytes] = []
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        out.append(value + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode()


URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}
MULTIPART = {"Content-Type": "multipart/form-data; boundary=b0und"}
MiB = 1024 * 1024


def assert_refused_unread(r: httpx.Response, upload: Upload, *, at_most: int) -> None:
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "payload_too_large"
    assert upload.pulled <= at_most, f"{upload.pulled} bytes read"


class TestMailgunUnauthenticatedBodies:
    """An unsigned body costs the service at most the bounds of app.inbound.multipart."""

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"a&" * (4 * MiB), id="4-million-empty-fields"),
            pytest.param(b"&" * (8 * MiB), id="8-million-separators"),
        ],
    )
    @pytest.mark.parametrize("path", ["/inbound/mailgun", "/inbound/mailgun/mime"])
    async def test_millions_of_fields_are_refused_after_the_first_few_thousand(
        self, client: httpx.AsyncClient, world: World, settings: Settings, body: bytes, path: str
    ) -> None:
        inbox = await box(world)
        upload = Upload(body)
        r = await client.post(path, content=upload, headers=URLENCODED)
        assert_refused_unread(r, upload, at_most=64 * 1024)
        assert await platform_deliveries(client, inbox.platform) == []
        assert await unrouted(client) == []
        assert stored_files(settings) == []

    async def test_millions_of_multipart_parts_are_refused_after_the_first_few_thousand(
        self, client: httpx.AsyncClient, settings: Settings
    ) -> None:
        upload = Upload(multipart_body([("a", None, b"")] * 400_000))
        r = await client.post("/inbound/mailgun", content=upload, headers=MULTIPART)
        assert_refused_unread(r, upload, at_most=3 * 64 * 1024)
        assert stored_files(settings) == []

    @pytest.mark.parametrize("content_type", ["urlencoded", "multipart"])
    async def test_fields_without_a_signature_are_refused_past_the_bound(
        self, client: httpx.AsyncClient, settings: Settings, content_type: str
    ) -> None:
        value = b"x" * (40 * MiB)
        if content_type == "urlencoded":
            upload, headers = Upload(b"body-html=" + value), URLENCODED
        else:
            upload, headers = Upload(multipart_body([("body-html", None, value)])), MULTIPART
        r = await client.post("/inbound/mailgun", content=upload, headers=headers)
        assert_refused_unread(r, upload, at_most=MAX_UNAUTHENTICATED_BYTES + 2 * MiB)
        assert stored_files(settings) == []

    @pytest.mark.parametrize("mime", [False, True], ids=["parsed", "mime"])
    async def test_a_wrong_signature_stops_the_read_where_it_arrives(
        self, client: httpx.AsyncClient, world: World, settings: Settings, mime: bool
    ) -> None:
        inbox = await box(world)
        forged = sign_mailgun(key="not-the-key-0123456789")
        parts: list[tuple[str, str | None, bytes]] = [
            ("recipient", None, inbox.address.encode()),
            *((name, None, value.encode()) for name, value in forged.items()),
        ]
        big = b"\0" * (30 * MiB)
        parts.append(("body-mime", None, big) if mime else ("attachment-1", "a.bin", big))
        upload = Upload(multipart_body(parts))
        path = "/inbound/mailgun/mime" if mime else "/inbound/mailgun"
        r = await client.post(path, content=upload, headers=MULTIPART)
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "unauthenticated"
        assert upload.pulled <= 64 * 1024
        assert await platform_deliveries(client, inbox.platform) == []
        assert stored_files(settings) == []

    async def test_a_wrong_signature_after_spooled_attachments_leaves_no_file(
        self, client: httpx.AsyncClient, world: World, settings: Settings
    ) -> None:
        inbox = await box(world)
        files = mailgun_real_order(
            inbox.address,
            html="<p>news</p>",
            attachments=[("a.pdf", "application/pdf", b"%PDF" + b"\1" * (3 * MiB))],
            signature=sign_mailgun(key="not-the-key-0123456789"),
        )
        r = await client.post("/inbound/mailgun", files=files)
        assert r.status_code == 401, r.text
        assert stored_files(settings) == []

    async def test_a_signed_mail_may_carry_many_parts_and_large_fields_after_the_signature(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        inbox = await box(world)
        fields = [
            *((name, None, value.encode()) for name, value in sign_mailgun().items()),
            ("recipient", None, inbox.address.encode()),
            ("sender", None, b"alice@example.org"),
            ("from", None, b"Alice <alice@example.org>"),
            *((f"X-Header-{i}", None, b"value") for i in range(500)),
            ("body-html", None, b"<p>" + b"x" * (12 * MiB) + b"</p>"),
        ]
        r = await client.post("/inbound/mailgun", content=multipart_body(fields), headers=MULTIPART)
        assert r.status_code == 200, r.text
        assert len(await inbox.posts()) == 1


class TestMailgunRealOrder:
    """Mailgun sends the signature fields near the end: a real newsletter still gets in."""

    @pytest.mark.parametrize("html_kib", [300, 1500])
    async def test_a_large_newsletter_with_attachments_is_posted(
        self, client: httpx.AsyncClient, world: World, html_kib: int
    ) -> None:
        inbox = await box(world)
        html = (
            "<table>"
            + "<tr><td>News of the month, with links</td></tr>" * (html_kib * 1024 // 44)
            + "</table>"
        )
        pdf = b"%PDF-1.4 " + bytes(range(256)) * 8000
        png = PNG * 1000
        files = mailgun_real_order(
            inbox.address,
            html=html,
            text="News of the month " * (html_kib * 20),
            attachments=[("report.pdf", "application/pdf", pdf), ("logo.png", "image/png", png)],
        )
        r = await client.post("/inbound/mailgun", files=files)
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        assert post["subject"] == "Newsletter"
        assert [a["filename"] for a in post["attachments"]] == ["report.pdf", "logo.png"]
        assert [a["size"] for a in post["attachments"]] == [len(pdf), len(png)]


class TestFormBoundsAfterAuthentication:
    """Past the bounds, an authenticated payload is the provider's refusal, logged."""

    async def test_mailgun_too_many_parts_after_the_signature_is_406_too_complex(
        self, client: httpx.AsyncClient, world: World, settings: Settings
    ) -> None:
        inbox = await box(world)
        form = mailgun_form(inbox.address)
        body = "&".join(f"{k}={quote(v)}" for k, v in form.items())
        upload = Upload((body + "&x=1" * 5000).encode())
        r = await client.post("/inbound/mailgun", content=upload, headers=URLENCODED)
        assert r.status_code == 406, r.text
        assert r.json()["reason"] == "message_too_complex"
        assert await inbox.posts() == []
        [delivery] = await inbox.deliveries()
        assert delivery["reason"] == "message_too_complex"
        assert stored_files(settings) == []

    async def test_sendgrid_too_many_parts_is_refused_too_complex(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        inbox = await box(world)
        fields = [(k, v) for k, v in _sendgrid_fields(inbox.address).items()]
        fields += [(f"x{i}", "1") for i in range(MAX_FORM_PARTS)]
        r = await client.post("/inbound/sendgrid", data=dict(fields), headers=basic())
        assert r.status_code == 200, r.text  # SendGrid's refusal
        assert r.json()["reason"] == "message_too_complex"
        assert await inbox.posts() == []

    async def test_sendgrid_field_name_past_the_bound_is_refused(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        inbox = await box(world)
        fields = {**_sendgrid_fields(inbox.address), "n" * (MAX_FIELD_NAME_BYTES + 1): "v"}
        r = await client.post("/inbound/sendgrid", data=fields, headers=basic())
        assert r.status_code == 200, r.text
        assert r.json()["reason"] == "message_too_complex"
        assert await inbox.posts() == []


def _sendgrid_fields(recipient: str) -> dict[str, str]:
    return {
        "envelope": json.dumps({"to": [recipient], "from": "alice@example.org"}),
        "from": "Alice <alice@example.org>",
        "subject": "Hello",
        "text": "Hello group",
    }
