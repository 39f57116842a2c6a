"""The cleanup command: purge kept content, tokens and sent events past retention, then unnamed
blobs.

An unnamed blob is deleted only when it is older than the grace period, as its store says at
the moment of deleting, measured from the moment the names were read: a mail in flight (on any
server) stores its blobs, or stores them again, which renews them, before its rows commit; so
a blob that no row named when the names were read and that nobody stored since is one that no
mail in flight is about to name, unless that mail has been in flight for the whole grace
period (an S3 store renews a blob only when it is older than ``REFRESH_SECONDS``: keep the grace
period well above that plus the longest request).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.blobs.factory import create_blob_store
from app.config import Settings
from app.db.base import utcnow
from app.db.engine import create_engine
from app.inbound import content
from app.models import (
    Attachment,
    Delivery,
    Event,
    EventMessage,
    MessageStatus,
    PlatformDeletion,
    ProviderToken,
    RateCounter,
)

logger = logging.getLogger("mailslot.cleanup")

TOKEN_MIN_AGE = timedelta(hours=9)  # Mailgun retries re-send a token for 8 hours
DEFAULT_GRACE_SECONDS = 3600  # a mail in flight never loses its files


@dataclass
class CleanupReport:
    contents_purged: int = 0
    unrouted_deleted: int = 0
    tokens_purged: int = 0
    counters_purged: int = 0
    events_purged: int = 0
    blobs_removed: int = 0
    blobs_kept: int = 0

    def __str__(self) -> str:
        return (
            f"kept content purged: {self.contents_purged}, "
            f"unrouted deliveries deleted: {self.unrouted_deleted}, "
            f"tokens purged: {self.tokens_purged}, "
            f"rate counters purged: {self.counters_purged}, "
            f"events purged: {self.events_purged}, blobs removed: {self.blobs_removed}, "
            f"blobs kept: {self.blobs_kept}"
        )


async def cleanup(
    settings: Settings, *, grace_seconds: float = DEFAULT_GRACE_SECONDS, as_of: float | None = None
) -> CleanupReport:
    """``as_of`` (Unix time): when blob ages are measured from (default: just before the names
    are read).
    Raises ``BlobStoreUnavailable`` (having deleted only what it could check) when the store
    fails."""
    report = CleanupReport()
    engine = create_engine(settings.database_url)
    blobs = create_blob_store(settings)
    retention = timedelta(days=settings.delivery_retention_days)
    now = utcnow()
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions.begin() as session:
            result = await session.execute(
                sa.update(Delivery)
                .where(
                    Delivery.content_sha256.is_not(None),
                    # Refused and failed mail, and mail that a replay posted since.
                    Delivery.received_at < now - retention,
                )
                .values(content_sha256=None)
            )
            report.contents_purged = int(getattr(result, "rowcount", 0) or 0)
            # Mail that matched no integration belongs to no platform: strangers' addresses and
            # subjects, kept for the operator for the retention period, then forgotten whole.
            result = await session.execute(
                sa.delete(Delivery).where(
                    Delivery.platform_id.is_(None), Delivery.received_at < now - retention
                )
            )
            report.unrouted_deleted = int(getattr(result, "rowcount", 0) or 0)
            result = await session.execute(
                sa.delete(ProviderToken).where(
                    ProviderToken.created_at < now - max(retention, TOKEN_MIN_AGE)
                )
            )
            report.tokens_purged = int(getattr(result, "rowcount", 0) or 0)
            longest = max((limit.seconds for limit in settings.rate_limits), default=0)
            result = await session.execute(
                sa.delete(RateCounter).where(RateCounter.window_start < int(time.time()) - longest)
            )
            report.counters_purged = int(getattr(result, "rowcount", 0) or 0)
            # Events past retention, with their messages and attempts (they cascade), unless an
            # endpoint has yet to take one: kept until it is delivered or fails for good.
            waiting = sa.select(EventMessage.id).where(
                EventMessage.event_seq == Event.seq, EventMessage.status == MessageStatus.pending
            )
            result = await session.execute(
                sa.delete(Event).where(Event.created_at < now - retention, ~sa.exists(waiting))
            )
            report.events_purged = int(getattr(result, "rowcount", 0) or 0)
            # The record of a finished platform removal names only its id and counts.
            await session.execute(
                sa.delete(PlatformDeletion).where(PlatformDeletion.finished_at < now - retention)
            )
        # The names first: every blob a row names now, and the instant before they were read.
        named_at = time.time() if as_of is None else as_of
        async with sessions() as session:
            named: set[str] = set()
            named.update(await session.scalars(sa.select(Attachment.sha256).distinct()))
            documents = list(
                await session.scalars(
                    sa.select(Delivery.content_sha256).where(Delivery.content_sha256.is_not(None))
                )
            )
        for document in documents:
            if document is None:
                continue
            named.add(document)
            # BlobStoreUnavailable propagates: unknown, so nothing may be deleted
            attachments = await content.named_blobs(document, blobs)
            if attachments is None:
                logger.warning("kept content %s is unreadable", document)
            else:
                named.update(attachments)
        cutoff = named_at - grace_seconds
        async for key in blobs.keys_modified_before(cutoff):
            if key in named:
                report.blobs_kept += 1
            elif await blobs.delete_if_modified_before(key, cutoff):
                report.blobs_removed += 1
            else:  # stored again since it was listed: a mail in flight may name it
                report.blobs_kept += 1
    finally:
        await blobs.close()
        await engine.dispose()
    return report
