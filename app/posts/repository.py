from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from app.db.repository import Repository
from app.models import Attachment, Post


class PostRepository(Repository[Post]):
    model = Post

    def _with_attachments(self, platform_id: str) -> sa.Select[Post]:
        return (
            sa.select(Post)
            .where(Post.platform_id == platform_id)
            .options(selectinload(Post.attachments))
        )

    async def get(self, platform_id: str, post_id: uuid.UUID) -> Post | None:
        stmt = self._with_attachments(platform_id).where(Post.id == post_id)
        return (await self.session.scalars(stmt)).first()

    def in_group_stmt(self, platform_id: str, group_id: uuid.UUID) -> sa.Select[Post]:
        """A group's posts; paged on ``ix_posts_group_created`` (group_id, created_at, id)."""
        return self._with_attachments(platform_id).where(Post.group_id == group_id)


class AttachmentRepository(Repository[Attachment]):
    model = Attachment

    async def get_with_post(
        self, attachment_id: uuid.UUID
    ) -> tuple[Attachment, str, uuid.UUID] | None:
        """The attachment with its post's platform and group, whatever the platform."""
        stmt = (
            sa.select(Attachment, Post.platform_id, Post.group_id)
            .join(Post, Post.id == Attachment.post_id)
            .where(Attachment.id == attachment_id)
        )
        row = (await self.session.execute(stmt)).first()
        if row is None:
            return None
        return row[0], row[1], row[2]
