"""Writing events: one function for every emitter, in the caller's transaction.

The inbound writer's PostgreSQL statement inserts ``post.created`` as CTEs of its own statement
(the same insert and fan-out, ``app.events.repository``); everything else calls ``emit``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.deliveries.schemas import DeliveryRead
from app.events import signal
from app.events.repository import EventRow, emit_rows, new_event_id
from app.integrations.schemas import IntegrationRead
from app.models import DeliveryStatus, EventType

# What a delivery's status reports (the others report nothing: accepted mail reports its post).
DELIVERY_EVENTS = {
    DeliveryStatus.rejected: EventType.delivery_rejected,
    DeliveryStatus.failed: EventType.delivery_failed,
}


class _Post(Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def platform_id(self) -> str: ...
    @property
    def integration_id(self) -> uuid.UUID: ...


def post_created_id(post_id: uuid.UUID) -> str:
    """The id of a post's ``post.created`` event (one per post): found by its post."""
    return "evt_" + post_id.hex


def post_created(post: _Post) -> EventRow:
    """``post.created``; its payload is rendered from the post when first needed, not copied."""
    return EventRow(
        id=post_created_id(post.id),
        type=EventType.post_created,
        platform_id=post.platform_id,
        post_id=post.id,
        integration_id=post.integration_id,
    )


def delivery_event(delivery: Any) -> EventRow | None:
    """``delivery.rejected`` or ``delivery.failed`` of a platform's delivery (a row or a model),
    with the delivery as the log returns it; None for other statuses and unrouted mail."""
    event_type = DELIVERY_EVENTS.get(delivery.status)
    if event_type is None or delivery.platform_id is None:
        return None
    data = DeliveryRead.model_validate(delivery).model_dump(mode="json", by_alias=True)
    return EventRow(
        id=new_event_id(),
        type=event_type,
        platform_id=delivery.platform_id,
        delivery_id=delivery.id,
        integration_id=delivery.integration_id,
        post_id=delivery.post_id,
        payload=data,
    )


def integration_event(event_type: EventType, integration: Any, read: Any = None) -> EventRow:
    """``integration.created`` or ``integration.deleted``, with the integration as the API
    returns it (``read``: that already, with its stats)."""
    data = (read or IntegrationRead.of(integration)).model_dump(mode="json")
    return event(event_type, integration.platform_id, data, integration_id=integration.id)


def integration_deleted(integration: Any) -> EventRow:
    return integration_event(EventType.integration_deleted, integration)


def event(
    event_type: EventType,
    platform_id: str | None,
    data: dict[str, Any],
    *,
    post_id: uuid.UUID | None = None,
    delivery_id: uuid.UUID | None = None,
    integration_id: uuid.UUID | None = None,
) -> EventRow:
    return EventRow(
        id=new_event_id(),
        type=event_type,
        platform_id=platform_id,
        post_id=post_id,
        delivery_id=delivery_id,
        integration_id=integration_id,
        payload=data,
    )


async def emit(conn: AsyncConnection | AsyncSession, rows: Sequence[EventRow | None]) -> None:
    """Write the events (None: nothing) with a message for every subscribed endpoint, in the
    caller's transaction; a session's dispatchers are woken once it commits."""
    written = [row for row in rows if row is not None]
    if not written:
        return
    await emit_rows(conn, written)
    if isinstance(conn, AsyncSession):
        signal.mark(conn.info)
