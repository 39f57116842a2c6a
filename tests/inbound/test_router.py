"""Each provider's payload, end to end: authenticated, routed, posted once, answered right."""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.auth import OPERATOR, bearer
from tests.inbound.conftest import RATE_LIMITS_IDS, RATE_LIMITS_ON_AND_OFF, Inbox
from tests.inbound.payloads import (
    PROVIDERS,
    REFUSED_CODE,
    basic,
    mailgun_form,
    mime_message,
    postmark_attachment,
    postmark_json,
    provider_request,
    sign_mailgun,
)


@pytest.fixture(params=RATE_LIMITS_ON_AND_OFF, ids=RATE_LIMITS_IDS)
def rate_limits(request: pytest.FixtureRequest) -> str:
    """Every scenario here runs with the production default rate limits and with none."""
    return str(request.param)


MiB = 1024 * 1024
LIMIT = 5 * MiB


class TestMailgun:
    @pytest.mark.blob_stores
    async def test_parsed_mail_with_attachment_becomes_a_post(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        data = bytes(range(256)) * 400
        r = await client.post(
            "/inbound/mailgun",
            data={**mailgun_form(inbox.address, subject="Monthly news"), "attachment-count": "1"},
            files={"attachment-1": ("report.pdf", data, "application/pdf")},
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "accepted"
        [post] = await inbox.posts()
        assert post["subject"] == "Monthly news"
        assert post["source"] == "email"
        assert post["author"]["email"] == "alice@example.org"
        assert post["author"]["name"] == "Alice Example"
        [attachment] = post["attachments"]
        assert attachment["filename"] == "report.pdf"
        assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
        assert await inbox.download(attachment) == data

    async def test_urlencoded_mail_without_attachments(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        r = await client.post("/inbound/mailgun", data=mailgun_form(inbox.address.upper()))
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        assert "<b>group</b>" in post["html"]

    @pytest.mark.parametrize(
        "signature",
        [
            pytest.param(sign_mailgun(key="wrong-key-0123456789"), id="forged"),
            pytest.param(sign_mailgun(timestamp=int(time.time()) - 10 * 3600), id="stale"),
            pytest.param(sign_mailgun(timestamp=int(time.time()) + 3600), id="future"),
            pytest.param({"timestamp": "x", "token": "t", "signature": "s"}, id="malformed"),
            pytest.param({"timestamp": "", "token": "", "signature": ""}, id="missing"),
        ],
    )
    async def test_bad_signatures_answer_401_and_record_nothing(
        self, client: httpx.AsyncClient, inbox: Inbox, signature: dict[str, str]
    ) -> None:
        r = await client.post(
            "/inbound/mailgun", data=mailgun_form(inbox.address, signature=signature)
        )
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert await inbox.posts() == []
        assert await inbox.deliveries() == []

    async def test_eight_hour_old_retry_is_accepted(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        signature = sign_mailgun(timestamp=int(time.time()) - 8 * 3600)
        r = await client.post(
            "/inbound/mailgun", data=mailgun_form(inbox.address, signature=signature)
        )
        assert r.status_code == 200

    async def test_replayed_token_is_a_duplicate_even_with_another_body(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        signature = sign_mailgun()
        first = await client.post(
            "/inbound/mailgun", data=mailgun_form(inbox.address, signature=signature)
        )
        assert first.status_code == 200
        forged = mailgun_form(inbox.address, signature=signature, subject="Other", text="Other")
        again = await client.post("/inbound/mailgun", data=forged)
        assert again.status_code == 200
        assert again.json()["status"] == "duplicate"
        assert again.json()["post_ids"] == first.json()["post_ids"]
        assert len(await inbox.posts()) == 1

    async def test_unknown_recipient_is_refused_with_406(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        r = await client.post("/inbound/mailgun", data=mailgun_form("nobody.abc@in.example.com"))
        assert r.status_code == 406
        assert r.json()["reason"] == "unknown_recipient"
        r = await client.get("/v1/unrouted-deliveries", headers=OPERATOR)
        assert [d["reason"] for d in r.json()["items"]] == ["unknown_recipient"]

    async def test_mime_variant(self, client: httpx.AsyncClient, inbox: Inbox) -> None:
        raw = mime_message(inbox.address, subject="=?utf-8?q?Caf=C3=A9?=", text="Bonjour")
        fields = {"recipient": inbox.address, "sender": "alice@example.org", **sign_mailgun()}
        r = await client.post(
            "/inbound/mailgun/mime", data=fields, files={"body-mime": (None, raw, None)}
        )
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        assert post["subject"] == "Café"
        assert post["text"].strip() == "Bonjour"


class TestSendGrid:
    async def test_parsed_shift_jis_body(self, client: httpx.AsyncClient, inbox: Inbox) -> None:
        text = "こんにちは、グループの皆さん"
        fields = {
            "envelope": json.dumps({"to": [inbox.address], "from": "taro@example.jp"}),
            "from": "Taro <taro@example.jp>",
            "subject": "お知らせ",
            "charsets": json.dumps({"text": "shift_jis", "subject": "UTF-8", "from": "UTF-8"}),
            "headers": "Message-ID: <sj1@example.jp>\nFrom: Taro <taro@example.jp>\n",
            "SPF": "pass",
            "dkim": "{@example.jp : pass}",
        }
        files = {k: (None, v.encode("utf-8"), None) for k, v in fields.items()}
        files["text"] = (None, text.encode("shift_jis"), None)
        r = await client.post("/inbound/sendgrid", files=files, headers=basic())
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        assert post["text"] == text
        assert post["subject"] == "お知らせ"
        assert post["author"]["verified"] is True

    async def test_raw_mode(self, client: httpx.AsyncClient, inbox: Inbox) -> None:
        raw = mime_message(inbox.address, attachments=[("a.txt", "text/plain", b"abc")])
        fields = {"envelope": json.dumps({"to": [inbox.address], "from": "alice@example.org"})}
        r = await client.post(
            "/inbound/sendgrid", data=fields, files={"email": (None, raw, None)}, headers=basic()
        )
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        assert await inbox.download(post["attachments"][0]) == b"abc"

    async def test_refusals_answer_200_so_sendgrid_stops(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        fields = {
            "envelope": json.dumps({"to": ["nobody.x@in.example.com"], "from": "a@b.org"}),
            "text": "hi",
            "from": "a@b.org",
        }
        r = await client.post("/inbound/sendgrid", data=fields, headers=basic())
        assert r.status_code == 200
        assert r.json() == {**r.json(), "status": "rejected", "reason": "unknown_recipient"}

    @pytest.mark.parametrize(
        "headers",
        [basic(password="wrong"), basic(user="other"), {}, {"Authorization": "Basic !!!"}],
    )
    async def test_wrong_credentials_answer_401(
        self, client: httpx.AsyncClient, inbox: Inbox, headers: dict[str, str]
    ) -> None:
        r = await client.post("/inbound/sendgrid", data={"text": "x"}, headers=headers)
        assert r.status_code == 401

    async def test_rotated_password_still_works(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        fields = {
            "envelope": json.dumps({"to": [inbox.address], "from": "a@b.org"}),
            "text": "x",
            "from": "a@b.org",
        }
        r = await client.post(
            "/inbound/sendgrid", data=fields, headers=basic(password="previous-password")
        )
        assert (r.status_code, r.json()["status"]) == (200, "accepted")


class TestPostmark:
    @pytest.mark.blob_stores
    async def test_json_with_inline_image(self, client: httpx.AsyncClient, inbox: Inbox) -> None:
        png = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
        payload = postmark_json(
            inbox.address,
            html='<p>Logo: <img src="cid:logo@x"></p>',
            attachments=[postmark_attachment("logo.png", "image/png", png, "logo@x")],
        )
        r = await client.post("/inbound/postmark", json=payload, headers=basic())
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        [attachment] = post["attachments"]
        assert attachment["inline"] is True
        assert html.escape(attachment["url"]) in post["html"]
        assert "cid:" not in post["html"]
        assert await inbox.download(attachment) == png

    async def test_refusal_is_403_and_check_button_is_200(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        r = await client.post(
            "/inbound/postmark", json=postmark_json("nobody.x@in.example.com"), headers=basic()
        )
        assert r.status_code == 403
        probe = postmark_json("abc+SampleHash@inbound.postmarkapp.com")
        r = await client.post("/inbound/postmark", json=probe, headers=basic())
        assert r.status_code == 200
        assert await inbox.posts() == []

    async def test_same_message_id_twice_is_one_post(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        payload = postmark_json(inbox.address, message_id="pm-1")
        for _ in range(2):
            r = await client.post("/inbound/postmark", json=payload, headers=basic())
            assert r.status_code == 200
        assert len(await inbox.posts()) == 1

    async def test_not_json_is_malformed(self, client: httpx.AsyncClient, inbox: Inbox) -> None:
        r = await client.post("/inbound/postmark", content=b"{not json", headers=basic())
        assert r.status_code == 403
        assert r.json()["reason"] == "malformed_message"


class TestRawMime:
    async def test_relay_format(self, client: httpx.AsyncClient, inbox: Inbox) -> None:
        raw = mime_message(inbox.address, subject="From the MTA")
        r = await client.post(
            "/inbound/mime",
            params={"recipient": inbox.address},
            content=raw,
            headers={**basic(), "Content-Type": "message/rfc822"},
        )
        assert r.status_code == 200, r.text
        assert [p["subject"] for p in await inbox.posts()] == ["From the MTA"]

    async def test_missing_recipient_is_malformed_422(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        r = await client.post("/inbound/mime", content=mime_message(inbox.address), headers=basic())
        assert r.status_code == 422
        assert r.json()["reason"] == "malformed_message"

    @pytest.mark.parametrize("how", ["query", "header"])
    async def test_a_domain_that_is_not_ours_is_refused_and_logged(
        self, client: httpx.AsyncClient, inbox: Inbox, how: str
    ) -> None:
        """An MTA names the recipient itself: never a set-up probe, even at another domain."""
        local = inbox.address.split("@")[0]
        wrong = f"{local}@in.example.org"  # a typo of the domain, or an alias domain
        raw = mime_message(wrong, subject="To a domain routed here by mistake")
        headers = {**basic(), "Content-Type": "message/rfc822"}
        params = {"recipient": wrong} if how == "query" else {}
        if how == "header":
            headers["X-Envelope-To"] = wrong
        r = await client.post("/inbound/mime", params=params, content=raw, headers=headers)
        assert r.status_code == 422, r.text
        assert (r.json()["status"], r.json()["reason"]) == ("rejected", "unknown_recipient")
        listed = await client.get("/v1/unrouted-deliveries", headers=OPERATOR)
        [logged] = listed.json()["items"]
        assert logged["id"] in r.json()["delivery_ids"]
        assert (logged["status"], logged["reason"]) == ("rejected", "unknown_recipient")
        assert logged["envelope_to"] == wrong
        assert await inbox.posts() == []

    async def test_a_provider_probe_at_another_domain_is_still_200(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        probe = postmark_json("abc+SampleHash@inbound.postmarkapp.com")
        r = await client.post("/inbound/postmark", json=probe, headers=basic())
        assert (r.status_code, r.json()["reason"]) == (200, "unknown_recipient")

    async def test_oversized_request_is_413_before_reading(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        r = await client.post(
            "/inbound/mime",
            params={"recipient": inbox.address},
            content=b"x" * (64 * MiB + 1),
            headers=basic(),
        )
        assert r.status_code == 413


class TestRules:
    async def _send(
        self, client: httpx.AsyncClient, to: str, raw: bytes, sender: str = "alice@example.org"
    ) -> httpx.Response:
        return await client.post(
            "/inbound/mime",
            params={"recipient": to, "sender": sender},
            content=raw,
            headers=basic(),
        )

    @pytest.mark.blob_stores
    async def test_attachment_of_exactly_the_limit_is_posted_one_more_byte_is_refused(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        exact = mime_message(
            inbox.address, attachments=[("a.bin", "application/octet-stream", b"a" * LIMIT)]
        )
        r = await self._send(client, inbox.address, exact)
        assert r.status_code == 200, r.text
        over = mime_message(
            inbox.address, attachments=[("b.bin", "application/octet-stream", b"b" * (LIMIT + 1))]
        )
        r = await self._send(client, inbox.address, over)
        assert r.status_code == 422
        assert r.json()["reason"] == "attachment_too_large"
        posts = await inbox.posts()
        assert len(posts) == 1
        assert posts[0]["attachments"][0]["size"] == LIMIT

    @pytest.mark.blob_stores
    async def test_drop_policy_posts_and_lists_the_omitted_file(
        self, client: httpx.AsyncClient, world: object, inbox: Inbox
    ) -> None:
        r = await client.patch(
            f"/v1/integrations/{inbox.integration['id']}",
            json={"oversize_attachments": "drop"},
            headers=bearer("root"),
        )
        assert r.status_code == 200
        raw = mime_message(
            inbox.address,
            attachments=[
                ("big.bin", "application/octet-stream", b"b" * (LIMIT + 1)),
                ("small.txt", "text/plain", b"small"),
            ],
        )
        r = await self._send(client, inbox.address, raw)
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        assert [a["filename"] for a in post["attachments"]] == ["small.txt"]
        assert post["omitted_attachments"] == [
            {"filename": "big.bin", "size": LIMIT + 1, "reason": "too_large"}
        ]

    async def test_out_of_office_is_refused_newsletter_is_posted(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        ooo = mime_message(inbox.address, headers={"Auto-Submitted": "auto-replied"})
        r = await self._send(client, inbox.address, ooo)
        assert (r.status_code, r.json()["reason"]) == (422, "auto_reply")
        news = mime_message(
            inbox.address, headers={"Precedence": "bulk", "List-Id": "<news.example.org>"}
        )
        assert (await self._send(client, inbox.address, news)).status_code == 200
        assert len(await inbox.posts()) == 1

    async def test_disabled_integration_and_allowed_senders(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        url = f"/v1/integrations/{inbox.integration['id']}"
        await client.patch(url, json={"allowed_senders": ["@partner.org"]}, headers=bearer("root"))
        r = await self._send(client, inbox.address, mime_message(inbox.address))
        assert r.json()["reason"] == "sender_not_allowed"
        ok = mime_message(inbox.address, from_="Bob <bob@partner.org>")
        assert (await self._send(client, inbox.address, ok)).status_code == 200
        await client.patch(url, json={"enabled": False}, headers=bearer("root"))
        r = await self._send(
            client, inbox.address, mime_message(inbox.address, from_="bob@partner.org")
        )
        assert r.json()["reason"] == "integration_disabled"

    async def test_same_message_id_with_different_content_is_a_second_post(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        one = mime_message(inbox.address, message_id="<same@example.org>", text="one")
        two = mime_message(inbox.address, message_id="<same@example.org>", text="two")
        for raw in (one, one, two):
            assert (await self._send(client, inbox.address, raw)).status_code == 200
        assert sorted(p["text"].strip() for p in await inbox.posts()) == ["one", "two"]

    async def test_one_mail_to_two_integrations_makes_a_post_in_each(
        self, client: httpx.AsyncClient, world: object, inbox: Inbox
    ) -> None:
        other_group = await inbox.world.group("p1", "Other")
        other = await inbox.world.integration(other_group, "Other")
        raw = mime_message(inbox.address)
        r = await client.post(
            "/inbound/mime",
            params=[("recipient", inbox.address), ("recipient", other["address"])],
            content=raw,
            headers=basic(),
        )
        assert r.status_code == 200
        assert len(r.json()["post_ids"]) == 2


async def _unrouted(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/v1/unrouted-deliveries", headers=OPERATOR)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


class TestMailToADeletedIntegration:
    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_is_refused_as_an_unknown_recipient_and_logged_for_its_platform(
        self, client: httpx.AsyncClient, inbox: Inbox, provider: str
    ) -> None:
        await inbox.world.delete_integration(inbox.integration["id"])
        r = await client.post(**provider_request(provider, inbox.address))
        assert r.status_code == REFUSED_CODE[provider], r.text
        assert (r.json()["status"], r.json()["reason"]) == ("rejected", "unknown_recipient")
        assert await inbox.posts() == []
        [delivery] = await inbox.deliveries()
        assert r.json()["delivery_ids"] == [delivery["id"]]
        assert delivery["integration_id"] == inbox.integration["id"]
        assert (delivery["status"], delivery["reason"]) == ("rejected", "unknown_recipient")
        assert delivery["provider"] == provider
        assert await _unrouted(client) == []

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_retry_is_refused_the_same_and_logged_once(
        self, client: httpx.AsyncClient, inbox: Inbox, provider: str
    ) -> None:
        await inbox.world.delete_integration(inbox.integration["id"])
        request = provider_request(provider, inbox.address)
        first = await client.post(**request)
        again = await client.post(**request)
        assert again.status_code == first.status_code == REFUSED_CODE[provider]
        assert again.json() == first.json()
        assert len(await inbox.deliveries()) == 1

    @pytest.mark.parametrize("provider", ["mailgun", "postmark", "mime"])
    async def test_a_retry_of_mail_posted_before_the_deletion_is_still_a_duplicate(
        self, client: httpx.AsyncClient, inbox: Inbox, provider: str
    ) -> None:
        request = provider_request(provider, inbox.address)
        first = await client.post(**request)
        assert (first.status_code, first.json()["status"]) == (200, "accepted")
        await inbox.world.delete_integration(inbox.integration["id"])
        again = await client.post(**request)
        assert (again.status_code, again.json()["status"]) == (200, "duplicate")
        assert again.json()["post_ids"] == first.json()["post_ids"]
        assert len(await inbox.posts()) == 1
        deliveries = await inbox.deliveries()
        assert [d["status"] for d in deliveries] == ["duplicate", "accepted"]
        assert {d["integration_id"] for d in deliveries} == {inbox.integration["id"]}

    @pytest.mark.parametrize("provider", ["mailgun", "sendgrid", "mime"])
    async def test_mail_to_a_live_and_a_deleted_one_is_posted_once_and_both_are_logged(
        self, client: httpx.AsyncClient, inbox: Inbox, provider: str
    ) -> None:
        gone = await inbox.world.integration(inbox.group, "Gone")
        await inbox.world.delete_integration(gone["id"])
        r = await client.post(**provider_request(provider, gone["address"], inbox.address))
        assert (r.status_code, r.json()["status"]) == (200, "accepted"), r.text
        assert len(await inbox.posts()) == 1
        logged = {d["integration_id"]: d for d in await inbox.deliveries()}
        assert logged[inbox.integration["id"]]["status"] == "accepted"
        refused = logged[gone["id"]]
        assert (refused["status"], refused["reason"]) == ("rejected", "unknown_recipient")
        assert refused["post_id"] is None

    async def test_an_integration_deleted_with_its_group_is_refused_the_same_way(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        r = await client.delete(f"/v1/groups/{inbox.group}", headers=bearer("root"))
        assert r.status_code == 204
        r = await client.post(**provider_request("mailgun", inbox.address))
        assert (r.status_code, r.json()["reason"]) == (406, "unknown_recipient")
        [delivery] = await inbox.deliveries()
        assert delivery["integration_id"] == inbox.integration["id"]

    async def test_a_payload_too_complex_to_read_is_logged_there_with_its_own_reason(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        await inbox.world.delete_integration(inbox.integration["id"])
        head = b"To: " + inbox.address.encode() + b"\r\nSubject: bomb\r\n"
        nested = b"".join(
            f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
            for i in range(200)
        )
        r = await client.post(
            "/inbound/mime",
            params={"recipient": inbox.address},
            content=head + nested + b"Content-Type: text/plain\r\n\r\nx\r\n",
            headers=basic(),
        )
        assert (r.status_code, r.json()["reason"]) == (422, "message_too_complex")
        [delivery] = await inbox.deliveries()
        assert delivery["integration_id"] == inbox.integration["id"]
        assert await _unrouted(client) == []

    async def test_mail_to_no_integration_at_all_stays_the_operators(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        r = await client.post(**provider_request("postmark", "nobody.x@in.example.com"))
        assert (r.status_code, r.json()["reason"]) == (403, "unknown_recipient")
        assert await inbox.deliveries() == []
        [unrouted] = await _unrouted(client)
        assert unrouted["integration_id"] is None


class TestProviderRetries:
    """A provider's retry of an event (same Mailgun token, same Postmark MessageID) is logged
    as a ``duplicate`` row pointing at the first post, as a content duplicate is."""

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_each_retry_of_a_posted_mail_adds_a_duplicate_row_pointing_at_the_post(
        self, client: httpx.AsyncClient, inbox: Inbox, provider: str
    ) -> None:
        request = provider_request(provider, inbox.address)
        first = await client.post(**request)
        assert (first.status_code, first.json()["status"]) == (200, "accepted"), first.text
        [post_id] = first.json()["post_ids"]
        retries = [await client.post(**request) for _ in range(2)]
        for again in retries:
            assert (again.status_code, again.json()["status"]) == (200, "duplicate")
            assert again.json()["post_ids"] == [post_id]
        [post] = await inbox.posts()
        assert post["id"] == post_id
        deliveries = await inbox.deliveries()
        assert [d["status"] for d in deliveries] == ["duplicate", "duplicate", "accepted"]
        assert {d["post_id"] for d in deliveries} == {post_id}
        assert [d["id"] for d in deliveries[:2]] == [
            again.json()["delivery_ids"][0] for again in reversed(retries)
        ]
        assert {(d["subject"], d["from"], d["reason"]) for d in deliveries} == {
            ("Hello", "alice@example.org", None)
        }
        r = await client.get(
            "/v1/deliveries", params={"status": "duplicate"}, headers=bearer("root")
        )
        assert len(r.json()["items"]) == 2

    @pytest.mark.parametrize("provider", ["mailgun", "postmark"])
    async def test_a_retry_of_a_refused_mail_is_refused_again_and_adds_no_row(
        self, client: httpx.AsyncClient, inbox: Inbox, provider: str
    ) -> None:
        r = await client.patch(
            f"/v1/integrations/{inbox.integration['id']}",
            json={"allowed_senders": ["@elsewhere.example"]},
            headers=bearer("root"),
        )
        assert r.status_code == 200
        request = provider_request(provider, inbox.address)
        first = await client.post(**request)
        again = await client.post(**request)
        assert again.status_code == first.status_code == REFUSED_CODE[provider]
        assert again.json() == first.json()
        assert again.json()["reason"] == "sender_not_allowed"
        assert len(await inbox.deliveries()) == 1

    async def test_a_retry_to_two_integrations_adds_a_duplicate_for_the_one_that_posted(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        strict = await inbox.world.integration(
            inbox.group, "Strict", allowed_senders=["@elsewhere.example"]
        )
        request = provider_request("mailgun", inbox.address, strict["address"])
        first = await client.post(**request)
        assert (first.status_code, first.json()["status"]) == (200, "accepted")
        again = await client.post(**request)
        assert (again.status_code, again.json()["status"]) == (200, "duplicate")
        assert again.json()["post_ids"] == first.json()["post_ids"]
        logged = Counter(
            (d["integration_id"], d["status"], d["reason"]) for d in await inbox.deliveries()
        )
        assert logged == {
            (inbox.integration["id"], "accepted", None): 1,
            (inbox.integration["id"], "duplicate", None): 1,
            (strict["id"], "rejected", "sender_not_allowed"): 1,
        }

    async def test_duplicates_count_in_the_stats_as_neither_accepted_nor_refused(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        for provider in ("mailgun", "mime"):  # an event retry, a content duplicate
            request = provider_request(provider, inbox.address)
            for _ in range(2):
                assert (await client.post(**request)).status_code == 200
        r = await client.get(f"/v1/integrations/{inbox.integration['id']}", headers=bearer("root"))
        assert r.json()["stats"]["accepted"] == 2
        assert r.json()["stats"]["refused"] == 0
        newest = (await inbox.deliveries())[0]
        assert newest["status"] == "duplicate"
        assert r.json()["stats"]["last_received_at"] == newest["received_at"]


# Limits off only: with the default limits (50 a minute), identical mails that arrive together
# are each counted before one of them is posted and the others are found to be its duplicates,
# so some are answered 429 (known; duplicates that arrive one after another never count).
@pytest.mark.parametrize("rate_limits", [""], ids=["limits-off"])
@pytest.mark.concurrency
async def test_hundred_concurrent_identical_deliveries_make_one_post(
    client: httpx.AsyncClient, inbox: Inbox
) -> None:
    raw = mime_message(inbox.address, message_id="<burst@example.org>")

    async def send() -> int:
        r = await client.post(
            "/inbound/mime", params={"recipient": inbox.address}, content=raw, headers=basic()
        )
        return r.status_code

    codes = await asyncio.gather(*(send() for _ in range(100)))
    assert set(codes) == {200}
    assert len(await inbox.posts()) == 1


@pytest.mark.concurrency
async def test_hundred_concurrent_identical_postmark_posts_make_one_post(
    client: httpx.AsyncClient, inbox: Inbox
) -> None:
    payload = postmark_json(inbox.address, message_id="burst-pm")

    async def send() -> tuple[int, str]:
        r = await client.post("/inbound/postmark", json=payload, headers=basic())
        return r.status_code, r.json()["status"]

    results = await asyncio.gather(*(send() for _ in range(100)))
    assert {code for code, _ in results} == {200}
    assert sorted({status for _, status in results}) == ["accepted", "duplicate"]
    assert len(await inbox.posts()) == 1


@pytest.mark.concurrency
async def test_fifty_concurrent_retries_of_a_mailgun_event_make_one_post_and_fifty_rows(
    client: httpx.AsyncClient, inbox: Inbox
) -> None:
    request = provider_request("mailgun", inbox.address)

    async def send() -> tuple[int, str]:
        r = await client.post(**request)
        return r.status_code, r.json()["status"]

    results = Counter(await asyncio.gather(*(send() for _ in range(50))))
    assert results == {(200, "accepted"): 1, (200, "duplicate"): 49}
    [post] = await inbox.posts()
    r = await client.get("/v1/deliveries", params={"limit": 200}, headers=bearer("root"))
    deliveries = r.json()["items"]
    assert Counter(d["status"] for d in deliveries) == {"accepted": 1, "duplicate": 49}
    assert {d["post_id"] for d in deliveries} == {post["id"]}


async def test_inbound_paths_never_redirect(client: httpx.AsyncClient, inbox: Inbox) -> None:
    r = await client.post("/inbound/postmark/", json={}, headers=basic())
    assert r.status_code in (404, 405)
    assert "location" not in r.headers


def _rate_limited_settings(database_url: str, tmp_path: object, limits: str) -> object:
    from pathlib import Path

    from tests.conftest import make_settings
    from tests.inbound.payloads import INBOUND_PASSWORD, INBOUND_USER

    return make_settings(
        database_url,
        Path(str(tmp_path)) / "blobs",
        inbound_username=INBOUND_USER,
        inbound_password=INBOUND_PASSWORD,
        rate_limits=limits,
    )


class TestRateLimits:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: object) -> object:
        return _rate_limited_settings(database_url, tmp_path, "3/3600")

    async def test_over_the_limit_is_retryable_and_duplicates_do_not_count(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        payloads = [postmark_json(inbox.address, message_id=f"rl-{i}") for i in range(4)]
        for payload in payloads[:3]:
            assert (
                await client.post("/inbound/postmark", json=payload, headers=basic())
            ).status_code == 200
        again = await client.post("/inbound/postmark", json=payloads[0], headers=basic())
        assert (again.status_code, again.json()["status"]) == (200, "duplicate")
        r = await client.post("/inbound/postmark", json=payloads[3], headers=basic())
        assert (r.status_code, r.json()["status"]) == (429, "rate_limited")
        fields = {
            "envelope": json.dumps({"to": [inbox.address], "from": "a@b.org"}),
            "text": "x",
            "from": "a@b.org",
        }
        r = await client.post("/inbound/sendgrid", data=fields, headers=basic())
        assert (r.status_code, r.json()["status"]) == (503, "rate_limited")
        assert len(await inbox.posts()) == 3
        statuses = [d["status"] for d in await inbox.deliveries()]
        assert statuses.count("rate_limited") == 2


class TestRefusedMailDoesNotCount:
    """A mail the rules refuse is counted with its token's claim and then taken back: it never
    uses up the window of the mail that the integration accepts."""

    @pytest.fixture
    def settings(self, database_url: str, tmp_path: object) -> object:
        return _rate_limited_settings(database_url, tmp_path, "1/3600")

    async def test_refused_senders_and_a_disabled_integration_leave_the_window_whole(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        url = f"/v1/integrations/{inbox.integration['id']}"
        r = await client.patch(
            url, json={"allowed_senders": ["@partner.org"]}, headers=bearer("root")
        )
        assert r.status_code == 200, r.text
        for i in range(3):
            stranger = postmark_json(inbox.address, message_id=f"stranger-{i}")
            r = await client.post("/inbound/postmark", json=stranger, headers=basic())
            assert r.json()["reason"] == "sender_not_allowed", r.text
        await client.patch(url, json={"enabled": False}, headers=bearer("root"))
        off = postmark_json(inbox.address, from_="bob@partner.org", message_id="while-off")
        r = await client.post("/inbound/postmark", json=off, headers=basic())
        assert r.json()["reason"] == "integration_disabled", r.text
        await client.patch(url, json={"enabled": True}, headers=bearer("root"))
        partner = postmark_json(inbox.address, from_="bob@partner.org", message_id="partner-0")
        r = await client.post("/inbound/postmark", json=partner, headers=basic())
        assert (r.status_code, r.json()["status"]) == (200, "accepted"), r.text
        again = postmark_json(inbox.address, from_="bob@partner.org", message_id="partner-1")
        r = await client.post("/inbound/postmark", json=again, headers=basic())
        assert (r.status_code, r.json()["status"]) == (429, "rate_limited"), r.text


class TestACopyOfAnEventInFlightIsNotCounted:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: object) -> object:
        return _rate_limited_settings(database_url, tmp_path, "1/3600")

    async def test_a_copy_whose_token_is_claimed_with_nothing_recorded_is_not_counted(
        self, client: httpx.AsyncClient, inbox: Inbox, app: FastAPI
    ) -> None:
        """Another request claimed the event's token and is writing it: that request counted
        the mail, so its copy must not count again (duplicates never count)."""
        import uuid

        import sqlalchemy as sa

        from app.db.base import utcnow
        from app.models import ProviderToken

        first = postmark_json(inbox.address, message_id="fills-the-window")
        r = await client.post("/inbound/postmark", json=first, headers=basic())
        assert r.status_code == 200, r.text
        copy = postmark_json(inbox.address, message_id="claimed-elsewhere")
        async with app.state.sessionmaker.begin() as session:
            await session.execute(
                sa.insert(ProviderToken).values(
                    provider="postmark",
                    token="claimed-elsewhere",
                    delivery_id=uuid.uuid4(),
                    created_at=utcnow(),
                )
            )
        r = await client.post("/inbound/postmark", json=copy, headers=basic())
        assert (r.status_code, r.json()["status"]) == (200, "accepted"), r.text
        # a new mail still meets the full window
        other = postmark_json(inbox.address, message_id="a-new-mail")
        r = await client.post("/inbound/postmark", json=other, headers=basic())
        assert (r.status_code, r.json()["status"]) == (429, "rate_limited")


class TestRateLimitedAnswersSayWhenToRetry:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: object) -> object:
        return _rate_limited_settings(database_url, tmp_path, "1/3600")

    async def test_429_and_sendgrids_503_carry_retry_after_until_the_window_ends(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        first = postmark_json(inbox.address, message_id="retry-0")
        assert (
            await client.post("/inbound/postmark", json=first, headers=basic())
        ).status_code == 200
        assert (
            "retry-after"
            not in (await client.post("/inbound/postmark", json=first, headers=basic())).headers
        )  # a duplicate is not rate limited
        second = postmark_json(inbox.address, message_id="retry-1")
        before = int(time.time())
        r = await client.post("/inbound/postmark", json=second, headers=basic())
        after = int(time.time())
        assert r.status_code == 429
        # the seconds left in the hour's window, at some moment of the request
        until_the_hour = {3600 - moment % 3600 for moment in range(before, after + 1)}
        assert int(r.headers["retry-after"]) in until_the_hour
        fields = {
            "envelope": json.dumps({"to": [inbox.address], "from": "a@b.org"}),
            "text": "x",
            "from": "a@b.org",
        }
        r = await client.post("/inbound/sendgrid", data=fields, headers=basic())
        assert r.status_code == 503
        assert 1 <= int(r.headers["retry-after"]) <= 3600


class TestRateLimitsSharingAWindow:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: object) -> object:
        # one window, two limits: each mail counts once
        return _rate_limited_settings(database_url, tmp_path, "2/3600,5/3600")

    async def test_each_mail_counts_once_per_window(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        answers = []
        for i in range(3):
            payload = postmark_json(inbox.address, message_id=f"shared-{i}")
            r = await client.post("/inbound/postmark", json=payload, headers=basic())
            answers.append((r.status_code, r.json()["status"]))
        assert answers == [(200, "accepted"), (200, "accepted"), (429, "rate_limited")]


class TestHostileContent:
    XSS = (
        '<p style="background:url(http://x)">text</p><script>alert(1)</script>'
        "<img src=x onerror=alert(2)>"
        '<a href="javascript:alert(3)">a</a><a href="jav&#x09;ascript:alert(4)">b</a>'
        "<svg><p><style><img src=x onerror=alert(5)></style></p></svg>"
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(6)>"
        '<base href="http://evil.example/"><meta http-equiv="refresh" content="0;url=http://evil">'
        '<img src="http://tracker.example/pixel.gif">'
        '<form action="http://evil"><input name=q></form><iframe src="http://evil"></iframe>'
    )

    async def test_xss_corpus_is_stored_inert(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        payload = postmark_json(
            inbox.address, html=self.XSS, subject="Hi\u202e<script>", from_name="Eve\r\nBcc: x"
        )
        r = await client.post("/inbound/postmark", json=payload, headers=basic())
        assert r.status_code == 200, r.text
        [post] = await inbox.posts()
        stored = post["html"].lower()
        for needle in (
            "<script",
            "onerror",
            "javascript:",
            "<svg",
            "<math",
            "<base",
            "<meta",
            "tracker.example",
            "style=",
            "<form",
            "<iframe",
            "evil",
        ):
            assert needle not in stored, needle
        assert "text" in post["html"]
        assert "\u202e" not in post["subject"]
        assert "\r" not in post["author"]["name"]
        assert "\n" not in post["author"]["name"]

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("../../etc/passwd", "passwd"),
            ("invoice\u202egnp.exe", "invoicegnp.exe"),
            ("C:\\Users\\x\\evil.bat", "evil.bat"),
        ],
    )
    async def test_attachment_names_are_display_names_only(
        self, client: httpx.AsyncClient, inbox: Inbox, name: str, expected: str
    ) -> None:
        payload = postmark_json(
            inbox.address, attachments=[postmark_attachment(name, "text/plain", b"x")]
        )
        assert (
            await client.post("/inbound/postmark", json=payload, headers=basic())
        ).status_code == 200
        [post] = await inbox.posts()
        assert post["attachments"][0]["filename"] == expected

    async def test_explicit_null_sender_is_auto_mail_missing_return_path_is_not(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        bounce = postmark_json(inbox.address, headers=[{"Name": "Return-Path", "Value": "<>"}])
        bounce["Headers"] = [h for h in bounce["Headers"] if h["Value"] != "<alice@example.org>"]
        r = await client.post("/inbound/postmark", json=bounce, headers=basic())
        assert (r.status_code, r.json()["reason"]) == (403, "auto_reply")
        plain = postmark_json(inbox.address)
        plain["Headers"] = []
        r = await client.post("/inbound/postmark", json=plain, headers=basic())
        assert (r.status_code, r.json()["status"]) == (200, "accepted")


class TestRawMessages:
    async def _send(self, client: httpx.AsyncClient, to: str, raw: bytes) -> httpx.Response:
        return await client.post(
            "/inbound/mime", params={"recipient": to}, content=raw, headers=basic()
        )

    async def test_recipient_case_and_plus_tag_are_ignored(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        local, domain = inbox.address.split("@")
        tagged = f"{local.upper()}+promo@{domain.upper()}"
        r = await self._send(client, tagged, mime_message(tagged))
        assert r.status_code == 200, r.text
        assert len(await inbox.posts()) == 1

    async def test_encoded_words_in_subject_and_sender_name(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        raw = (
            b"From: =?iso-8859-1?q?Ren=E9_Dupr=E9?= <rene@example.fr>\r\n"
            b"To: " + inbox.address.encode() + b"\r\n"
            b"Subject: =?utf-8?b?Q29tcHRlIHJlbmR1IOKAkyDDqXTDqQ==?=\r\n"
            b"Message-ID: <enc@example.fr>\r\n"
            b"Content-Type: text/plain; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"
            b"Voil\xe0 le compte rendu.\r\n"
        )
        assert (await self._send(client, inbox.address, raw)).status_code == 200
        [post] = await inbox.posts()
        assert post["author"] == {
            "email": "rene@example.fr",
            "name": "René Dupré",
            "verified": False,
        }
        assert post["subject"] == "Compte rendu – été"  # noqa: RUF001
        assert post["text"].strip() == "Voilà le compte rendu."

    @pytest.mark.blob_stores
    async def test_forwarded_mail_is_kept_as_an_eml_attachment(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        from email import message_from_bytes
        from email.message import EmailMessage
        from email.policy import default

        inner = mime_message("someone@example.org", subject="Original news")
        outer = EmailMessage()
        outer["From"] = "alice@example.org"
        outer["To"] = inbox.address
        outer["Subject"] = "Fwd: Original news"
        outer.set_content("See below")
        outer.add_attachment(message_from_bytes(inner, policy=default))
        assert (await self._send(client, inbox.address, outer.as_bytes())).status_code == 200
        [post] = await inbox.posts()
        [attachment] = post["attachments"]
        assert attachment["content_type"] == "message/rfc822"
        assert attachment["filename"].endswith(".eml")
        assert b"Original news" in await inbox.download(attachment)

    async def test_mime_bomb_is_refused_as_too_complex(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        depth = 200
        head = b"From: a@example.org\r\nTo: " + inbox.address.encode() + b"\r\nSubject: bomb\r\n"
        body = b""
        for i in range(depth):
            body += f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
        raw = head + body + b"Content-Type: text/plain\r\n\r\nx\r\n"
        r = await self._send(client, inbox.address, raw)
        assert (r.status_code, r.json()["reason"]) == (422, "message_too_complex")
        assert await inbox.posts() == []
        [delivery] = await inbox.deliveries()
        assert delivery["reason"] == "message_too_complex"


class TestEndpoints:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: object) -> object:
        from pathlib import Path

        from tests.conftest import make_settings

        return make_settings(database_url, Path(str(tmp_path)) / "blobs")

    @pytest.mark.parametrize(
        "path",
        [
            "/inbound/mailgun",
            "/inbound/mailgun/mime",
            "/inbound/sendgrid",
            "/inbound/postmark",
            "/inbound/mime",
        ],
    )
    async def test_an_endpoint_without_its_secret_answers_404(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        r = await client.post(path, content=b"x", headers=basic())
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.blob_stores
async def test_spool_leftovers_are_swept_at_start_up(settings: object, tmp_path: object) -> None:
    import os
    from pathlib import Path

    from app.main import create_app

    app = create_app(settings)  # type: ignore[arg-type]
    stale = Path(app.state.blobs.tmp_dir) / "upload-123"
    stale.mkdir(parents=True)
    (stale / "part").write_bytes(b"half an upload")
    old = 3 * 3600
    os.utime(stale, (os.path.getmtime(stale) - old,) * 2)  # noqa: ASYNC240
    fresh = Path(app.state.blobs.tmp_dir) / "in-flight"
    fresh.mkdir()
    async with app.router.lifespan_context(app):
        pass
    assert not stale.exists()
    assert fresh.exists()
