"""Replay: a ``failed`` delivery processed again from its kept content (an admin's request)."""

from __future__ import annotations

import uuid

from app.events.emit import delivery_event, emit
from app.inbound import content
from app.inbound.decide import decide, dedupe_key
from app.inbound.pipeline import Pipeline
from app.inbound.repository import InboundRepository
from app.inbound.rows import attachment_rows, post_row, rendered
from app.inbound.writer import Writer
from app.models import Delivery, DeliveryStatus


async def replay(pipeline: Pipeline, delivery_id: uuid.UUID, platform_id: str) -> Delivery | None:
    """Process a ``failed`` delivery again; None if it is not failed (or its content is gone).
    The delivery row is brought up to date: accepted (with its new post), duplicate (of the
    post the integration made since), or refused as the rules now say."""
    sessionmaker, blobs, settings = pipeline.sessionmaker, pipeline.blobs, pipeline.settings
    async with sessionmaker() as session:
        delivery = await session.get(Delivery, delivery_id)
        if (
            delivery is None
            or delivery.platform_id != platform_id
            or delivery.status is not DeliveryStatus.failed
            or delivery.content_sha256 is None
            or delivery.integration_id is None
        ):
            return None
        content_sha = delivery.content_sha256
        route = await InboundRepository(session).route(delivery.integration_id)
        await session.rollback()
    email = await content.load(content_sha, blobs)
    key = dedupe_key(email)
    if route is None:
        return None
    async with sessionmaker() as session:
        previous = await InboundRepository(session).final_delivery(route.id, key)
        await session.rollback()
    decision = decide(email, route, settings)
    stored = await content.store_attachments(email, blobs)
    async with sessionmaker.begin() as session:
        target = await session.get(Delivery, delivery_id, with_for_update=True)
        if target is None or target.status is not DeliveryStatus.failed:
            return target
        repo, writer = InboundRepository(session), Writer(session)
        if previous is not None:
            await writer.update_delivery(
                delivery_id,
                status=DeliveryStatus.duplicate,
                reason=target.reason,
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
