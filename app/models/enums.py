"""Enumerations stored in the database (as strings, never native enums)."""

from __future__ import annotations

from enum import StrEnum


class Plan(StrEnum):
    """A platform's plan: it caps the integrations (`essentials` 3, `standard` 10, `premium`
    unlimited)."""

    essentials = "essentials"
    standard = "standard"
    premium = "premium"

    @property
    def integration_limit(self) -> int | None:
        return PLAN_LIMITS[self]

    def allows(self, count: int) -> bool:
        limit = self.integration_limit
        return limit is None or count <= limit


PLAN_LIMITS: dict[Plan, int | None] = {Plan.essentials: 3, Plan.standard: 10, Plan.premium: None}


class Role(StrEnum):
    """A user's role on the platform (the token's `role` claim)."""

    admin = "admin"
    member = "member"


class GroupRole(StrEnum):
    """A member's role in a group: a `manager` may change the group and its members."""

    manager = "manager"
    member = "member"


class Service(StrEnum):
    """The service of an integration; only `email` exists."""

    email = "email"


class OversizePolicy(StrEnum):
    """Mail with an attachment over the limit: `reject` it, or post it and `drop` the oversized
    files."""

    reject = "reject"
    drop = "drop"


class AutomaticMail(StrEnum):
    """Automatic notifications (``Auto-Submitted: auto-generated``): `refuse` them as
    `auto_reply`, or `accept` them. Automatic replies, bounces and delivery reports are refused
    either way."""

    refuse = "refuse"
    accept = "accept"


class DeliveryStatus(StrEnum):
    """What became of one mail for one integration."""

    accepted = "accepted"
    duplicate = "duplicate"
    rejected = "rejected"
    rate_limited = "rate_limited"
    failed = "failed"


class RejectionReason(StrEnum):
    """Why a mail was refused for good (stable codes)."""

    unknown_recipient = "unknown_recipient"
    attachment_too_large = "attachment_too_large"
    auto_reply = "auto_reply"
    sender_not_allowed = "sender_not_allowed"
    integration_disabled = "integration_disabled"
    malformed_message = "malformed_message"
    message_too_complex = "message_too_complex"
