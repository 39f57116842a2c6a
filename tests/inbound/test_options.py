"""Integration options: `automatic_mail` and `allowed_senders_verified_only` (issue 15, items 4
and 5). The rules themselves are tested on `decide` without a database; the router tests send
real provider payloads."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.inbound.decide import Route, decide
from app.inbound.model import InboundEmail
from app.inbound.rules import GENERATED, REPLY, automatic_kind
from app.models import AutomaticMail, OversizePolicy
from tests.auth import bearer
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import basic, mailgun_form, mime_message

ROOT = bearer("root", "p1", "admin")


def mail(
    headers: tuple[tuple[str, str], ...] = (),
    *,
    envelope_from: str | None = "alerts@example.com",
    content_type: str = "text/plain",
    spf: str | None = None,
    from_address: str = "alerts@example.com",
) -> InboundEmail:
    return InboundEmail(
        provider="mime",
        recipients=("news.k3x9@in.example.com",),
        envelope_from=envelope_from,
        from_address=from_address,
        from_name=None,
        subject="Build failed",
        text="Build 42 failed",
        html=None,
        message_id="m1@example.com",
        headers=headers,
        content_type=content_type,
        spf=spf,
    )


def route(**fields: Any) -> Route:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "platform_id": "p1",
        "group_id": uuid.uuid4(),
        "enabled": True,
        "allowed_senders": [],
        "oversize_attachments": OversizePolicy.reject,
        "deleted_at": None,
        **fields,
    }
    return Route(**values)


@pytest.mark.parametrize(
    ("headers", "envelope_from", "content_type", "kind"),
    [
        pytest.param((), "a@example.com", "text/plain", None, id="ordinary"),
        pytest.param((("auto-submitted", "auto-generated"),), "a@x.org", "text/plain", GENERATED),
        pytest.param((("auto-submitted", "auto-notified"),), "a@x.org", "text/plain", GENERATED),
        pytest.param((("precedence", "junk"),), "a@x.org", "text/plain", GENERATED, id="junk"),
        pytest.param((("auto-submitted", "auto-replied"),), "a@x.org", "text/plain", REPLY),
        pytest.param((("auto-submitted", "auto-something"),), "a@x.org", "text/plain", REPLY),
        pytest.param((("x-autoreply", "yes"),), "a@x.org", "text/plain", REPLY),
        pytest.param((("x-autorespond", "x"),), "a@x.org", "text/plain", REPLY),
        pytest.param((("precedence", "auto_reply"),), "a@x.org", "text/plain", REPLY),
        pytest.param(
            (("auto-submitted", "auto-generated"), ("x-autoreply", "yes")),
            "a@x.org",
            "text/plain",
            REPLY,
            id="a reply marker wins",
        ),
        pytest.param((("auto-submitted", "auto-generated"),), "<>", "text/plain", REPLY, id="null"),
        pytest.param((), "a@x.org", "multipart/report", REPLY, id="delivery report"),
    ],
)
def test_automatic_kind(
    headers: tuple[tuple[str, str], ...], envelope_from: str, content_type: str, kind: str | None
) -> None:
    assert automatic_kind(
        mail(headers, envelope_from=envelope_from, content_type=content_type)
    ) == (kind)


class TestDecideAutomaticMail:
    def test_refused_by_default(self, settings: Settings) -> None:
        decision = decide(mail((("auto-submitted", "auto-generated"),)), route(), settings)
        assert decision.reason == "auto_reply"

    def test_accepted_on_request(self, settings: Settings) -> None:
        accepting = route(automatic_mail=AutomaticMail.accept)
        assert decide(mail((("auto-submitted", "auto-generated"),)), accepting, settings).posts

    @pytest.mark.parametrize(
        "email",
        [
            mail((("auto-submitted", "auto-replied"),)),
            mail(envelope_from="<>"),
            mail(content_type="multipart/report"),
            mail((("x-autoreply", "yes"),)),
        ],
    )
    def test_replies_bounces_and_reports_are_refused_whatever_the_option(
        self, settings: Settings, email: InboundEmail
    ) -> None:
        accepting = route(automatic_mail=AutomaticMail.accept)
        assert decide(email, accepting, settings).reason == "auto_reply"


class TestDecideVerifiedSenders:
    def test_a_listed_sender_needs_the_providers_verdict(self, settings: Settings) -> None:
        strict = route(allowed_senders=["@example.com"], allowed_senders_verified_only=True)
        assert decide(mail(), strict, settings).reason == "sender_not_allowed"
        assert decide(mail(spf="pass"), strict, settings).posts

    def test_an_spf_pass_of_another_domain_is_not_aligned(self, settings: Settings) -> None:
        strict = route(allowed_senders=["@example.com"], allowed_senders_verified_only=True)
        email = mail(spf="pass", envelope_from="bounce@mailer.example.net")
        assert decide(email, strict, settings).reason == "sender_not_allowed"

    def test_off_by_default(self, settings: Settings) -> None:
        assert decide(mail(), route(allowed_senders=["@example.com"]), settings).posts

    def test_without_an_allow_list_it_changes_nothing(self, settings: Settings) -> None:
        assert decide(mail(), route(allowed_senders_verified_only=True), settings).posts


async def _options(client: httpx.AsyncClient, inbox: Inbox, **fields: Any) -> dict[str, Any]:
    r = await client.patch(f"/v1/integrations/{inbox.integration['id']}", json=fields, headers=ROOT)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _send_mime(client: httpx.AsyncClient, to: str, **kw: Any) -> httpx.Response:
    return await client.post(
        "/inbound/mime",
        params={"recipient": to},
        content=mime_message(to, **kw),
        headers={**basic(), "Content-Type": "message/rfc822"},
    )


class TestAutomaticMailOverHttp:
    async def test_defaults_and_validation(self, client: httpx.AsyncClient, inbox: Inbox) -> None:
        assert inbox.integration["automatic_mail"] == "refuse"
        assert inbox.integration["allowed_senders_verified_only"] is False
        for bad in ({"automatic_mail": "maybe"}, {"automatic_mail": None}):
            r = await client.patch(
                f"/v1/integrations/{inbox.integration['id']}", json=bad, headers=ROOT
            )
            assert r.status_code == 422
            assert r.json()["code"] == "validation_error"

    async def test_an_alert_is_posted_once_the_integration_accepts_automatic_mail(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        alert = {"Auto-Submitted": "auto-generated"}
        r = await _send_mime(client, inbox.address, headers=alert, subject="CI 1")
        assert (r.status_code, r.json()["reason"]) == (422, "auto_reply")

        assert (await _options(client, inbox, automatic_mail="accept"))["automatic_mail"] == (
            "accept"
        )
        r = await _send_mime(client, inbox.address, headers=alert, subject="CI 2")
        assert (r.status_code, r.json()["status"]) == (200, "accepted")
        r = await _send_mime(
            client, inbox.address, headers={"Auto-Submitted": "auto-replied"}, subject="Away"
        )
        assert (r.status_code, r.json()["reason"]) == (422, "auto_reply")
        assert [p["subject"] for p in await inbox.posts()] == ["CI 2"]

    async def test_created_with_the_options(self, client: httpx.AsyncClient, inbox: Inbox) -> None:
        r = await client.post(
            "/v1/integrations",
            json={
                "title": "Alerts",
                "group_id": inbox.group,
                "automatic_mail": "accept",
                "allowed_senders": ["@example.org"],
                "allowed_senders_verified_only": True,
            },
            headers=ROOT,
        )
        assert r.status_code == 201, r.text
        assert r.json()["automatic_mail"] == "accept"
        assert r.json()["allowed_senders_verified_only"] is True


class TestVerifiedSendersOverHttp:
    async def test_a_forged_listed_sender_is_refused_a_verified_one_posted(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        await _options(
            client, inbox, allowed_senders=["alice@example.org"], allowed_senders_verified_only=True
        )

        forged = mailgun_form(inbox.address, subject="Forged")
        r = await client.post("/inbound/mailgun", data=forged)
        assert (r.status_code, r.json()["reason"]) == (406, "sender_not_allowed")

        verified = mailgun_form(inbox.address, subject="Real")
        verified["X-Mailgun-Spf"] = "Pass"
        r = await client.post("/inbound/mailgun", data=verified)
        assert (r.status_code, r.json()["status"]) == (200, "accepted")
        [post] = await inbox.posts()
        assert (post["subject"], post["author"]["verified"]) == ("Real", True)
