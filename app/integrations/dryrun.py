"""The dry run of an integration: a described mail, decided by the production rules
(``app.inbound.decide.decide``), nothing stored."""

from __future__ import annotations

from app.config import Settings
from app.inbound.decide import Decision, Route, author_verified, decide
from app.inbound.errors import MalformedMessage
from app.inbound.message import parse_from
from app.inbound.model import InboundAttachment, InboundEmail
from app.inbound.normalise import MISSING, normalise
from app.inbound.rules import author_address
from app.integrations.schemas import (
    DryRunAuthor,
    DryRunOmitted,
    IntegrationTest,
    IntegrationTestResult,
)
from app.models import DeliveryStatus, RejectionReason


def described_mail(data: IntegrationTest, address: str) -> InboundEmail:
    """The mail ``data`` describes, as a provider's payload would have normalised it."""
    from_address, from_name = parse_from(data.from_)
    headers = [(h.name.lower(), h.value) for h in data.headers]
    content_type = next((value for name, value in headers if name == "content-type"), None)
    return normalise(
        provider="test",
        recipients=[address],
        envelope_from=MISSING if data.envelope_from is None else data.envelope_from,
        from_address=from_address,
        from_name=from_name,
        subject=data.subject,
        text="",
        html=None,
        message_id_header=None,
        headers=headers,
        attachments=[
            InboundAttachment(
                filename=a.filename,
                content_type="application/octet-stream",
                size=a.size,
                sha256=None,
            )
            for a in data.attachments
        ],
        content_type_header=content_type,
        spf=data.spf,
        dkim=data.dkim,
    )


def dry_run(
    data: IntegrationTest, route: Route, address: str, settings: Settings
) -> IntegrationTestResult:
    """What the integration would do with the described mail (rate limits and duplicates
    aside: they depend on other mail)."""
    try:
        email = described_mail(data, address)
    except MalformedMessage:  # neither a From address nor an envelope sender, as a provider's
        return IntegrationTestResult(
            status=DeliveryStatus.rejected,
            reason=RejectionReason.malformed_message,
            omitted_attachments=[],
            author=DryRunAuthor(email=None, name=None, verified=False),
        )
    decision: Decision = decide(email, route, settings)
    return IntegrationTestResult(
        status=DeliveryStatus.accepted if decision.posts else DeliveryStatus.rejected,
        reason=decision.reason,
        omitted_attachments=[
            DryRunOmitted(filename=o.filename, size=o.size, reason=o.reason)
            for o in decision.omitted
        ],
        author=DryRunAuthor(
            email=author_address(email), name=email.from_name, verified=author_verified(email)
        ),
    )
