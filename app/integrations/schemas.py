from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from app.integrations.addresses import display_address
from app.models import Integration, OversizePolicy, Service
from app.schemas import Name, ReadModel, Title, WriteModel

# Every label, the last one too, starts and ends with a letter or digit.
_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9][a-z0-9-]{0,61}[a-z0-9]"
_SENDER = re.compile(rf"(?:[^\s@<>()\[\],;:\"\\\x00-\x1f\x7f-\x9f]{{1,64}})?@{_DOMAIN}")


def _sender(value: str) -> str:
    value = value.strip().lower()
    if not _SENDER.fullmatch(value):
        raise ValueError("must be an address (name@example.com) or a domain (@example.com)")
    return value


Sender = Annotated[str, Field(max_length=320), AfterValidator(_sender)]
Senders = Annotated[list[Sender], Field(max_length=200)]


class NewGroup(WriteModel):
    name: Name


class IntegrationCreate(WriteModel):
    title: Title
    group_id: uuid.UUID | None = None
    new_group: NewGroup | None = None
    allowed_senders: Senders = []
    oversize_attachments: OversizePolicy = OversizePolicy.reject
    service: Service = Service.email

    @model_validator(mode="after")
    def _one_group(self) -> Self:
        if (self.group_id is None) == (self.new_group is None):
            raise ValueError("give exactly one of group_id and new_group")
        return self


class IntegrationUpdate(WriteModel):
    title: Title | None = None
    enabled: bool | None = None
    allowed_senders: Senders | None = None
    oversize_attachments: OversizePolicy | None = None

    @field_validator("title", "enabled", "allowed_senders", "oversize_attachments", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Only given fields are validated: left out is "keep", null is refused by name.
        if value is None:
            raise ValueError("must not be null")
        return value


class IntegrationStats(ReadModel):
    accepted: int = 0
    refused: int = 0
    last_received_at: datetime | None = None


class IntegrationRead(ReadModel):
    id: uuid.UUID
    service: Service
    title: str
    address: str
    display_address: str
    group_id: uuid.UUID | None
    enabled: bool
    created_by: str
    created_at: datetime
    allowed_senders: list[str]
    oversize_attachments: OversizePolicy
    stats: IntegrationStats

    @classmethod
    def of(cls, integration: Integration, stats: IntegrationStats | None = None) -> Self:
        return cls(
            id=integration.id,
            service=integration.service,
            title=integration.title,
            address=integration.address,
            display_address=display_address(integration.title, integration.address),
            group_id=integration.group_id,
            enabled=integration.enabled,
            created_by=integration.created_by,
            created_at=integration.created_at,
            allowed_senders=list(integration.allowed_senders or []),
            oversize_attachments=integration.oversize_attachments,
            stats=stats or IntegrationStats(),
        )


class IntegrationPage(ReadModel):
    items: list[IntegrationRead]
    total: int
    next_cursor: str | None
