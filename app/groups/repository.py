from __future__ import annotations

import uuid

import sqlalchemy as sa

from app.db.repository import Repository
from app.models import Group, GroupMember, GroupRole


class GroupRepository(Repository[Group]):
    model = Group

    async def get(self, platform_id: str, group_id: uuid.UUID) -> Group | None:
        stmt = sa.select(Group).where(Group.platform_id == platform_id, Group.id == group_id)
        return (await self.session.scalars(stmt)).first()

    def visible_stmt(self, platform_id: str, user_id: str | None) -> sa.Select[Group]:
        """Every group of the platform, or (``user_id`` given) those the user belongs to."""
        stmt = sa.select(Group).where(Group.platform_id == platform_id)
        if user_id is not None:
            stmt = stmt.where(
                Group.id.in_(
                    sa.select(GroupMember.group_id).where(
                        GroupMember.platform_id == platform_id, GroupMember.user_id == user_id
                    )
                )
            )
        return stmt


class GroupMemberRepository(Repository[GroupMember]):
    model = GroupMember

    async def get(self, group_id: uuid.UUID, user_id: str) -> GroupMember | None:
        return await self.session.get(GroupMember, (group_id, user_id))

    async def role_of(self, group_id: uuid.UUID, user_id: str) -> GroupRole | None:
        stmt = sa.select(GroupMember.role).where(
            GroupMember.group_id == group_id, GroupMember.user_id == user_id
        )
        return (await self.session.scalars(stmt)).first()

    def list_stmt(self, group_id: uuid.UUID) -> sa.Select[GroupMember]:
        return sa.select(GroupMember).where(GroupMember.group_id == group_id)
