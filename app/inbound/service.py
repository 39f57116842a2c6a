"""The inbound service the routers use: a façade over the pipeline's modules.

``pipeline`` (the flow), ``decide`` (every rule), ``rows`` (typed rows), ``writer`` (every
insert), ``replay`` and ``failures`` (our errors) do the work; see docs/architecture.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.blobs.store import BlobStore
from app.config import Settings
from app.inbound import content, replay
from app.inbound.decide import author_verified, dedupe_key
from app.inbound.errors import InfrastructureFailure
from app.inbound.failures import is_infrastructure_error
from app.inbound.model import InboundEmail
from app.inbound.pipeline import DeliveryOutcome, Pipeline
from app.models import Delivery

__all__ = [
    "DeliveryOutcome",
    "InboundService",
    "InfrastructureFailure",
    "author_verified",
    "dedupe_key",
    "is_infrastructure_error",
]


class InboundService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        blobs: BlobStore,
        settings: Settings,
    ) -> None:
        self.pipeline = Pipeline(sessionmaker, blobs, settings)
        self.blobs = blobs

    async def keep_attachments(self, email: InboundEmail) -> InboundEmail:
        """Move spooled attachments into the blob store (fsynced); the mail names them by digest."""
        try:
            return await content.store_attachments(email, self.blobs)
        except OSError as exc:
            raise InfrastructureFailure(str(exc)) from exc

    async def refuse(
        self,
        provider: str,
        reason: str,
        detail: str,
        recipients: Sequence[str],
        envelope_from: str | None,
    ) -> list[DeliveryOutcome]:
        """Record an authenticated payload we cannot read (malformed, too complex) and refuse it."""
        return await self.pipeline.refuse(provider, reason, detail, recipients, envelope_from)

    async def deliver(self, email: InboundEmail) -> list[DeliveryOutcome]:
        """Record the mail and post it where it should go (``Pipeline.deliver``)."""
        return await self.pipeline.deliver(email)

    async def replay(self, delivery_id: uuid.UUID, platform_id: str) -> Delivery | None:
        """Process a ``failed`` delivery again from its kept content; None if it is not failed."""
        return await replay.replay(self.pipeline, delivery_id, platform_id)
