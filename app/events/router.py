from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from app.api.deps import Operator, SessionDep, SettingsDep
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, Pagination
from app.api.problems import responses
from app.errors import InvalidCursor, NotFound
from app.events.dispatcher import Dispatcher
from app.events.schemas import (
    EventAttemptRead,
    EventEndpointCreate,
    EventEndpointRead,
    EventEndpointUpdate,
    EventEndpointWithSecret,
    EventPage,
    EventRead,
    PingResult,
)
from app.events.service import EventService, body


async def event_service(session: SessionDep, settings: SettingsDep) -> EventService:
    return EventService(session, settings)


Service = Annotated[EventService, Depends(event_service)]

router = APIRouter(tags=["events"], dependencies=[Operator], responses=responses(401))


def dispatcher(request: Request) -> Dispatcher:
    found: Dispatcher = request.app.state.events
    return found


def _secret(endpoint: object) -> EventEndpointWithSecret:
    return EventEndpointWithSecret.model_validate(endpoint)


@router.post("/v1/event-endpoints", status_code=201, responses=responses(422))
async def create_event_endpoint(
    body: EventEndpointCreate, service: Service
) -> EventEndpointWithSecret:
    """Subscribe a URL to events. The answer holds the signing secret, shown only now."""
    return _secret(await service.create(body))


@router.get("/v1/event-endpoints", status_code=200, responses=responses(422))
async def list_event_endpoints(service: Service, page: Pagination) -> Page[EventEndpointRead]:
    """Every event endpoint, newest first (secrets are never listed)."""
    result = await service.page(limit=page.limit, cursor=page.cursor)
    return Page(
        items=[EventEndpointRead.model_validate(e) for e in result.items],
        next_cursor=result.next_cursor,
    )


@router.get("/v1/event-endpoints/{endpoint_id}", status_code=200, responses=responses(404, 422))
async def get_event_endpoint(endpoint_id: uuid.UUID, service: Service) -> EventEndpointRead:
    """One event endpoint; `disabled_reason` says why the service disabled it."""
    return EventEndpointRead.model_validate(await service.get(endpoint_id))


@router.patch("/v1/event-endpoints/{endpoint_id}", status_code=200, responses=responses(404, 422))
async def update_event_endpoint(
    endpoint_id: uuid.UUID, body: EventEndpointUpdate, service: Service
) -> EventEndpointRead:
    """Change the URL, types, platforms or description, or enable or disable it."""
    return EventEndpointRead.model_validate(await service.update(endpoint_id, body))


@router.delete("/v1/event-endpoints/{endpoint_id}", status_code=204, responses=responses(404, 422))
async def delete_event_endpoint(endpoint_id: uuid.UUID, service: Service) -> Response:
    """Unsubscribe: nothing more is sent to it; its attempts are forgotten."""
    await service.delete(endpoint_id)
    return Response(status_code=204)


@router.post(
    "/v1/event-endpoints/{endpoint_id}/rotate-secret",
    status_code=200,
    responses=responses(404, 422),
)
async def rotate_event_endpoint_secret(
    endpoint_id: uuid.UUID, service: Service
) -> EventEndpointWithSecret:
    """A new signing secret, shown only now. For 24 hours every event carries a signature with
    the new secret and one with the old, so the receiver can switch at any moment."""
    return _secret(await service.rotate(endpoint_id))


@router.post(
    "/v1/event-endpoints/{endpoint_id}/ping", status_code=200, responses=responses(404, 422)
)
async def ping_event_endpoint(endpoint_id: uuid.UUID, request: Request) -> PingResult:
    """Send a `ping` event to the endpoint now, and answer what it answered."""
    # No request transaction: the dispatcher writes in short ones of its own, and none is held
    # open while the endpoint answers (SQLite's one writer would wait for it).
    try:
        event_id, outcome = await dispatcher(request).ping(endpoint_id)
    except LookupError:
        raise NotFound("No such event endpoint.") from None
    return PingResult(
        event_id=event_id,
        delivered=outcome.delivered,
        status_code=outcome.status_code,
        duration_ms=outcome.duration_ms,
        error=outcome.error,
    )


def _attempt_cursor(value: int | None) -> str | None:
    if value is None:
        return None
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def _attempt_key(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.isdigit():
            raise ValueError(raw)
        return int(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("The cursor is not one this service issued.") from exc


@router.get(
    "/v1/event-endpoints/{endpoint_id}/attempts", status_code=200, responses=responses(404, 422)
)
async def list_event_attempts(
    endpoint_id: uuid.UUID, service: Service, page: Pagination
) -> Page[EventAttemptRead]:
    """The endpoint's tries, newest first: answer code, duration, error, next try."""
    rows, last = await service.attempts(
        endpoint_id, limit=page.limit, before=_attempt_key(page.cursor)
    )
    items = [
        EventAttemptRead(
            id=attempt.id,
            event_id=attempt.event_id,
            at=attempt.at,
            status=status,
            status_code=attempt.status_code,
            duration_ms=attempt.duration_ms,
            error=attempt.error,
            next_attempt_at=attempt.next_attempt_at,
        )
        for attempt, status in rows
    ]
    return Page(items=items, next_cursor=_attempt_cursor(last))


@router.post("/v1/events/{event_id}/redeliver", status_code=202, responses=responses(404, 422))
async def redeliver_event(
    event_id: Annotated[str, Path(max_length=64)], service: Service
) -> EventRead:
    """Send the event again, now, to every endpoint that had it (failed or not)."""
    return body(await service.redeliver(event_id))


@router.get("/v1/events", status_code=200, responses=responses("invalid_cursor", 422))
async def list_events(
    service: Service,
    after: Annotated[
        str | None,
        Query(max_length=512, description="`next_cursor` of the previous page; none: the first."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = DEFAULT_LIMIT,
) -> EventPage:
    """Every event, oldest first, in an order that never changes: an event committed late is
    never placed before a cursor already handed out (pull instead of, or beside, webhooks)."""
    events, cursor = await service.pull(after=after, limit=limit)
    return EventPage(items=[body(e) for e in events], next_cursor=cursor)
