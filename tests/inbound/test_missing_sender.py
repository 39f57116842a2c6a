"""A mail without From: posted with its envelope sender as author; with no sender at all, refused
as malformed (not as automatic mail); an explicit null sender stays automatic mail."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.inbound.conftest import Inbox
from tests.inbound.payloads import (
    REFUSED_CODE,
    basic,
    mailgun_form,
    postmark_json,
    sendgrid_form,
    sign_mailgun,
)

ENVELOPE = "bounce@example.org"
NO_ENVELOPE = object()  # the payload gives no envelope sender at all
PROVIDER_OF = {
    "mime": "mime",
    "mailgun": "mailgun",
    "mailgun-mime": "mailgun",
    "sendgrid": "sendgrid",
    "sendgrid-raw": "sendgrid",
    "postmark": "postmark",
}


def without_from(to: str) -> bytes:
    return (
        f"To: {to}\nSubject: No sender\nMessage-ID: <no-from@example.org>\n"
        "Content-Type: text/plain; charset=utf-8\n\nHello group\n"
    ).encode()


async def send_without_from(
    client: httpx.AsyncClient, endpoint: str, to: str, sender: object
) -> httpx.Response:
    """A mail with no From header through ``endpoint``; ``sender`` is its envelope sender (a
    string, "" for the null sender) or NO_ENVELOPE."""
    given = isinstance(sender, str)
    if endpoint == "mime":
        params = {"recipient": to, **({"sender": str(sender)} if given else {})}
        return await client.post(
            "/inbound/mime", params=params, content=without_from(to), headers=basic()
        )
    if endpoint == "mailgun":
        form = mailgun_form(to, from_="")
        form.pop("from")
        form["message-headers"] = json.dumps([["Subject", "No sender"], ["To", to]])
        form.pop("sender")
        if given:
            form["sender"] = str(sender)
        return await client.post("/inbound/mailgun", data=form)
    if endpoint == "mailgun-mime":
        data = {"recipient": to, **({"sender": sender} if given else {}), **sign_mailgun()}
        return await client.post(
            "/inbound/mailgun/mime", data=data, files={"body-mime": (None, without_from(to), None)}
        )
    envelope: dict[str, Any] = {"to": [to], **({"from": sender} if given else {})}
    if endpoint == "sendgrid":
        fields = sendgrid_form(to, from_="")
        fields.pop("from")
        fields["headers"] = f"To: {to}\nSubject: No sender\n"
        fields["envelope"] = json.dumps(envelope)
        return await client.post("/inbound/sendgrid", data=fields, headers=basic())
    if endpoint == "sendgrid-raw":
        return await client.post(
            "/inbound/sendgrid",
            data={"envelope": json.dumps(envelope)},
            files={"email": (None, without_from(to), None)},
            headers=basic(),
        )
    if endpoint == "postmark":
        payload = postmark_json(to, from_="", from_name="")
        payload["Headers"] = [{"Name": "Return-Path", "Value": f"<{sender}>"}] if given else []
        return await client.post("/inbound/postmark", json=payload, headers=basic())
    raise ValueError(endpoint)


ENDPOINTS = tuple(PROVIDER_OF)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
class TestMailWithoutFrom:
    async def test_with_an_envelope_sender_it_is_posted_with_that_sender_as_author(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        r = await send_without_from(client, endpoint, inbox.address, ENVELOPE)
        assert (r.status_code, r.json()["status"]) == (200, "accepted"), r.text
        [post] = await inbox.posts()
        assert post["author"] == {"email": ENVELOPE, "name": None, "verified": False}
        [delivery] = await inbox.deliveries()
        assert (delivery["envelope_from"], delivery["from"]) == (ENVELOPE, None)

    async def test_without_any_sender_it_is_refused_as_malformed(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        r = await send_without_from(client, endpoint, inbox.address, NO_ENVELOPE)
        code = REFUSED_CODE[PROVIDER_OF[endpoint]]
        assert (r.status_code, r.json()["status"], r.json()["reason"]) == (
            code,
            "rejected",
            "malformed_message",
        )
        assert await inbox.posts() == []
        [delivery] = await inbox.deliveries()
        assert (delivery["status"], delivery["reason"]) == ("rejected", "malformed_message")
        assert delivery["integration_id"] == inbox.integration["id"]

    async def test_an_explicit_null_sender_is_still_automatic_mail(
        self, client: httpx.AsyncClient, inbox: Inbox, endpoint: str
    ) -> None:
        r = await send_without_from(client, endpoint, inbox.address, "")
        code = REFUSED_CODE[PROVIDER_OF[endpoint]]
        assert (r.status_code, r.json()["reason"]) == (code, "auto_reply")
        [delivery] = await inbox.deliveries()
        assert (delivery["reason"], delivery["envelope_from"]) == ("auto_reply", None)


class TestAuthorFromTheEnvelope:
    async def test_allowed_senders_are_matched_against_the_author_shown(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        from tests.auth import bearer

        url = f"/v1/integrations/{inbox.integration['id']}"
        r = await client.patch(
            url, json={"allowed_senders": ["@example.org"]}, headers=bearer("root")
        )
        assert r.status_code == 200
        r = await send_without_from(client, "mime", inbox.address, ENVELOPE)
        assert (r.status_code, r.json()["status"]) == (200, "accepted")
        r = await send_without_from(client, "postmark", inbox.address, "x@elsewhere.example")
        assert (r.status_code, r.json()["reason"]) == (403, "sender_not_allowed")
