"""Rendering ``post.created`` payloads from their posts: when first sent or pulled, and before
the posts are deleted. The post is not copied on the inbound path (it would double the bytes
written per mail); the event takes it from the post row when it is first needed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.events.emit import post_created_id
from app.events.repository import EVENTS
from app.models import Event, EventType, Post

RENDER_BATCH = 500
Reader = Callable[[Post], BaseModel]  # PostService.read: the post as the feed returns it


async def render(session: AsyncSession, read: Reader, events: Sequence[Event]) -> None:
    """Give each ``post.created`` event without a payload its post as the feed returns it, and
    store it (once: a concurrent render of the same event keeps the first). The one renderer."""
    pending = [e for e in events if e.payload is None and e.post_id is not None]
    if not pending:
        return
    ids = {e.post_id for e in pending}
    posts = (
        await session.scalars(
            sa.select(Post).where(Post.id.in_(ids)).options(selectinload(Post.attachments))
        )
    ).all()
    by_id = {p.id: read(p).model_dump(mode="json") for p in posts}
    for event in pending:
        data: dict[str, Any] | None = by_id.get(event.post_id)  # type: ignore[arg-type]
        if data is None:  # gone without being rendered first: only its ids are left
            data = {"id": str(event.post_id), "integration_id": str(event.integration_id)}
        await session.execute(
            sa.update(EVENTS)
            .where(EVENTS.c.seq == event.seq, EVENTS.c.payload.is_(None))
            .values(payload=data)
        )
        event.payload = data


async def render_pending(session: AsyncSession, read: Reader, posts: Any) -> None:
    """Before posts are deleted (``posts``: a condition on ``Post``, such as
    ``Post.group_id == id``): render their ``post.created`` events that have no payload yet, in
    the same transaction, so that the events still say what was posted. Each is found by its
    id, which its post's id gives (``post_created_id``)."""
    post_ids = (await session.scalars(sa.select(Post.id).where(posts))).all()
    for start in range(0, len(post_ids), RENDER_BATCH):
        ids = [post_created_id(i) for i in post_ids[start : start + RENDER_BATCH]]
        stmt = sa.select(Event).where(
            Event.id.in_(ids), Event.type == EventType.post_created, Event.payload.is_(None)
        )
        await render(session, read, (await session.scalars(stmt)).all())
