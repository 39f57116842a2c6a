"""Replay: a ``failed`` delivery, or a ``rejected`` one after a rule change, processed again
from its kept content (an admin's request), decided by today's rules and settings."""

from __future__ import annotations

import uuid

from app.blobs.store import BlobStoreUnavailable
from app.errors import ContentExpired
from app.events.emit import delivery_event, emit
from app.inbound import content
from app.inbound.decide import decide, dedupe_key
from app.inbound.pipeline import Pipeline
from app.inbound.repository import InboundRepository
from app.inbound.rows import attachment_rows, post_row, rendered
from app.inbound.writer import Writer
from app.models import Delivery, DeliveryStatus, RejectionReason

# Refusals that read and routed the mail, and kept it: decided again by today's rules. The others
# have nothing to decide again (an address nobody has) or no content (a payload never read).
NOT_REPLAYABLE_REASONS = frozenset(
    {
        RejectionReason.unknown_recipient,
        RejectionReason.malformed_message,
        RejectionReason.message_too_complex,
    }
)
POSTED = (DeliveryStatus.accepted, DeliveryStatus.duplicate)


def replayable(delivery: Delivery) -> bool:
    """A ``failed`` delivery, or a ``rejected`` one whose mail was read and routed."""
    if delivery.integration_id is None:
        return False
    if delivery.status is DeliveryStatus.failed:
        return True
    return (
        delivery.status is DeliveryStatus.rejected and delivery.reason not in NOT_REPLAYABLE_REASONS
    )


async def replay(pipeline: Pipeline, delivery_id: uuid.UUID, platform_id: str) -> Delivery | None:
    """Process a replayable delivery again; None if it is not one. Raises ``ContentExpired``
    when its kept content was purged. The delivery row is brought up to date: accepted (with
    its new post), duplicate (of the post the integration made since), or refused as the rules
    now say. Concurrent replays of one delivery post at most once: the row is locked and its
    state compared before it is changed, and the post's unique key stands behind that."""
    sessionmaker, blobs, settings = pipeline.sessionmaker, pipeline.blobs, pipeline.settings
    async with sessionmaker() as session:
        delivery = await session.get(Delivery, delivery_id)
        if delivery is None or delivery.platform_id != platform_id or not replayable(delivery):
            return None
        assert delivery.integration_id is not None  # noqa: S101
        was = (delivery.status, delivery.reason)
        content_sha = delivery.content_sha256
        route = await InboundRepository(session).route(delivery.integration_id)
        await session.rollback()
    if content_sha is None:
        raise ContentExpired("The delivery's kept content was purged; it cannot be replayed.")
    try:
        email = await content.load(content_sha, blobs)
    except BlobStoreUnavailable:
        raise
    except FileNotFoundError as exc:
        raise ContentExpired("The delivery's kept content is gone; it cannot be replayed.") from exc
    key = dedupe_key(email)
    if route is None:
        return None
    # A failed mail may have been refused or posted since by a provider's retry; a refused one
    # only matters if it was posted since (its own refusal is what is replayed).
    statuses = POSTED if was[0] is DeliveryStatus.rejected else None
    async with sessionmaker() as session:
        repo = InboundRepository(session)
        if statuses is None:
            previous = await repo.final_delivery(route.id, key, other_than=delivery_id)
        else:
            previous = await repo.final_delivery(route.id, key, statuses, other_than=delivery_id)
        await session.rollback()
    decision = decide(email, route, settings)
    stored = await content.store_attachments(email, blobs) if decision.posts else email
    async with sessionmaker.begin() as session:
        target = await session.get(Delivery, delivery_id, with_for_update=True)
        if target is None or (target.status, target.reason) != was:
            return target  # replayed meanwhile
        repo, writer = InboundRepository(session), Writer(session)
        if previous is not None:
            await writer.update_delivery(
                delivery_id,
                status=DeliveryStatus.duplicate,
                reason=None,
                post_id=previous.post_id,
            )
        elif not decision.posts:
            assert decision.status is not None  # noqa: S101
            await writer.update_delivery(
                delivery_id, status=decision.status, reason=decision.reason
            )
        else:
            post = post_row(stored, key, route, decision, await rendered(stored))
            attachments = attachment_rows(stored, post, settings.max_attachment_bytes)
            if await writer.add_post(post, attachments):
                await writer.update_delivery(
                    delivery_id, status=DeliveryStatus.accepted, post_id=post.id
                )
            else:  # the integration posted the mail since (a provider's retry)
                await writer.update_delivery(
                    delivery_id,
                    status=DeliveryStatus.duplicate,
                    post_id=await repo.post_id_for(route.id, key),
                )
        await session.refresh(target)
        await emit(session, [delivery_event(target)])  # refused now (accepted: add_post's)
        return target
