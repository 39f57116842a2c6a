"""The ``verified`` mark: which verdicts vouch for the author shown."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from app.inbound.decide import author_verified
from app.inbound.model import InboundEmail


def mail(**fields: Any) -> InboundEmail:
    values: dict[str, Any] = {
        "provider": "mime",
        "recipients": ("news.x@in.example.com",),
        "envelope_from": "bounce@mailer.example.net",
        "from_address": "alice@example.org",
        "from_name": None,
        "subject": "",
        "text": "",
        "html": None,
        "message_id": None,
        **fields,
    }
    return InboundEmail(**values)


class TestVerified:
    @pytest.mark.parametrize(
        ("fields", "verified"),
        [
            ({"dkim": "{@example.org : pass}"}, True),
            ({"dkim": "{@mailer.example.net : pass}, {@example.org : fail}"}, False),
            ({"dmarc": "{@example.org : pass}"}, True),
            ({"dmarc": "{@example.org : fail}"}, False),
            ({"dmarc": "{@other.example : pass}"}, False),
            ({"spf": "pass"}, False),  # the envelope sender's domain is not the From domain
            ({"spf": "pass", "envelope_from": "bounce@example.org"}, True),
            ({"spf": "softfail", "envelope_from": "bounce@example.org"}, False),
            ({"dkim": "Pass"}, False),  # Mailgun's verdict names no domain
        ],
    )
    def test_a_pass_counts_only_for_the_from_domain(
        self, fields: dict[str, Any], verified: bool
    ) -> None:
        assert author_verified(mail(**fields)) is verified

    def test_without_from_the_envelope_sender_is_the_author_judged(self) -> None:
        email = mail(from_address=None, envelope_from="bounce@example.org", spf="pass")
        assert author_verified(email) is True
        assert author_verified(mail(from_address=None, envelope_from=None, spf="pass")) is False


class TestKeptDocuments:
    def test_a_document_kept_before_dmarc_existed_still_loads(self) -> None:
        doc = asdict(mail(dkim="{@example.org : pass}"))
        del doc["dmarc"]
        assert InboundEmail(**doc).dmarc is None
