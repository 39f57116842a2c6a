"""Automatic mail, sender allow-lists and recipient addresses (DESIGN.md product rules)."""

from __future__ import annotations

import pytest

from app.inbound.model import InboundEmail
from app.inbound.rules import is_auto_reply, normalise_recipient, sender_allowed


def mail(
    headers: tuple[tuple[str, str], ...] = (),
    *,
    envelope_from: str | None = "sender@example.com",
    content_type: str = "text/plain",
) -> InboundEmail:
    return InboundEmail(
        provider="mime",
        recipients=("news.k3x9@in.example.com",),
        envelope_from=envelope_from,
        from_address="sender@example.com",
        from_name=None,
        subject="Hello",
        text="Hello",
        html=None,
        message_id="m1@example.com",
        headers=(("from", "sender@example.com"), ("subject", "Hello"), *headers),
        content_type=content_type,
    )


@pytest.mark.parametrize(
    ("headers", "automatic"),
    [
        pytest.param((), False, id="ordinary mail"),
        pytest.param((("auto-submitted", "auto-replied"),), True, id="out of office"),
        pytest.param((("auto-submitted", "auto-generated"),), True, id="auto-generated"),
        pytest.param((("auto-submitted", "Auto-Replied; owner-email=x@y"),), True, id="params"),
        pytest.param((("auto-submitted", "auto-notified"),), True, id="any value but no"),
        pytest.param((("auto-submitted", "no"),), False, id="Auto-Submitted: no"),
        pytest.param((("auto-submitted", " NO (human)"),), False, id="no with a comment"),
        pytest.param((("auto-submitted", "no; x=y"),), False, id="no with a parameter"),
        pytest.param((("x-autoreply", "yes"),), True, id="X-Autoreply: yes"),
        pytest.param((("x-autorespond", "Out of office"),), True, id="X-Autorespond"),
        pytest.param((("precedence", "junk"),), True, id="Precedence: junk"),
        pytest.param((("precedence", "auto_reply"),), True, id="Precedence: auto_reply"),
        pytest.param((("precedence", " Junk "),), True, id="Precedence case-insensitive"),
        pytest.param((("precedence", "bulk"),), False, id="newsletter: Precedence bulk"),
        pytest.param((("precedence", "list"),), False, id="mailing list: Precedence list"),
        pytest.param(
            (("list-id", "Weekly <weekly.lists.example.com>"), ("list-unsubscribe", "<x>")),
            False,
            id="List-Id",
        ),
        pytest.param((("x-auto-response-suppress", "All"),), False, id="X-Auto-Response-Suppress"),
        pytest.param(
            (("x-auto-response-suppress", "OOF, AutoReply"), ("precedence", "bulk")),
            False,
            id="suppress with bulk",
        ),
        pytest.param(
            (("auto-submitted", "no"), ("auto-submitted", "auto-replied")),
            True,
            id="second Auto-Submitted",
        ),
    ],
)
def test_is_auto_reply_by_headers(headers: tuple[tuple[str, str], ...], automatic: bool) -> None:
    assert is_auto_reply(mail(headers)) is automatic


def test_a_delivery_report_is_automatic() -> None:
    assert is_auto_reply(mail(content_type="multipart/report"))
    assert not is_auto_reply(mail(content_type="multipart/mixed"))


@pytest.mark.parametrize("envelope_from", [None, "", "<>", " <> ", "< >"])
def test_a_null_envelope_sender_is_automatic(envelope_from: str | None) -> None:
    assert is_auto_reply(mail(envelope_from=envelope_from))


def test_a_real_envelope_sender_is_not_automatic() -> None:
    assert not is_auto_reply(mail(envelope_from="<bounce+abc@lists.example.com>"))


@pytest.mark.parametrize(
    ("address", "allowed", "expected"),
    [
        ("anyone@example.com", [], True),
        (None, [], True),
        (None, ["@example.com"], False),
        ("", ["@example.com"], False),
        ("alice@example.com", ["alice@example.com"], True),
        ("Alice@Example.COM", ["alice@example.com"], True),
        ("alice@example.com", ["ALICE@EXAMPLE.COM"], True),
        ("bob@example.com", ["alice@example.com"], False),
        ("bob@example.com", ["@example.com"], True),
        ("bob@EXAMPLE.com", ["@example.com"], True),
        ("bob@mail.example.com", ["@example.com"], False),  # exact domain, no subdomains
        ("bob@badexample.com", ["@example.com"], False),
        ("bob@example.com.evil", ["@example.com"], False),
        ("bob@other.org", ["alice@example.com", "@other.org"], True),
        ("alice@example.com", ["example.com"], False),  # neither an address nor "@domain"
    ],
)
def test_sender_allowed(address: str | None, allowed: list[str], expected: bool) -> None:
    assert sender_allowed(address, allowed) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("news.k3x9@in.example.com", "news.k3x9@in.example.com"),
        ("News.K3X9@In.Example.COM", "news.k3x9@in.example.com"),
        ("  <news.k3x9@in.example.com>  ", "news.k3x9@in.example.com"),
        ("news.k3x9+tag@in.example.com", "news.k3x9@in.example.com"),
        ("news.k3x9+a+b@in.example.com", "news.k3x9@in.example.com"),
        ('"Group news" <News+Tag@In.Example.com>', "news@in.example.com"),
        ("Group <news@in.example.com>", "news@in.example.com"),
        ("news@in.example.com.", "news@in.example.com"),
    ],
)
def test_normalise_recipient(value: str, expected: str) -> None:
    assert normalise_recipient(value) == expected


@pytest.mark.parametrize(
    "value", ["", "   ", "<>", "news", "@in.example.com", "news@", "a b@c.d", "+tag@in.example.com"]
)
def test_normalise_recipient_refuses_non_addresses(value: str) -> None:
    assert normalise_recipient(value) is None
