from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from app.api.deps import CurrentUser, SessionDep, SettingsDep
from app.api.pagination import Page, Pagination
from app.api.problems import responses
from app.groups.schemas import GroupCreate, GroupRead, GroupUpdate, MemberRead, MembershipUpdate
from app.groups.service import GroupService


async def group_service(session: SessionDep, settings: SettingsDep) -> GroupService:
    return GroupService(session, settings)


Service = Annotated[GroupService, Depends(group_service)]
UserId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f/]+$")]

router = APIRouter(prefix="/v1/groups", tags=["groups"], responses=responses(401))


@router.post("", status_code=201, responses=responses(403, 422))
async def create_group(body: GroupCreate, user: CurrentUser, service: Service) -> GroupRead:
    """Create a group (platform admins). The creator becomes its manager."""
    return GroupRead.model_validate(await service.create(user, body))


@router.get("", status_code=200, responses=responses(422))
async def list_groups(user: CurrentUser, service: Service, page: Pagination) -> Page[GroupRead]:
    """Groups the caller may see: all for an admin, their own groups otherwise. Newest first."""
    result = await service.list(user, limit=page.limit, cursor=page.cursor)
    return Page(
        items=[GroupRead.model_validate(g) for g in result.items], next_cursor=result.next_cursor
    )


@router.get("/{group_id}", status_code=200, responses=responses(404, 422))
async def get_group(group_id: uuid.UUID, user: CurrentUser, service: Service) -> GroupRead:
    """A group the caller may see (any for an admin, their own groups otherwise)."""
    return GroupRead.model_validate(await service.get(user, group_id))


@router.patch("/{group_id}", status_code=200, responses=responses(403, 404, 422))
async def update_group(
    group_id: uuid.UUID, body: GroupUpdate, user: CurrentUser, service: Service
) -> GroupRead:
    """Change a group (admins, its managers): only the fields given; `null` clears `description`."""
    return GroupRead.model_validate(await service.update(user, group_id, body))


@router.delete("/{group_id}", status_code=204, responses=responses(403, 404, 422))
async def delete_group(group_id: uuid.UUID, user: CurrentUser, service: Service) -> Response:
    """Delete a group (platform admins); its integrations are deleted with it."""
    await service.delete(user, group_id)
    return Response(status_code=204)


@router.get("/{group_id}/members", status_code=200, responses=responses(404, 422))
async def list_group_members(
    group_id: uuid.UUID, user: CurrentUser, service: Service, page: Pagination
) -> Page[MemberRead]:
    """A group's members and their roles."""
    result = await service.list_members(user, group_id, limit=page.limit, cursor=page.cursor)
    return Page(
        items=[MemberRead.model_validate(m) for m in result.items], next_cursor=result.next_cursor
    )


@router.put(
    "/{group_id}/members/{user_id}",
    status_code=200,
    responses={
        201: {"model": MemberRead, "description": "Member added"},
        **responses(403, 404, 422),
    },
)
async def put_group_member(
    group_id: uuid.UUID,
    user_id: UserId,
    body: MembershipUpdate,
    user: CurrentUser,
    service: Service,
    response: Response,
) -> MemberRead:
    """Add a member or change their role (200 when changed, 201 when added)."""
    member, created = await service.put_member(user, group_id, user_id, body)
    if created:
        response.status_code = 201
    return MemberRead.model_validate(member)


@router.delete("/{group_id}/members/{user_id}", status_code=204, responses=responses(403, 404, 422))
async def remove_group_member(
    group_id: uuid.UUID, user_id: UserId, user: CurrentUser, service: Service
) -> Response:
    """Remove a member from a group (admins, its managers)."""
    await service.remove_member(user, group_id, user_id)
    return Response(status_code=204)
