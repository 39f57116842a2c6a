"""Every product rule on an inbound mail, in one place, pure: no database, no I/O.

``decide(email, route, settings)`` says whether the mail is posted to an integration (and what
it leaves out) or refused for good, and why; ``over_rate`` says whether counted windows are over
the rate limits. The writer receives these decisions and never re-derives them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.config import Settings
from app.inbound import content
from app.inbound.model import InboundEmail
from app.inbound.rules import (
    GENERATED,
    author_address,
    automatic_kind,
    normalise_recipient,
    sender_allowed,
)
from app.models import AutomaticMail, DeliveryStatus, OversizePolicy, RejectionReason


@dataclass(frozen=True)
class Route:
    """What routing and the rules need of an integration, read without the ORM."""

    id: uuid.UUID
    platform_id: str
    group_id: uuid.UUID | None
    enabled: bool
    allowed_senders: list[str]
    oversize_attachments: OversizePolicy
    deleted_at: datetime | None
    automatic_mail: AutomaticMail = AutomaticMail.refuse
    allowed_senders_verified_only: bool = False
    address: str | None = None  # the address the mail was routed by
    address_valid_until: datetime | None = None  # a previous address's end; None: current

    @classmethod
    def of(cls, row: Any) -> Route:
        """From a row read by name (a SQLAlchemy row's mapping, or an asyncpg record)."""
        return cls(
            id=row["id"],
            platform_id=row["platform_id"],
            group_id=row["group_id"],
            enabled=bool(row["enabled"]),
            allowed_senders=list(row["allowed_senders"] or []),
            oversize_attachments=OversizePolicy(row["oversize_attachments"]),
            deleted_at=row["deleted_at"],
            automatic_mail=AutomaticMail(row["automatic_mail"]),
            allowed_senders_verified_only=bool(row["allowed_senders_verified_only"]),
            address=row.get("routed_address"),
            address_valid_until=row.get("routed_until"),
        )

    def live(self, now: datetime | None = None) -> bool:
        """Whether the address still belongs to the integration: not deleted, and not a
        previous address past its ``valid_until``."""
        if self.deleted_at is not None:
            return False
        until = self.address_valid_until
        return until is None or (now or datetime.now(UTC)) < until


@dataclass(frozen=True)
class Omitted:
    """An attachment the post leaves out, and why (``too_large``)."""

    filename: str
    size: int | None
    reason: str


@dataclass(frozen=True)
class Decision:
    """What to do with the mail for one integration: post it (``status`` None, with what it
    omits), or record ``status`` with ``reason`` (refused for good, or rate limited)."""

    status: DeliveryStatus | None = None
    reason: str | None = None
    omitted: tuple[Omitted, ...] = ()

    @property
    def posts(self) -> bool:
        return self.status is None


RATE_LIMITED = Decision(DeliveryStatus.rate_limited, "rate_limited")


def _refused(reason: RejectionReason) -> Decision:
    return Decision(DeliveryStatus.rejected, reason)


def oversize(email: InboundEmail, settings: Settings) -> list[Any]:
    """The attachments over the limit (not kept while reading, or larger than it)."""
    limit = settings.max_attachment_bytes
    return [a for a in email.attachments if not a.kept or a.size > limit]


def decide(email: InboundEmail, route: Route, settings: Settings) -> Decision:
    """Refused for good (status and reason), or to be posted (with what is omitted)."""
    if not route.live():
        # The address is no longer anyone's (a deleted integration, a previous address past
        # its grace period); the refusal is logged for its platform.
        return _refused(RejectionReason.unknown_recipient)
    if not route.enabled:
        return _refused(RejectionReason.integration_disabled)
    automatic = automatic_kind(email)
    if automatic is not None and not (
        automatic == GENERATED and route.automatic_mail is AutomaticMail.accept
    ):
        return _refused(RejectionReason.auto_reply)
    allowed = list(route.allowed_senders or [])
    if not sender_allowed(author_address(email), allowed):
        return _refused(RejectionReason.sender_not_allowed)
    if allowed and route.allowed_senders_verified_only and not author_verified(email):
        # A listed address is taken at its word only when the provider vouches for it.
        return _refused(RejectionReason.sender_not_allowed)
    too_large = oversize(email, settings)
    if too_large and route.oversize_attachments is OversizePolicy.reject:
        return _refused(RejectionReason.attachment_too_large)
    return Decision(omitted=tuple(Omitted(a.filename, a.size, "too_large") for a in too_large))


def rate_windows(settings: Settings, now: int) -> list[tuple[int, int]]:
    """The ``(seconds, start)`` window of each rate limit at ``now`` (Unix seconds)."""
    return [(limit.seconds, now - now % limit.seconds) for limit in settings.rate_limits]


def over_rate(counts: Sequence[int], settings: Settings) -> bool:
    """Whether the counts of ``rate_windows`` (this mail included) pass any limit."""
    return any(
        count > limit.count for count, limit in zip(counts, settings.rate_limits, strict=True)
    )


# --- routing and dedupe ------------------------------------------------------------------------


def addresses(email: InboundEmail) -> list[str]:
    """The routing forms of the envelope recipients, each once, sorted."""
    return sorted({a for a in map(normalise_recipient, email.recipients) if a})


def is_probe(email: InboundEmail, routed: Sequence[str], settings: Settings) -> bool:
    """A provider's set-up probe names no recipient at our domain. A recipient that an MTA
    names itself (raw MIME: ``?recipient=``, ``X-Envelope-To``) is never one: mail to a domain
    routed to us by mistake is refused, so that the MTA bounces it rather than drops it."""
    domain = "@" + (settings.inbound_domain or "")
    return email.provider != "mime" and not any(a.endswith(domain) for a in routed)


def dedupe_key(email: InboundEmail) -> str:
    """The provider's event id when it has one; else Message-Id with a digest of the content."""
    if email.event_id:
        basis = f"event\0{email.provider}\0{email.event_id}"
    else:
        basis = f"content\0{email.message_id or ''}\0{content.content_digest(email)}"
    return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).hexdigest()


# --- the post's author ----------------------------------------------------------------------------


def _passes(verdicts: str | None, domain: str) -> bool:
    """Whether ``{@domain : pass}``-style text (SendGrid's ``dkim``; a trusted host's DKIM and
    DMARC, app.inbound.authresults) has a pass for exactly ``domain``."""
    for entry in (verdicts or "").lower().replace("{", "").replace("}", "").split(","):
        name, _, verdict = entry.partition(":")
        if verdict.strip() == "pass" and name.strip().lstrip("@") == domain:
            return True
    return False


def author_verified(email: InboundEmail) -> bool:
    """DKIM pass for the author's domain (the From domain, or the envelope sender's for a mail
    without From), a DMARC pass whose header.from is that domain, or an SPF pass for an
    envelope sender of that same domain."""
    author = author_address(email)
    if not author or "@" not in author:
        return False
    domain = author.rsplit("@", 1)[1].lower()
    if _passes(email.dkim, domain) or _passes(email.dmarc, domain):
        return True
    envelope_domain = (email.envelope_from or "").rsplit("@", 1)[-1].strip("<> ").lower()
    return (email.spf or "").strip().lower() == "pass" and envelope_domain == domain
