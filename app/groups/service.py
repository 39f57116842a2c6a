from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.security import Principal
from app.config import Settings
from app.db.base import utcnow
from app.db.repository import PageResult
from app.errors import Forbidden, Invalid, NotFound
from app.events.emit import emit, integration_deleted
from app.events.render import render_pending
from app.groups.repository import GroupMemberRepository, GroupRepository
from app.groups.schemas import GroupCreate, GroupUpdate, MembershipUpdate
from app.models import Group, GroupMember, GroupRole, Integration, Platform, Post


class GroupAccess:
    """A group as one caller sees it: their role in it decides what they may do."""

    def __init__(self, user: Principal, group: Group, role: GroupRole | None) -> None:
        self.user, self.group, self.role = user, group, role

    @property
    def can_manage(self) -> bool:
        return self.user.is_admin or self.role is GroupRole.manager

    def can_add_integration(self, platform: Platform) -> bool:
        if self.can_manage:
            return True
        return self.role is GroupRole.member and (
            platform.members_can_add_integrations or self.group.members_can_add_integrations
        )


class GroupService:
    def __init__(self, session: AsyncSession, settings: Settings | None = None) -> None:
        self.session = session
        self.settings = settings  # rendering events of posts (deleting a group)
        self.groups = GroupRepository(session)
        self.members = GroupMemberRepository(session)

    async def access(self, user: Principal, group_id: uuid.UUID) -> GroupAccess:
        """The group if the caller may see it; 404 otherwise (also for another platform's id)."""
        group = await self.groups.get(user.platform_id, group_id)
        if group is None:
            raise NotFound("No such group.")
        role = await self.members.role_of(group.id, user.user_id)
        if role is None and not user.is_admin:
            raise NotFound("No such group.")
        return GroupAccess(user, group, role)

    async def managed(self, user: Principal, group_id: uuid.UUID) -> GroupAccess:
        access = await self.access(user, group_id)
        if not access.can_manage:
            raise Forbidden("Only platform admins and the group's managers may change it.")
        return access

    async def _create(self, user: Principal, name: str, description: str | None) -> Group:
        group = await self.groups.add(
            Group(
                platform_id=user.platform_id,
                name=name,
                description=description,
                created_by=user.user_id,
            )
        )
        await self.members.add(
            GroupMember(
                group_id=group.id,
                user_id=user.user_id,
                platform_id=user.platform_id,
                role=GroupRole.manager,
            )
        )
        return group

    async def create(self, user: Principal, data: GroupCreate) -> Group:
        if not user.is_admin:
            raise Forbidden("Only platform admins create groups.")
        return await self._create(user, data.name, data.description)

    async def create_dedicated(self, user: Principal, platform: Platform, name: str) -> Group:
        """A new group asked for with an integration; its creator manages it."""
        if not (user.is_admin or platform.members_can_add_integrations):
            raise Forbidden("Asking for a new group needs the platform-wide setting.")
        return await self._create(user, name, None)

    async def list(self, user: Principal, *, limit: int, cursor: str | None) -> PageResult[Group]:
        stmt = self.groups.visible_stmt(user.platform_id, None if user.is_admin else user.user_id)
        return await self.groups.page(stmt, limit=limit, cursor=cursor)

    async def get(self, user: Principal, group_id: uuid.UUID) -> Group:
        return (await self.access(user, group_id)).group

    async def update(self, user: Principal, group_id: uuid.UUID, data: GroupUpdate) -> Group:
        group = (await self.managed(user, group_id)).group
        changes = data.model_dump(exclude_unset=True)
        for field in ("name", "members_can_add_integrations"):
            if field in changes and changes[field] is None:
                raise Invalid(
                    f"{field} cannot be null.",
                    errors=[{"loc": ["body", field], "msg": "must not be null", "type": "null"}],
                )
        for field, value in changes.items():
            setattr(group, field, value)
        await self.session.flush()
        return group

    async def delete(self, user: Principal, group_id: uuid.UUID) -> None:
        group = (await self.access(user, group_id)).group
        if not user.is_admin:
            raise Forbidden("Only platform admins delete groups.")
        live = (
            await self.session.scalars(
                sa.select(Integration).where(
                    Integration.group_id == group.id, Integration.deleted_at.is_(None)
                )
            )
        ).all()
        await self.session.execute(
            sa.update(Integration)
            .where(Integration.group_id == group.id, Integration.deleted_at.is_(None))
            .values(deleted_at=utcnow())
        )
        await emit(self.session, [integration_deleted(i) for i in live])
        if self.settings is not None:  # its posts go with it: their events keep what was posted
            from app.posts.service import PostService  # imports this module

            read = PostService(self.session, self.settings).read
            await render_pending(self.session, read, Post.group_id == group.id)
        await self.groups.delete(group)

    async def list_members(
        self, user: Principal, group_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> PageResult[GroupMember]:
        group = (await self.access(user, group_id)).group
        return await self.members.page(
            self.members.list_stmt(group.id), limit=limit, cursor=cursor, key=GroupMember.user_id
        )

    async def put_member(
        self, user: Principal, group_id: uuid.UUID, user_id: str, data: MembershipUpdate
    ) -> tuple[GroupMember, bool]:
        group = (await self.managed(user, group_id)).group
        member = await self.members.get(group.id, user_id)
        if member is not None:
            member.role = data.role
            await self.session.flush()
            return member, False
        member = await self.members.add(
            GroupMember(
                group_id=group.id, user_id=user_id, platform_id=group.platform_id, role=data.role
            )
        )
        return member, True

    async def remove_member(self, user: Principal, group_id: uuid.UUID, user_id: str) -> None:
        group = (await self.managed(user, group_id)).group
        member = await self.members.get(group.id, user_id)
        if member is None:
            raise NotFound("That user is not a member of this group.")
        await self.members.delete(member)
