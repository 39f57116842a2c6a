from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, WithJsonSchema

from app.models.enums import GroupRole
from app.schemas import Name, NullRefused, ReadModel, WriteModel

DESCRIPTION_MAX_LENGTH = 2000


def _description(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > DESCRIPTION_MAX_LENGTH:
        raise ValueError(f"must be at most {DESCRIPTION_MAX_LENGTH} characters")
    if any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


DescriptionText = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": DESCRIPTION_MAX_LENGTH,
            "pattern": r"^[^\u0000-\u0008\u000b-\u001f\u007f]*$",
        }
    ),
]
Description = Annotated[DescriptionText | None, AfterValidator(_description)]


class GroupCreate(WriteModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Communication", "description": "News in."}]}
    )

    name: Name
    """Display name: 1 to 200 characters after trimming, no control characters."""
    description: Description = None
    """Up to 2000 characters (line breaks and tabs allowed)."""


class GroupUpdate(WriteModel):
    """Only the fields given change; `null` clears `description` and is refused elsewhere."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Press and news"}]})

    name: Annotated[Name | None, NullRefused] = None
    """New display name (not null)."""
    description: Description = None
    """New description; `null` clears it."""
    members_can_add_integrations: Annotated[bool | None, NullRefused] = None
    """Whether any member of this group may add integrations to it (not null)."""


class GroupRead(ReadModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "911a1c35-9e0d-4ca7-91e0-dbae774dd041",
                    "name": "Communication",
                    "description": None,
                    "members_can_add_integrations": False,
                    "created_by": "alice",
                    "created_at": "2026-11-28T19:05:58.101Z",
                }
            ]
        }
    )

    id: uuid.UUID
    """The group's id."""
    name: str
    """Display name."""
    description: str | None
    """Description, or null."""
    members_can_add_integrations: bool
    """Whether any member of this group may add integrations to it."""
    created_by: str
    """User id (the token's `sub`) of the creator, who manages the group."""
    created_at: datetime
    """When it was created (RFC 3339, UTC)."""


class MembershipUpdate(WriteModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "manager"}]})

    role: GroupRole
    """`manager` (may change the group, its members, and delete its posts) or `member`."""


class MemberRead(ReadModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "bob",
                    "group_id": "911a1c35-9e0d-4ca7-91e0-dbae774dd041",
                    "role": "member",
                    "created_at": "2026-11-28T19:06:10.000Z",
                }
            ]
        }
    )

    user_id: str
    """The member's user id (the token's `sub`)."""
    group_id: uuid.UUID
    """The group."""
    role: GroupRole
    """`manager` or `member`."""
    created_at: datetime
    """When the membership was made."""
