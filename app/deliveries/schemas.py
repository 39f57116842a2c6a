from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import AliasChoices, Field

from app.models import DeliveryStatus
from app.schemas import ReadModel


class DeliveryRead(ReadModel):
    id: uuid.UUID
    integration_id: uuid.UUID | None
    provider: str
    status: DeliveryStatus
    reason: str | None
    envelope_from: str | None
    envelope_to: str | None
    from_: str | None = Field(
        validation_alias=AliasChoices("from_", "from"), serialization_alias="from"
    )
    subject: str | None
    size_bytes: int
    message_id: str | None
    spf: str | None
    dkim: str | None
    post_id: uuid.UUID | None
    error: str | None
    received_at: datetime
