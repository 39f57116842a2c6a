"""Offboarding: removing a platform with everything of it, in short transactions.

``start`` (the operator's ``DELETE``) records the removal and marks the platform's integrations
deleted, in one transaction: from then on its addresses refuse mail (``unknown_recipient``).
``run`` then deletes the platform's rows table by table, ``BATCH`` rows per transaction, each
batch with its progress in the removal's record, so that no lock is held for long and inbound
mail for other platforms goes on; last, the platform row itself (whatever arrived meanwhile goes
with it: every ``platform_id`` cascades). Its blobs go after its rows: those that no remaining
row names, directly or in a kept mail, and that nobody stored again in the last
``BLOB_GRACE_SECONDS`` (a mail in flight elsewhere may be about to name the same bytes; the
cleanup command removes those later, once no row names them). Every step may run again: a
removal whose worker died is taken up by the next ``DELETE``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.blobs.store import BlobStore
from app.db.base import utcnow
from app.inbound import content
from app.maintenance import DEFAULT_GRACE_SECONDS
from app.models import (
    Attachment,
    Delivery,
    Event,
    EventEndpoint,
    Group,
    GroupMember,
    Integration,
    IntegrationAddress,
    Platform,
    PlatformDeletion,
    Post,
    ProviderToken,
    RateCounter,
)

logger = logging.getLogger("mailslot.offboarding")

BATCH = 500
BLOB_GRACE_SECONDS: float = DEFAULT_GRACE_SECONDS
STALE = timedelta(seconds=60)  # a running removal not heard from for this long is taken up again
RUNNING, DONE, FAILED = "running", "done", "failed"


async def start(session: AsyncSession, platform_id: str) -> tuple[PlatformDeletion, bool] | None:
    """Record the removal (or find it) and stop the platform's addresses; None when there is no
    such platform and no removal of it. The flag: whether ``run`` should be started (a new
    removal, a failed one, or a running one whose worker went silent)."""
    deletion = await session.get(PlatformDeletion, platform_id, with_for_update=True)
    platform = await session.get(Platform, platform_id)
    now = utcnow()
    if deletion is None:
        if platform is None:
            return None
        deletion = PlatformDeletion(
            platform_id=platform_id, status=RUNNING, removed={}, requested_at=now, updated_at=now
        )
        session.add(deletion)
        launch = True
    elif deletion.status == DONE:
        return deletion, False
    else:
        launch = deletion.status == FAILED or now - deletion.updated_at > STALE
        if launch:
            deletion.status, deletion.error, deletion.updated_at = RUNNING, None, now
    await session.execute(
        sa.update(Integration)
        .where(Integration.platform_id == platform_id, Integration.deleted_at.is_(None))
        .values(deleted_at=now)
    )
    await session.flush()
    return deletion, launch


def _ids_of(column: Any, where: Any) -> sa.Select[Any]:
    return sa.select(column).where(where).limit(BATCH)


async def _batches(
    sessions: async_sessionmaker[AsyncSession],
    platform_id: str,
    name: str,
    delete: Callable[[AsyncSession], Any],
    collect: set[str] | None = None,
) -> None:
    """Run ``delete`` (one batch, returning what it removed) in transactions of its own until it
    removes nothing; the count goes into the removal's progress with each batch."""
    while True:
        for attempt in range(5):
            try:
                async with sessions.begin() as session:
                    rows = list(await delete(session))
                    if rows:
                        deletion = await session.get(PlatformDeletion, platform_id)
                        assert deletion is not None  # noqa: S101
                        removed = dict(deletion.removed or {})
                        removed[name] = removed.get(name, 0) + len(rows)
                        deletion.removed, deletion.updated_at = removed, utcnow()
                break
            except IntegrityError:  # a row naming this batch arrived meanwhile: again
                if attempt == 4:
                    raise
        if collect is not None:
            collect.update(str(value) for value in rows if value)
        if not rows:
            return


async def run(
    sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, platform_id: str
) -> None:
    """Remove everything of the platform (see the module's docstring); never raises: a failure
    is recorded on the removal (status ``failed``), and a new ``DELETE`` takes it up."""
    try:
        await _run(sessions, blobs, platform_id)
    except Exception as exc:
        logger.exception("removing platform %s failed", platform_id)
        async with sessions.begin() as session:
            deletion = await session.get(PlatformDeletion, platform_id)
            if deletion is not None:
                deletion.status = FAILED
                deletion.error = f"{type(exc).__name__}: {exc}"[:4000]
                deletion.updated_at = utcnow()


async def _scalars(session: AsyncSession, statement: Any) -> list[Any]:
    return list((await session.execute(statement)).scalars())


async def _run(
    sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, platform_id: str
) -> None:
    p = platform_id
    attachment_blobs: set[str] = set()
    documents: set[str] = set()

    await _batches(
        sessions,
        p,
        "attachments",
        lambda s: _scalars(
            s,
            sa.delete(Attachment)
            .where(Attachment.id.in_(_ids_of(Attachment.id, Attachment.platform_id == p)))
            .returning(Attachment.sha256),
        ),
        attachment_blobs,
    )
    await _batches(
        sessions,
        p,
        "posts",
        lambda s: _scalars(
            s,
            sa.delete(Post)
            .where(Post.id.in_(_ids_of(Post.id, Post.platform_id == p)))
            .returning(Post.id),
        ),
    )
    platform_deliveries = sa.select(Delivery.id).where(Delivery.platform_id == p)
    await _batches(
        sessions,
        p,
        "provider_tokens",
        lambda s: _scalars(
            s,
            sa.delete(ProviderToken)
            .where(
                sa.tuple_(ProviderToken.provider, ProviderToken.token).in_(
                    sa.select(ProviderToken.provider, ProviderToken.token)
                    .where(ProviderToken.delivery_id.in_(platform_deliveries))
                    .limit(BATCH)
                )
            )
            .returning(ProviderToken.token),
        ),
    )

    async def deliveries(session: AsyncSession) -> list[Any]:
        result = await session.execute(
            sa.delete(Delivery)
            .where(Delivery.id.in_(_ids_of(Delivery.id, Delivery.platform_id == p)))
            .returning(Delivery.id, Delivery.content_sha256)
        )
        rows = result.all()
        documents.update(sha for _, sha in rows if sha)
        return [row[0] for row in rows]

    await _batches(sessions, p, "deliveries", deliveries)
    integrations = _ids_of(Integration.id, Integration.platform_id == p)
    await _batches(
        sessions,
        p,
        "rate_counters",
        lambda s: _scalars(
            s,
            sa.delete(RateCounter)
            .where(
                sa.tuple_(
                    RateCounter.integration_id, RateCounter.window_seconds, RateCounter.window_start
                ).in_(
                    sa.select(
                        RateCounter.integration_id,
                        RateCounter.window_seconds,
                        RateCounter.window_start,
                    )
                    .where(
                        RateCounter.integration_id.in_(
                            sa.select(Integration.id).where(Integration.platform_id == p)
                        )
                    )
                    .limit(BATCH)
                )
            )
            .returning(RateCounter.integration_id),
        ),
    )
    await _batches(
        sessions,
        p,
        "integration_addresses",
        lambda s: _scalars(
            s,
            sa.delete(IntegrationAddress)
            .where(
                IntegrationAddress.address.in_(
                    _ids_of(IntegrationAddress.address, IntegrationAddress.platform_id == p)
                )
            )
            .returning(IntegrationAddress.address),
        ),
    )

    async def integrations_batch(session: AsyncSession) -> list[Any]:
        ids = await _scalars(session, integrations)
        if not ids:
            return []
        # Mail refused for these integrations since their deliveries were removed.
        late = sa.select(Delivery.id).where(Delivery.integration_id.in_(ids))
        await session.execute(sa.delete(ProviderToken).where(ProviderToken.delivery_id.in_(late)))
        result = await session.execute(
            sa.delete(Delivery)
            .where(Delivery.integration_id.in_(ids))
            .returning(Delivery.content_sha256)
        )
        documents.update(sha for sha in result.scalars() if sha)
        for model in (RateCounter, IntegrationAddress):
            await session.execute(sa.delete(model).where(model.integration_id.in_(ids)))
        await session.execute(sa.delete(Integration).where(Integration.id.in_(ids)))
        return ids

    await _batches(sessions, p, "integrations", integrations_batch)
    await _batches(
        sessions,
        p,
        "group_members",
        lambda s: _scalars(
            s,
            sa.delete(GroupMember)
            .where(
                sa.tuple_(GroupMember.group_id, GroupMember.user_id).in_(
                    sa.select(GroupMember.group_id, GroupMember.user_id)
                    .where(GroupMember.platform_id == p)
                    .limit(BATCH)
                )
            )
            .returning(GroupMember.user_id),
        ),
    )
    await _batches(
        sessions,
        p,
        "groups",
        lambda s: _scalars(
            s,
            sa.delete(Group)
            .where(Group.id.in_(_ids_of(Group.id, Group.platform_id == p)))
            .returning(Group.id),
        ),
    )
    after = 0  # events have no index on platform_id (one fewer to keep up on every mail):
    # read once in the order of their key, from where the last batch stopped

    async def events(session: AsyncSession) -> list[Any]:
        nonlocal after
        chosen = (
            sa.select(Event.seq)
            .where(Event.seq > after, Event.platform_id == p)
            .order_by(Event.seq)
            .limit(BATCH)
        )
        seqs = await _scalars(
            session, sa.delete(Event).where(Event.seq.in_(chosen)).returning(Event.seq)
        )
        after = max(seqs, default=after)
        return seqs

    await _batches(sessions, p, "events", events)
    async with sessions.begin() as session:
        # Whatever arrived meanwhile goes with the platform: the tables with a key to it
        # cascade; posts, attachments and deliveries hang on their integration (gone by now) and
        # events name it without a key, so any of them left are deleted here by name.
        await session.execute(sa.delete(Event).where(Event.seq > after, Event.platform_id == p))
        await _unsubscribe(session, p)
        late = await session.execute(
            sa.delete(Attachment).where(Attachment.platform_id == p).returning(Attachment.sha256)
        )
        attachment_blobs.update(late.scalars())
        await session.execute(sa.delete(Post).where(Post.platform_id == p))
        await session.execute(
            sa.delete(ProviderToken).where(ProviderToken.delivery_id.in_(platform_deliveries))
        )
        late = await session.execute(
            sa.delete(Delivery).where(Delivery.platform_id == p).returning(Delivery.content_sha256)
        )
        documents.update(sha for sha in late.scalars() if sha)
        await session.execute(sa.delete(Platform).where(Platform.id == p))
        deletion = await session.get(PlatformDeletion, p)
        assert deletion is not None  # noqa: S101
        deletion.updated_at = utcnow()

    removed, kept = await _remove_blobs(sessions, blobs, attachment_blobs, documents)
    async with sessions.begin() as session:
        deletion = await session.get(PlatformDeletion, p)
        assert deletion is not None  # noqa: S101
        progress = dict(deletion.removed or {})
        progress["blobs"] = removed
        progress["blobs_kept"] = kept
        deletion.removed = progress
        deletion.status, deletion.updated_at, deletion.finished_at = DONE, utcnow(), utcnow()


async def _unsubscribe(session: AsyncSession, platform_id: str) -> None:
    """Event endpoints stop naming the platform. One that named only it is disabled, with the
    reason: an empty list would subscribe it to every platform."""
    for endpoint in await _scalars(session, sa.select(EventEndpoint)):
        if platform_id not in (endpoint.platform_ids or []):
            continue
        endpoint.platform_ids = [p for p in endpoint.platform_ids if p != platform_id]
        if not endpoint.platform_ids:
            endpoint.enabled = False
            endpoint.disabled_reason = f"its only platform, {platform_id}, was removed"


async def _remove_blobs(
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
    attachment_blobs: set[str],
    documents: set[str],
) -> tuple[int, int]:
    """Delete the platform's blobs that nothing else names; (removed, kept)."""
    candidates = set(attachment_blobs) | set(documents)
    for document in documents:  # the files of its kept mail
        attachments = await content.named_blobs(document, blobs)
        if attachments is None:
            logger.warning("kept content %s is unreadable", document)
        else:
            candidates.update(attachments)
    if not candidates:
        return 0, 0
    named_at = time.time()
    named: set[str] = set()
    listed = sorted(candidates)
    async with sessions() as session:
        for start in range(0, len(listed), BATCH):
            chunk = listed[start : start + BATCH]
            named.update(
                await session.scalars(
                    sa.select(Attachment.sha256).where(Attachment.sha256.in_(chunk)).distinct()
                )
            )
            named.update(
                await session.scalars(
                    sa.select(Delivery.content_sha256)
                    .where(Delivery.content_sha256.in_(chunk))
                    .distinct()
                )
            )
        # Files of other kept mail (refused or failed, on any platform or none) name blobs too.
        others = list(
            await session.scalars(
                sa.select(Delivery.content_sha256).where(Delivery.content_sha256.is_not(None))
            )
        )
    for other in others:
        if other is not None:
            named.update(await content.named_blobs(other, blobs) or ())
    removed = kept = 0
    cutoff = named_at - BLOB_GRACE_SECONDS
    for sha in listed:
        if sha in named:
            kept += 1
        elif await blobs.delete_if_modified_before(sha, cutoff):
            removed += 1
        else:  # stored again lately, or already gone: the cleanup command decides later
            kept += 1
    return removed, kept
