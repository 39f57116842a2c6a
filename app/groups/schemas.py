from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator

from app.models.enums import GroupRole
from app.schemas import Name, ReadModel, WriteModel


def _description(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > 2000:
        raise ValueError("must be at most 2000 characters")
    if any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


Description = Annotated[str | None, AfterValidator(_description)]


class GroupCreate(WriteModel):
    name: Name
    description: Description = None


class GroupUpdate(WriteModel):
    name: Name | None = None
    description: Description = None
    members_can_add_integrations: bool | None = None


class GroupRead(ReadModel):
    id: uuid.UUID
    name: str
    description: str | None
    members_can_add_integrations: bool
    created_by: str
    created_at: datetime


class MembershipUpdate(WriteModel):
    role: GroupRole


class MemberRead(ReadModel):
    user_id: str
    group_id: uuid.UUID
    role: GroupRole
    created_at: datetime
