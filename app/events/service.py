"""Event endpoints (the operator's), rendering events, pulling them, and redelivery."""

from __future__ import annotations

import base64
import builtins
import json
import secrets
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.base import utcnow
from app.db.repository import PageResult
from app.errors import Invalid, InvalidCursor, NotFound
from app.events import signal
from app.events.render import render
from app.events.repository import (
    ATTEMPTS,
    EVENTS,
    MESSAGES,
    EventEndpointRepository,
    EventRow,
    event_values,
    fanout,
    horizon,
    pull_order,
)
from app.events.schemas import EventEndpointCreate, EventEndpointUpdate, EventRead
from app.events.targets import TargetRefused, target
from app.models import (
    Event,
    EventAttempt,
    EventEndpoint,
    EventMessage,
    EventType,
    MessageStatus,
)
from app.posts.service import PostService

ROTATION_OVERLAP = timedelta(hours=24)
SECRET_BYTES = 24


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def body(event: Event) -> EventRead:
    """The event as sent and pulled (its payload rendered already)."""
    return EventRead(
        id=event.id,
        type=event.type,
        timestamp=event.created_at,
        platform_id=event.platform_id,
        data=event.payload or {},
    )


def encode(event: EventRead) -> bytes:
    """The bytes of the POST (signed as they are)."""
    return json.dumps(
        event.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False
    ).encode()


def _cursor(event: Event, dialect: str) -> str:
    key = [event.txid, event.seq] if dialect == "postgresql" else [event.seq]
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, dialect: str) -> list[int]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        size = 2 if dialect == "postgresql" else 1
        if (
            not isinstance(key, list)
            or len(key) != size
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in key)
        ):
            raise ValueError("bad key")
        return key
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("The cursor is not one this service issued.") from exc


def _refused(exc: TargetRefused) -> Invalid:
    return Invalid(
        f"url {exc}.",
        errors=[{"loc": ["body", "url"], "msg": str(exc), "type": "value_error"}],
    )


class EventService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    @property
    def dialect(self) -> str:
        bind = self.session.bind
        return bind.dialect.name if bind is not None else "postgresql"

    async def _checked(self, url: str) -> str:
        try:
            await target(url, self.settings)
        except TargetRefused as exc:
            raise _refused(exc) from None
        return url

    async def create(self, data: EventEndpointCreate) -> EventEndpoint:
        endpoint = EventEndpoint(
            url=await self._checked(data.url),
            description=data.description,
            event_types=[t.value for t in data.event_types],
            platform_ids=list(dict.fromkeys(data.platform_ids)),
            enabled=True,
            secret=new_secret(),
        )
        self.session.add(endpoint)
        await self.session.flush()
        signal.mark(self.session.info, endpoints=True)
        return endpoint

    async def page(self, *, limit: int, cursor: str | None) -> PageResult[EventEndpoint]:
        """Newest first."""
        repository = EventEndpointRepository(self.session)
        return await repository.page(sa.select(EventEndpoint), limit=limit, cursor=cursor)

    async def get(self, endpoint_id: uuid.UUID, *, lock: bool = False) -> EventEndpoint:
        endpoint = await self.session.get(EventEndpoint, endpoint_id, with_for_update=lock)
        if endpoint is None:
            raise NotFound("No such event endpoint.")
        return endpoint

    async def update(self, endpoint_id: uuid.UUID, data: EventEndpointUpdate) -> EventEndpoint:
        endpoint = await self.get(endpoint_id, lock=True)
        changes = data.model_dump(exclude_unset=True)
        if "url" in changes:
            endpoint.url = await self._checked(changes["url"])
        if "description" in changes:
            endpoint.description = changes["description"]
        if "event_types" in changes:
            endpoint.event_types = [EventType(t).value for t in changes["event_types"]]
        if "platform_ids" in changes:
            endpoint.platform_ids = list(dict.fromkeys(changes["platform_ids"]))
        if changes.get("enabled") is True and not endpoint.enabled:
            endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since = True, None, None
        elif changes.get("enabled") is False and endpoint.enabled:
            endpoint.enabled = False
            await self.fail_pending(endpoint.id, "the endpoint was disabled")
        endpoint.updated_at = utcnow()
        await self.session.flush()
        signal.mark(self.session.info, endpoints=True)
        return endpoint

    async def fail_pending(self, endpoint_id: uuid.UUID, error: str) -> None:
        """Its pending messages will not be sent (redeliver brings one back)."""
        await self.session.execute(
            sa.update(MESSAGES)
            .where(
                MESSAGES.c.endpoint_id == endpoint_id,
                MESSAGES.c.status == MessageStatus.pending,
            )
            .values(status=MessageStatus.failed, last_error=error, leased_until=None)
        )

    async def delete(self, endpoint_id: uuid.UUID) -> None:
        endpoint = await self.get(endpoint_id, lock=True)
        await self.session.execute(sa.delete(ATTEMPTS).where(ATTEMPTS.c.endpoint_id == endpoint.id))
        await self.session.execute(sa.delete(MESSAGES).where(MESSAGES.c.endpoint_id == endpoint.id))
        await self.session.delete(endpoint)
        await self.session.flush()

    async def rotate(self, endpoint_id: uuid.UUID) -> EventEndpoint:
        """A new secret; the one it replaces keeps signing beside it for 24 hours."""
        endpoint = await self.get(endpoint_id, lock=True)
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = utcnow() + ROTATION_OVERLAP
        endpoint.secret = new_secret()
        endpoint.updated_at = utcnow()
        await self.session.flush()
        return endpoint

    async def attempts(
        self, endpoint_id: uuid.UUID, *, limit: int, before: int | None
    ) -> tuple[builtins.list[tuple[EventAttempt, MessageStatus]], int | None]:
        """The endpoint's attempts, newest first, with each message's status now."""
        await self.get(endpoint_id)
        stmt = (
            sa.select(EventAttempt, EventMessage.status)
            .join(EventMessage, EventMessage.id == EventAttempt.message_id)
            .where(EventAttempt.endpoint_id == endpoint_id)
            .order_by(EventAttempt.id.desc())
            .limit(limit + 1)
        )
        if before is not None:
            stmt = stmt.where(EventAttempt.id < before)
        rows = [(r[0], r[1]) for r in (await self.session.execute(stmt)).all()]
        if len(rows) <= limit:
            return rows, None
        return rows[:limit], rows[limit - 1][0].id

    async def redeliver(self, event_id: str) -> Event:
        """Send the event again to every endpoint that had it (a message per endpoint); an
        event no endpoint had is offered to the endpoints subscribed to it now."""
        event = (await self.session.scalars(sa.select(Event).where(Event.id == event_id))).first()
        if event is None:
            raise NotFound("No such event.")
        now = utcnow()
        result = await self.session.execute(
            sa.update(MESSAGES)
            .where(MESSAGES.c.event_seq == event.seq)
            .values(
                status=MessageStatus.pending, next_attempt_at=now, leased_until=None, attempts=0
            )
        )
        if not getattr(result, "rowcount", 0):
            statement = fanout(self.dialect, sa.literal(event.seq, MESSAGES.c.event_seq.type))
            values = event_values(_row_of(event), "e_")
            values["e_created_at"] = now
            await self.session.execute(statement, values)
        signal.mark(self.session.info)
        return event

    async def pull(
        self, *, after: str | None, limit: int
    ) -> tuple[builtins.list[Event], str | None]:
        """Events in a stable order, oldest first, after the cursor. PostgreSQL: by (txid,
        seq), only events of transactions older than every one still running, so that an event
        committed late never lands behind a cursor already handed out."""
        dialect = self.dialect
        order = pull_order(dialect)
        stmt = sa.select(Event).where(Event.type != EventType.ping).order_by(*order).limit(limit)
        if dialect == "postgresql":
            stmt = stmt.where(EVENTS.c.txid < horizon(dialect))
        if after is not None:
            key = _decode(after, dialect)
            stmt = stmt.where(sa.tuple_(*order) > sa.tuple_(*key))
        events = list((await self.session.scalars(stmt)).all())
        await render(self.session, PostService(self.session, self.settings).read, events)
        if not events:
            return [], after
        return events, _cursor(events[-1], dialect)


def _row_of(event: Event) -> EventRow:
    return EventRow(
        id=event.id,
        type=event.type,
        platform_id=event.platform_id,
        post_id=event.post_id,
        delivery_id=event.delivery_id,
        integration_id=event.integration_id,
        payload=event.payload,
        created_at=event.created_at,
    )
