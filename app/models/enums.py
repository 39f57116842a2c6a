"""Enumerations stored in the database (as strings, never native enums)."""

from __future__ import annotations

from enum import StrEnum


class Plan(StrEnum):
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
    admin = "admin"
    member = "member"


class GroupRole(StrEnum):
    manager = "manager"
    member = "member"


class Service(StrEnum):
    email = "email"


class OversizePolicy(StrEnum):
    reject = "reject"
    drop = "drop"


class DeliveryStatus(StrEnum):
    accepted = "accepted"
    duplicate = "duplicate"
    rejected = "rejected"
    rate_limited = "rate_limited"
    failed = "failed"


class RejectionReason(StrEnum):
    unknown_recipient = "unknown_recipient"
    attachment_too_large = "attachment_too_large"
    auto_reply = "auto_reply"
    sender_not_allowed = "sender_not_allowed"
    integration_disabled = "integration_disabled"
    malformed_message = "malformed_message"
    message_too_complex = "message_too_complex"
