from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response

from app.api.deps import CurrentUser, Operator, SessionDep
from app.api.pagination import Page, Pagination
from app.api.problems import responses
from app.errors import NotFound
from app.models import PlatformDeletion
from app.platforms import offboarding
from app.platforms.schemas import (
    PlatformCreate,
    PlatformDeletionRead,
    PlatformDetail,
    PlatformRead,
    PlatformSettingsUpdate,
    PlatformUpdate,
)
from app.platforms.service import PlatformService


async def platform_service(session: SessionDep) -> PlatformService:
    return PlatformService(session)


Service = Annotated[PlatformService, Depends(platform_service)]

operator_router = APIRouter(
    prefix="/v1/platforms", tags=["operator"], dependencies=[Operator], responses=responses(401)
)


@operator_router.post("", status_code=201, responses=responses(409, 422))
async def create_platform(body: PlatformCreate, service: Service) -> PlatformRead:
    """Create a platform (a tenant). `id` may be given to match the host platform's own id."""
    return PlatformRead.model_validate(await service.create(body))


@operator_router.get("", status_code=200, responses=responses(422))
async def list_platforms(service: Service, page: Pagination) -> Page[PlatformRead]:
    """Every platform (operator), newest first."""
    result = await service.list(limit=page.limit, cursor=page.cursor)
    return Page(
        items=[PlatformRead.model_validate(p) for p in result.items], next_cursor=result.next_cursor
    )


@operator_router.get("/{platform_id}", status_code=200, responses=responses(404, 422))
async def get_platform(platform_id: str, service: Service) -> PlatformRead:
    """One platform (operator)."""
    return PlatformRead.model_validate(await service.get(platform_id))


@operator_router.patch("/{platform_id}", status_code=200, responses=responses(404, 422))
async def update_platform(platform_id: str, body: PlatformUpdate, service: Service) -> PlatformRead:
    """Change a platform's plan or name. A downgrade below current usage is allowed."""
    return PlatformRead.model_validate(await service.update(platform_id, body))


@operator_router.delete("/{platform_id}", status_code=202, responses=responses(404, 422))
async def delete_platform(
    platform_id: str,
    session: SessionDep,
    request: Request,
    response: Response,
    background: BackgroundTasks,
) -> PlatformDeletionRead:
    """Remove a platform with everything of it: groups, memberships, integrations and their
    previous addresses, posts, attachments, deliveries, provider tokens, rate counters, and the
    blobs no other platform names. Answers 202 at once with the removal's progress (also at
    `Location`, `GET /v1/platforms/{id}/deletion`); the work goes on in batches of short
    transactions, so that inbound mail for other platforms is never held up. Its addresses
    refuse mail (`unknown_recipient`) from the moment this answers. Asking again while it runs
    answers its progress; after a failure, or when its worker stopped, asking again carries on
    where it stopped."""
    started = await offboarding.start(session, platform_id)
    if started is None:
        raise NotFound("No such platform.")
    deletion, launch = started
    body = PlatformDeletionRead.model_validate(deletion)
    await session.commit()
    if launch:
        state = request.app.state
        background.add_task(offboarding.run, state.sessionmaker, state.blobs, platform_id)
    response.headers["Location"] = f"/v1/platforms/{platform_id}/deletion"
    return body


@operator_router.get("/{platform_id}/deletion", status_code=200, responses=responses(404, 422))
async def get_platform_deletion(platform_id: str, session: SessionDep) -> PlatformDeletionRead:
    """How far the removal of a platform got (`status` `done` once nothing of it is left)."""
    deletion = await session.get(PlatformDeletion, platform_id)
    if deletion is None:
        raise NotFound("No removal of this platform was asked for.")
    return PlatformDeletionRead.model_validate(deletion)


router = APIRouter(prefix="/v1/platform", tags=["platform"], responses=responses(401))


@router.get("", status_code=200)
async def get_current_platform(user: CurrentUser, service: Service) -> PlatformDetail:
    """The caller's platform, its settings and its integration usage against the plan."""
    return await service.detail(user)


@router.patch("/settings", status_code=200, responses=responses(403, 422))
async def update_platform_settings(
    body: PlatformSettingsUpdate, user: CurrentUser, service: Service
) -> PlatformDetail:
    """Change the platform-wide settings (admins)."""
    return await service.update_settings(user, body)
