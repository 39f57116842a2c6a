from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, ConfigDict, Field

from app.models import DeliveryStatus, RejectionReason
from app.schemas import ReadModel

# A delivery's reason: a refusal reason, or `rate_limited` (status `rate_limited`).
DeliveryReason = RejectionReason | Literal["rate_limited"]

DELIVERY_EXAMPLE: dict[str, Any] = {
    "id": "5a1e7c3b-9d2f-4b6a-8e0c-7f1a2b3c4d5e",
    "integration_id": "6c4be14f-9746-4e1a-968f-3db8f987bb20",
    "provider": "mailgun",
    "status": "rejected",
    "reason": "attachment_too_large",
    "envelope_from": "news@example.org",
    "envelope_to": "weekly-newsletter.75ekp282n39radq92i2kcyimtj@in.example.com",
    "from": "news@example.org",
    "subject": "This week",
    "size_bytes": 7340032,
    "message_id": "1@example.org",
    "spf": "pass",
    "dkim": "pass",
    "post_id": None,
    "error": None,
    "received_at": "2026-11-28T19:07:01.000Z",
    "address": "weekly-newsletter.75ekp282n39radq92i2kcyimtj@in.example.com",
}


class DeliveryRead(ReadModel):
    model_config = ConfigDict(json_schema_extra={"examples": [DELIVERY_EXAMPLE]})

    id: uuid.UUID
    """The delivery's id."""
    integration_id: uuid.UUID | None
    """The integration the mail was for; null when it matched none (unrouted)."""
    provider: Literal["mailgun", "sendgrid", "postmark", "mime"]
    """The inbound endpoint it came through."""
    status: DeliveryStatus
    """`accepted`, `duplicate`, `rejected`, `rate_limited` or `failed` (replayable)."""
    reason: DeliveryReason | None
    """Why it was not posted: a refusal reason, or `rate_limited`; null otherwise."""
    envelope_from: str | None
    """The envelope sender."""
    envelope_to: str | None
    """The envelope recipients, comma-separated."""
    from_: str | None = Field(
        validation_alias=AliasChoices("from_", "from"), serialization_alias="from"
    )
    """The From address."""
    subject: str | None
    """The subject."""
    size_bytes: int
    """The mail's size."""
    message_id: str | None
    """The Message-Id header, without angle brackets."""
    spf: str | None
    """The provider's SPF verdict."""
    dkim: str | None
    """The provider's DKIM verdict."""
    post_id: uuid.UUID | None
    """The post made from it, if any."""
    error: str | None
    """What failed (status `failed`)."""
    received_at: datetime
    """When it arrived."""
    address: str | None
    """The integration's address the mail came to: its current one, or a previous one (see
    `rotate-address`); null for mail that matched no integration (and for mail logged before
    addresses were recorded)."""
