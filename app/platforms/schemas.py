from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator

from app.models.enums import Plan
from app.schemas import Name, NullRefused, ReadModel, WriteModel

PlatformId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class PlatformCreate(WriteModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": "acme", "name": "Acme", "plan": "essentials"}]}
    )

    name: Name
    """Display name: 1 to 200 characters after trimming."""
    plan: Plan
    """Caps the integrations: `essentials` 3, `standard` 10, `premium` unlimited."""
    id: Annotated[PlatformId | None, NullRefused] = None
    """The host platform's own id (1 to 64 of `A-Z a-z 0-9 _ . : -`); generated when left out."""


class PlatformUpdate(WriteModel):
    """Only the fields given change; `null` is refused (422)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"plan": "standard"}]})

    name: Annotated[Name | None, NullRefused] = None
    """New display name."""
    plan: Annotated[Plan | None, NullRefused] = None
    """New plan; a downgrade below current usage is allowed (new integrations are refused)."""

    @field_validator("name", "plan", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Left out is "keep"; null would otherwise be a silent no-op.
        if value is None:
            raise ValueError("must not be null")
        return value


class PlatformRead(ReadModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "acme",
                    "name": "Acme",
                    "plan": "essentials",
                    "created_at": "2026-11-28T19:05:57.702Z",
                }
            ]
        }
    )

    id: str
    """The platform's id (the `platform` claim of its users' tokens)."""
    name: str
    """Display name."""
    plan: Plan
    """The plan."""
    created_at: datetime
    """When it was created."""


class PlatformSettings(ReadModel):
    members_can_add_integrations: bool
    """Whether any member may add integrations to the groups they belong to."""


class PlatformSettingsUpdate(WriteModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"members_can_add_integrations": True}]}
    )

    members_can_add_integrations: bool
    """Whether any member may add integrations to the groups they belong to."""


class IntegrationUsage(ReadModel):
    count: int
    """Integrations on the platform, disabled ones included (deleted ones not)."""
    limit: int | None
    """The plan's cap; null when unlimited."""


class PlatformUsage(ReadModel):
    integrations: IntegrationUsage
    """Integrations against the plan's cap."""


class PlatformDetail(ReadModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "acme",
                    "name": "Acme",
                    "plan": "essentials",
                    "settings": {"members_can_add_integrations": False},
                    "usage": {"integrations": {"count": 2, "limit": 3}},
                }
            ]
        }
    )

    id: str
    """The platform's id."""
    name: str
    """Display name."""
    plan: Plan
    """The plan."""
    settings: PlatformSettings
    """Platform-wide settings."""
    usage: PlatformUsage
    """Usage against the plan."""


class PlatformDeletionRead(ReadModel):
    """The removal of a platform (`DELETE /v1/platforms/{id}`) and how far it got."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "platform_id": "acme",
                    "status": "running",
                    "removed": {"attachments": 1200, "posts": 800, "deliveries": 500},
                    "error": None,
                    "requested_at": "2026-12-07T11:20:00.000Z",
                    "updated_at": "2026-12-07T11:20:03.000Z",
                    "finished_at": None,
                },
                {
                    "platform_id": "acme",
                    "status": "done",
                    "removed": {
                        "attachments": 1200,
                        "posts": 800,
                        "provider_tokens": 950,
                        "deliveries": 1000,
                        "rate_counters": 6,
                        "integrations": 2,
                        "group_members": 4,
                        "groups": 2,
                        "blobs": 1150,
                        "blobs_kept": 50,
                    },
                    "error": None,
                    "requested_at": "2026-12-07T11:20:00.000Z",
                    "updated_at": "2026-12-07T11:20:09.000Z",
                    "finished_at": "2026-12-07T11:20:09.000Z",
                },
            ]
        }
    )

    platform_id: str
    """The platform being removed."""
    status: Literal["running", "done", "failed"]
    """`running`; `done` once nothing of it is left; `failed` (see `error`): `DELETE` again to
    carry on."""
    removed: dict[str, int]
    """Rows removed so far, by table, in the order they are removed; when done, `blobs`
    (removed from the blob store) and `blobs_kept` (named by another platform, or stored again
    lately: the cleanup command removes the latter once nothing names them)."""
    error: str | None
    """Why it stopped (status `failed`)."""
    requested_at: datetime
    """When it was asked for."""
    updated_at: datetime
    """The last progress."""
    finished_at: datetime | None
    """When it was done."""
