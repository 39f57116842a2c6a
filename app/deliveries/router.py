from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.api.deps import CurrentUser, Operator, SessionDep, SettingsDep
from app.api.pagination import Page, Pagination
from app.api.problems import responses
from app.db.repository import PageResult
from app.deliveries.schemas import DeliveryRead, DeliveryReason
from app.deliveries.service import DeliveryService
from app.errors import ContentExpired, NotReplayable
from app.inbound import replay
from app.inbound.service import InboundService
from app.models import Delivery, DeliveryStatus


async def delivery_service(session: SessionDep, settings: SettingsDep) -> DeliveryService:
    return DeliveryService(session, settings)


Service = Annotated[DeliveryService, Depends(delivery_service)]
StatusFilter = Annotated[
    DeliveryStatus | None, Query(alias="status", description="Only deliveries with this status.")
]
ReasonFilter = Annotated[
    DeliveryReason | None,
    Query(alias="reason", description="Only deliveries refused (or rate limited) for this reason."),
]

router = APIRouter(tags=["deliveries"], responses=responses(401))


def _page(result: PageResult[Delivery]) -> Page[DeliveryRead]:
    return Page(
        items=[DeliveryRead.model_validate(d) for d in result.items],
        next_cursor=result.next_cursor,
    )


@router.get(
    "/v1/integrations/{integration_id}/deliveries", status_code=200, responses=responses(404, 422)
)
async def list_integration_deliveries(
    integration_id: uuid.UUID, user: CurrentUser, service: Service, page: Pagination
) -> Page[DeliveryRead]:
    """The delivery log of one integration, newest first."""
    return _page(
        await service.for_integration(user, integration_id, limit=page.limit, cursor=page.cursor)
    )


@router.get("/v1/deliveries", status_code=200, responses=responses(403, 422))
async def list_deliveries(
    user: CurrentUser,
    service: Service,
    page: Pagination,
    status: StatusFilter = None,
    reason: ReasonFilter = None,
) -> Page[DeliveryRead]:
    """Every delivery of the platform (admins), including mail to deleted integrations."""
    return _page(
        await service.for_platform(
            user, status=status, reason=reason, limit=page.limit, cursor=page.cursor
        )
    )


@router.get("/v1/deliveries/{delivery_id}", status_code=200, responses=responses(404, 422))
async def get_delivery(delivery_id: uuid.UUID, user: CurrentUser, service: Service) -> DeliveryRead:
    """One delivery (admins; others see their integrations' deliveries)."""
    return DeliveryRead.model_validate(await service.get(user, delivery_id))


@router.post(
    "/v1/deliveries/{delivery_id}/replay",
    status_code=200,
    responses=responses(403, 404, "not_replayable", "content_expired", 422),
)
async def replay_delivery(
    delivery_id: uuid.UUID,
    user: CurrentUser,
    service: Service,
    session: SessionDep,
    request: Request,
) -> DeliveryRead:
    """Process a delivery again from its kept content, with today's rules and settings (admins):
    a `failed` one (after a fix of ours), or a `rejected` one after a rule change (a wider
    allow-list, the integration enabled again, `oversize_attachments: "drop"`, automatic mail
    accepted). Answers the updated delivery: `accepted` with its new post, `duplicate` of a post
    made since, or still `rejected` with today's reason. A delivery is never posted twice, however
    many replays run at once.

    409 `not_replayable` for other statuses and for refusals with nothing to decide again
    (`unknown_recipient`, `malformed_message`, `message_too_complex`); 409 `content_expired`
    once the kept content was purged (`DELIVERY_RETENTION_DAYS`)."""
    delivery = await service.replayable(user, delivery_id)
    if not replay.replayable(delivery):
        why = f"{delivery.status}" + (f", {delivery.reason}" if delivery.reason else "")
        raise NotReplayable(
            f"This delivery ({why}) cannot be replayed: only failed deliveries and rejected ones "
            "whose mail was read and routed can."
        )
    if delivery.content_sha256 is None:
        raise ContentExpired("The delivery's kept content was purged; it cannot be replayed.")
    await session.commit()  # replay runs its own transactions (SQLite has one writer at a time)
    state = request.app.state
    inbound = InboundService(state.sessionmaker, state.blobs, state.settings)
    replayed = await inbound.replay(delivery.id, user.platform_id)
    if replayed is None or replayed.status is DeliveryStatus.failed:
        raise NotReplayable("The delivery could not be replayed, or it failed again.")
    return DeliveryRead.model_validate(replayed)


@router.get(
    "/v1/unrouted-deliveries",
    status_code=200,
    dependencies=[Operator],
    responses=responses(422),
    tags=["operator"],
)
async def list_unrouted_deliveries(
    service: Service, page: Pagination, status: StatusFilter = None, reason: ReasonFilter = None
) -> Page[DeliveryRead]:
    """Mail that matched no integration at all (the operator's view)."""
    return _page(
        await service.unrouted(status=status, reason=reason, limit=page.limit, cursor=page.cursor)
    )
