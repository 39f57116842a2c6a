from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator

from app.deliveries.schemas import DeliveryRead
from app.integrations.schemas import IntegrationRead
from app.models import EventType, MessageStatus
from app.platforms.schemas import PlatformId
from app.posts.schemas import PostRead
from app.schemas import NullRefused, ReadModel, WriteModel

Url = Annotated[str, Field(min_length=1, max_length=2048)]
Description = Annotated[str, Field(max_length=400)]
# `ping` is sent to one endpoint on request; it is not something to subscribe to.
SubscribableType = Annotated[EventType, Field(description="An event type (not `ping`).")]


def _no_ping(types: list[EventType] | None) -> list[EventType] | None:
    if types is not None and EventType.ping in types:
        raise ValueError("`ping` is sent on request only and cannot be subscribed to")
    return None if types is None else list(dict.fromkeys(types))


class EventEndpointCreate(WriteModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://host.example/mailslot/events",
                    "description": "search indexer",
                    "event_types": ["post.created", "post.deleted"],
                }
            ]
        }
    )

    url: Url
    """Where events are POSTed: `https://` in production, never to a private address."""
    description: Annotated[Description, NullRefused] = ""
    """A note for the operator."""
    event_types: Annotated[list[SubscribableType], NullRefused] = []
    """The types it receives; empty: every type."""
    platform_ids: Annotated[list[PlatformId], NullRefused] = []
    """The platforms whose events it receives; empty: every platform."""

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[EventType] | None) -> list[EventType] | None:
        return _no_ping(value)


class EventEndpointUpdate(WriteModel):
    """Only the fields given change; `null` is refused (422)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"enabled": True}]})

    url: Annotated[Url | None, NullRefused] = None
    """New URL (checked as on creation)."""
    description: Annotated[Description | None, NullRefused] = None
    """New note."""
    event_types: Annotated[list[SubscribableType] | None, NullRefused] = None
    """New types; empty: every type."""
    platform_ids: Annotated[list[PlatformId] | None, NullRefused] = None
    """New platforms; empty: every platform."""
    enabled: Annotated[bool | None, NullRefused] = None
    """`false` stops sending (its pending events are marked failed); `true` enables it again
    and clears `disabled_reason`."""

    @field_validator("url", "description", "event_types", "platform_ids", "enabled", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("must not be null")
        return value

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[EventType] | None) -> list[EventType] | None:
        return _no_ping(value)


ENDPOINT_EXAMPLE: dict[str, Any] = {
    "id": "0f3c8a52-9b1e-4d7a-8c2f-5e6a7b8c9d01",
    "url": "https://host.example/mailslot/events",
    "description": "search indexer",
    "event_types": ["post.created", "post.deleted"],
    "platform_ids": [],
    "enabled": True,
    "disabled_reason": None,
    "failing_since": None,
    "previous_secret_expires_at": None,
    "created_at": "2026-12-07T10:00:00.000Z",
    "updated_at": "2026-12-07T10:00:00.000Z",
}


class EventEndpointRead(ReadModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ENDPOINT_EXAMPLE]})

    id: uuid.UUID
    """The endpoint's id."""
    url: str
    """Where events are POSTed."""
    description: str
    """The operator's note."""
    event_types: list[EventType]
    """The types it receives; empty: every type."""
    platform_ids: list[str]
    """The platforms whose events it receives; empty: every platform."""
    enabled: bool
    """Whether events are sent to it."""
    disabled_reason: str | None
    """Why the service disabled it (failing for 5 days), until it is enabled again."""
    failing_since: datetime | None
    """Since when every try has failed; null while it answers."""
    previous_secret_expires_at: datetime | None
    """Until when the secret before the last rotation still signs beside the new one."""
    created_at: datetime
    """When it was created."""
    updated_at: datetime
    """When it last changed."""


class EventEndpointWithSecret(EventEndpointRead):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**ENDPOINT_EXAMPLE, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]
        }
    )

    secret: str
    """The signing secret (`whsec_` and base64), shown only now: verify every event with it."""


class PingResult(ReadModel):
    event_id: str
    """The `ping` event's id (its `webhook-id`)."""
    delivered: bool
    """Whether the endpoint answered 2xx."""
    status_code: int | None
    """The endpoint's answer code; null when it could not be reached."""
    duration_ms: float
    """How long the try took."""
    error: str | None
    """Why it failed, when it did."""


class EventAttemptRead(ReadModel):
    id: int
    """The attempt's id."""
    event_id: str
    """The event tried."""
    at: datetime
    """When it was tried."""
    status: MessageStatus
    """The event's status for this endpoint now: `pending`, `delivered` or `failed`."""
    status_code: int | None
    """The endpoint's answer code; null when it could not be reached."""
    duration_ms: float
    """How long the try took."""
    error: str | None
    """Why it failed, when it did."""
    next_attempt_at: datetime | None
    """When it is tried again; null when it will not be."""


EVENT_EXAMPLE: dict[str, Any] = {
    "id": "evt_5f2b9c1d0a8e4f6b9d7c5a3e1f0b2d4c",
    "type": "post.deleted",
    "timestamp": "2026-12-07T10:00:00.000Z",
    "platform_id": "acme",
    "data": {
        "id": "3f0c2a9e-8a34-4d5e-9a57-0f1d1c4b2a10",
        "group_id": "911a1c35-9e0d-4ca7-91e0-dbae774dd041",
        "integration_id": "6c4be14f-9746-4e1a-968f-3db8f987bb20",
    },
}


class EventRead(ReadModel):
    """An event as sent to endpoints (the body of the POST) and as pulled."""

    model_config = ConfigDict(json_schema_extra={"examples": [EVENT_EXAMPLE]})

    id: str
    """Unique id (also the `webhook-id` header): the same on every retry and redelivery."""
    type: EventType
    """What happened."""
    timestamp: datetime
    """When it happened."""
    platform_id: str | None
    """The platform it happened on (null for `ping`)."""
    data: dict[str, Any]
    """The object: a post, a delivery, an integration (as the API returns them), or for
    `post.deleted` `{id, group_id, integration_id}`."""


class EventPage(ReadModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [EVENT_EXAMPLE], "next_cursor": "WzEyMzQ1LDY3OF0"}]
        }
    )

    items: list[EventRead]
    """This page's events, oldest first."""
    next_cursor: str | None
    """Pass as `after` for the next page. An empty page answers the cursor it was given (null
    only when there was none and no event yet): keep it and ask again later for newer events."""


# --- the catalogue (OpenAPI `webhooks`) ------------------------------------------------------


class _Envelope(ReadModel):
    id: str
    """Unique id (also the `webhook-id` header)."""
    timestamp: datetime
    """When it happened."""
    platform_id: str
    """The platform it happened on."""


class PostDeletedData(ReadModel):
    id: uuid.UUID
    """The deleted post's id."""
    group_id: uuid.UUID
    """Its group."""
    integration_id: uuid.UUID
    """The integration it came through."""


class PostCreatedEvent(_Envelope):
    type: Annotated[str, Field(json_schema_extra={"const": "post.created"})]
    """`post.created`"""
    data: PostRead
    """The post as the feed returns it (attachments' metadata, no bytes; their signed URLs
    are short-lived: read the post for fresh ones)."""


class PostDeletedEvent(_Envelope):
    type: Annotated[str, Field(json_schema_extra={"const": "post.deleted"})]
    """`post.deleted`"""
    data: PostDeletedData
    """Which post."""


class DeliveryEvent(_Envelope):
    type: Annotated[
        str, Field(json_schema_extra={"enum": ["delivery.rejected", "delivery.failed"]})
    ]
    """`delivery.rejected` or `delivery.failed`"""
    data: DeliveryRead
    """The delivery as the log returns it."""


class IntegrationEvent(_Envelope):
    type: Annotated[
        str, Field(json_schema_extra={"enum": ["integration.created", "integration.deleted"]})
    ]
    """`integration.created` or `integration.deleted`"""
    data: IntegrationRead
    """The integration as the API returns it."""


class PingEvent(ReadModel):
    id: str
    """Unique id."""
    type: Annotated[str, Field(json_schema_extra={"const": "ping"})]
    """`ping`"""
    timestamp: datetime
    """When it was sent."""
    platform_id: None = None
    """Always null."""
    data: dict[str, Any]
    """`{"endpoint_id": ...}`"""
