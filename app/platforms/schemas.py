from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, field_validator

from app.models.enums import Plan
from app.schemas import Name, ReadModel, WriteModel

PlatformId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class PlatformCreate(WriteModel):
    name: Name
    plan: Plan
    id: PlatformId | None = None


class PlatformUpdate(WriteModel):
    name: Name | None = None
    plan: Plan | None = None

    @field_validator("name", "plan", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Left out is "keep"; null would otherwise be a silent no-op.
        if value is None:
            raise ValueError("must not be null")
        return value


class PlatformRead(ReadModel):
    id: str
    name: str
    plan: Plan
    created_at: datetime


class PlatformSettings(ReadModel):
    members_can_add_integrations: bool


class PlatformSettingsUpdate(WriteModel):
    members_can_add_integrations: bool


class IntegrationUsage(ReadModel):
    count: int
    limit: int | None


class PlatformUsage(ReadModel):
    integrations: IntegrationUsage


class PlatformDetail(ReadModel):
    id: str
    name: str
    plan: Plan
    settings: PlatformSettings
    usage: PlatformUsage
