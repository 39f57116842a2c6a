"""A sender cannot forge the "verified" mark or the envelope: only the provider's own headers,
and the Authentication-Results of the hosts the operator trusts, are read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from tests.conftest import make_settings
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import (
    INBOUND_PASSWORD,
    INBOUND_USER,
    MAILGUN_KEY,
    basic,
    mailgun_form,
    mime_message,
    postmark_json,
    sign_mailgun,
)

TRUSTED_ID = "mx.example.com"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "blobs",
        mailgun_signing_key=MAILGUN_KEY,
        inbound_username=INBOUND_USER,
        inbound_password=INBOUND_PASSWORD,
        rate_limits="",
        trusted_authserv_ids=f"relay.example.net, {TRUSTED_ID.upper()}.",
    )


async def outcome(inbox: Inbox) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The mail's delivery and its post (None when it was not posted), as the API shows them."""
    [delivery] = await inbox.deliveries()
    posts = await inbox.posts()
    return delivery, posts[0] if posts else None


class TestPostmarkReadsItsOwnHeadersOnly:
    def _payload(self, inbox: Inbox, *headers: tuple[str, str]) -> dict[str, Any]:
        payload = postmark_json(inbox.address, from_="ceo@victim.example", from_name="CEO")
        payload["Headers"] = [{"Name": n, "Value": v} for n, v in headers]
        return payload

    async def test_a_second_return_path_forges_neither_the_envelope_nor_the_mark(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        payload = self._payload(
            inbox,
            ("Return-Path", "<mallory@attacker.example>"),
            ("Received-SPF", "Pass (sender SPF authorized) identity=mailfrom"),
            ("Return-Path", "<ceo@victim.example>"),
        )
        r = await client.post("/inbound/postmark", json=payload, headers=basic())
        assert (r.status_code, r.json()["status"]) == (200, "accepted")
        delivery, post = await outcome(inbox)
        assert delivery["envelope_from"] == "mallory@attacker.example"
        assert post is not None
        assert post["author"] == {"email": "ceo@victim.example", "name": "CEO", "verified": False}

    async def test_a_later_received_spf_pass_does_not_verify(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        payload = self._payload(
            inbox,
            ("Return-Path", "<ceo@victim.example>"),
            ("Received-SPF", "Fail (sender not authorized) identity=mailfrom"),
            ("Received-SPF", "Pass (sender SPF authorized) identity=mailfrom"),
        )
        r = await client.post("/inbound/postmark", json=payload, headers=basic())
        assert r.status_code == 200
        delivery, post = await outcome(inbox)
        assert (delivery["spf"], post and post["author"]["verified"]) == ("fail", False)

    async def test_a_later_null_return_path_is_not_automatic_mail(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        payload = self._payload(
            inbox, ("Return-Path", "<ceo@victim.example>"), ("Return-Path", "<>")
        )
        r = await client.post("/inbound/postmark", json=payload, headers=basic())
        assert (r.status_code, r.json()["status"]) == (200, "accepted")
        delivery, _ = await outcome(inbox)
        assert (delivery["status"], delivery["envelope_from"]) == (
            "accepted",
            "ceo@victim.example",
        )

    async def test_postmarks_own_spf_pass_still_verifies(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        payload = self._payload(
            inbox,
            ("Return-Path", "<ceo@victim.example>"),
            ("Received-SPF", "Pass (sender SPF authorized) identity=mailfrom"),
        )
        assert (await client.post("/inbound/postmark", json=payload, headers=basic())).is_success
        _, post = await outcome(inbox)
        assert post is not None
        assert post["author"]["verified"] is True


class TestMailgunReadsItsOwnVerdictsOnly:
    async def test_a_later_spf_pass_in_message_headers_does_not_verify(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        form = mailgun_form(
            inbox.address, headers=[["X-Mailgun-Spf", "Fail"], ["X-Mailgun-Spf", "Pass"]]
        )
        assert (await client.post("/inbound/mailgun", data=form)).status_code == 200
        delivery, post = await outcome(inbox)
        assert post is not None
        assert (delivery["spf"], post["author"]["verified"]) == ("Fail", False)

    async def test_a_later_spf_pass_field_does_not_verify(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        form: dict[str, Any] = mailgun_form(inbox.address)
        form["X-Mailgun-Spf"] = ["Fail", "Pass"]  # Mailgun posts each header as a field too
        assert (await client.post("/inbound/mailgun", data=form)).status_code == 200
        delivery, post = await outcome(inbox)
        assert post is not None
        assert (delivery["spf"], post["author"]["verified"]) == ("Fail", False)

    async def test_the_topmost_header_wins_over_the_fields(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        form: dict[str, Any] = mailgun_form(inbox.address, headers=[["X-Mailgun-Spf", "Fail"]])
        form["X-Mailgun-Spf"] = ["Pass"]
        assert (await client.post("/inbound/mailgun", data=form)).status_code == 200
        delivery, post = await outcome(inbox)
        assert post is not None
        assert (delivery["spf"], post["author"]["verified"]) == ("Fail", False)

    async def test_mailguns_own_spf_pass_still_verifies(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        form = mailgun_form(inbox.address, headers=[["X-Mailgun-Spf", "Pass"]])
        assert (await client.post("/inbound/mailgun", data=form)).status_code == 200
        _, post = await outcome(inbox)
        assert post is not None
        assert post["author"]["verified"] is True


RAW_ENDPOINTS = ("mime", "mailgun-mime", "sendgrid-raw")


async def send_raw(
    client: httpx.AsyncClient,
    endpoint: str,
    to: str,
    raw: bytes,
    sender: str = "bounce@example.org",
    **fields: str,
) -> httpx.Response:
    """One raw message through one of the raw MIME endpoints, with its envelope."""
    if endpoint == "mime":
        return await client.post(
            "/inbound/mime",
            params={"recipient": to, "sender": sender},
            content=raw,
            headers={**basic(), "Content-Type": "message/rfc822"},
        )
    if endpoint == "mailgun-mime":
        data = {"recipient": to, "sender": sender, **sign_mailgun(), **fields}
        return await client.post(
            "/inbound/mailgun/mime", data=data, files={"body-mime": (None, raw, None)}
        )
    if endpoint == "sendgrid-raw":
        data = {"envelope": json.dumps({"to": [to], "from": sender}), **fields}
        return await client.post(
            "/inbound/sendgrid", data=data, files={"email": (None, raw, None)}, headers=basic()
        )
    raise ValueError(endpoint)


def traced(to: str, *trace: str, from_: str = "Alice <alice@example.org>") -> bytes:
    """A message with ``trace`` headers on top, as the receiving hosts add them."""
    return "".join(f"{line}\n" for line in trace).encode() + mime_message(to, from_=from_)


RECEIVED = "Received: from mail.example.org (mail.example.org [192.0.2.1]) by mx.example.com"


@pytest.mark.parametrize("endpoint", RAW_ENDPOINTS)
class TestRawMimeTrustsOnlyItsAuthservIds:
    async def _verified(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str, *trace: str, **kw: Any
    ) -> tuple[dict[str, Any], bool]:
        raw = traced(inbox.address, *trace, from_=kw.pop("from_", "Alice <alice@example.org>"))
        r = await send_raw(client, endpoint, inbox.address, raw, **kw)
        assert (r.status_code, r.json()["status"]) == (200, "accepted"), r.text
        delivery, post = await outcome(inbox)
        assert post is not None
        return delivery, post["author"]["verified"]

    async def test_a_trusted_dkim_pass_for_the_from_domain_verifies(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        delivery, verified = await self._verified(
            client,
            inbox,
            endpoint,
            "Authentication-Results: mx.example.com;\n"
            "\tdkim=pass (2048-bit key; secure) header.d=example.org header.i=@example.org",
            RECEIVED,
        )
        assert (delivery["dkim"], verified) == ("{@example.org : pass}", True)

    async def test_a_trusted_dmarc_pass_for_the_from_domain_verifies(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        _, verified = await self._verified(
            client,
            inbox,
            endpoint,
            "Authentication-Results: MX.Example.com 1; dmarc=pass (p=reject)"
            " header.from=example.org",
            "Authentication-Results: mx.example.com; dkim=pass header.d=mailer.example.net",
            RECEIVED,
        )
        assert verified is True

    async def test_a_trusted_spf_pass_for_the_envelope_sender_verifies(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        delivery, verified = await self._verified(
            client,
            inbox,
            endpoint,
            "Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=bounce@example.org",
            RECEIVED,
        )
        assert (delivery["spf"], verified) == ("pass", True)

    async def test_a_trusted_spf_pass_for_another_envelope_does_not_verify(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        delivery, verified = await self._verified(
            client,
            inbox,
            endpoint,
            "Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=ceo@victim.example",
            RECEIVED,
            from_="ceo@victim.example",
            sender="mallory@attacker.example",
        )
        assert delivery["envelope_from"] == "mallory@attacker.example"
        assert (delivery["spf"], verified) == (None, False)

    async def test_verdict_headers_of_untrusted_hosts_are_ignored(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        delivery, verified = await self._verified(
            client,
            inbox,
            endpoint,
            RECEIVED,
            "Authentication-Results: mx.attacker.example; dkim=pass header.d=victim.example;"
            " spf=pass smtp.mailfrom=ceo@victim.example; dmarc=pass header.from=victim.example",
            "Received-SPF: Pass (mailfrom) identity=mailfrom; envelope-from=ceo@victim.example",
            "X-Mailgun-Spf: Pass",
            "X-Mailgun-Dkim-Check-Result: Pass",
            "X-Spam-Spf: pass",
            from_="ceo@victim.example",
            sender="ceo@victim.example",
        )
        assert (delivery["spf"], delivery["dkim"], verified) == (None, None, False)

    async def test_a_trusted_looking_header_below_another_hosts_is_ignored(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        delivery, verified = await self._verified(
            client,
            inbox,
            endpoint,
            "Authentication-Results: mx.example.com; spf=none smtp.mailfrom=ceo@victim.example",
            RECEIVED,
            "Authentication-Results: mail.attacker.example; dkim=none",
            "Authentication-Results: mx.example.com; dkim=pass header.d=victim.example;"
            " dmarc=pass header.from=victim.example",
            from_="ceo@victim.example",
            sender="ceo@victim.example",
        )
        assert (delivery["spf"], delivery["dkim"], verified) == ("none", None, False)

    async def test_a_later_trusted_pass_does_not_override_the_topmost_fail(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        delivery, verified = await self._verified(
            client,
            inbox,
            endpoint,
            "Authentication-Results: mx.example.com; dkim=fail header.d=example.org;"
            " dmarc=fail header.from=example.org",
            "Authentication-Results: mx.example.com; dkim=pass header.d=example.org;"
            " dmarc=pass header.from=example.org",
            RECEIVED,
        )
        assert (delivery["dkim"], verified) == ("{@example.org : fail}", False)


class TestSendGridRawVerdicts:
    async def test_sendgrids_own_fields_win_over_trusted_headers(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        raw = traced(
            inbox.address,
            "Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=bounce@example.org;"
            " dkim=pass header.d=example.org",
            RECEIVED,
        )
        r = await send_raw(
            client, "sendgrid-raw", inbox.address, raw, SPF="fail", dkim="{@example.org : fail}"
        )
        assert r.status_code == 200
        delivery, post = await outcome(inbox)
        assert post is not None
        assert (delivery["spf"], delivery["dkim"]) == ("fail", "{@example.org : fail}")
        assert post["author"]["verified"] is False

    async def test_a_trusted_dmarc_pass_adds_to_sendgrids_fields(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        raw = traced(
            inbox.address,
            "Authentication-Results: mx.example.com; dmarc=pass header.from=example.org",
            RECEIVED,
        )
        r = await send_raw(
            client, "sendgrid-raw", inbox.address, raw, SPF="softfail", dkim="{@x.org : pass}"
        )
        assert r.status_code == 200
        _, post = await outcome(inbox)
        assert post is not None
        assert post["author"]["verified"] is True
