"""From one normalised email to its deliveries and posts, top to bottom:

route -> dedupe -> decide -> count rate -> write -> answer.

``addresses`` and ``Writer.routes`` route on the envelope recipients; ``dedupe_key`` and the
earlier deliveries of the same key (or the provider token's claim) dedupe; ``decide`` applies
every product rule; ``rate_windows``/``over_rate`` count; ``Writer`` writes every row, from
``app.inbound.rows``; the outcomes are the answer, built by the router. Expected outcomes are
return values; an exception rolls the work back (``app.inbound.failures``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.blobs.store import BlobStore
from app.config import Settings
from app.events import signal
from app.inbound import content
from app.inbound.decide import (
    RATE_LIMITED,
    Decision,
    Route,
    addresses,
    decide,
    dedupe_key,
    is_probe,
    over_rate,
    rate_windows,
)
from app.inbound.errors import InfrastructureFailure
from app.inbound.failures import (
    ERROR_TEXT_LIMIT,
    is_infrastructure_error,
    log_for_each_route,
    record_failure,
)
from app.inbound.model import InboundEmail
from app.inbound.repository import FINAL_STATUSES, InboundRepository
from app.inbound.rows import (
    DESCRIBED,
    AttachmentRow,
    DeliveryRow,
    PostRow,
    TokenRow,
    attachment_rows,
    delivery_row,
    post_row,
    rendered,
)
from app.inbound.writer import Writer
from app.models import Delivery, DeliveryStatus, RejectionReason

logger = logging.getLogger("mailslot.inbound")

RETRYABLE = (DeliveryStatus.rate_limited, DeliveryStatus.failed)


@dataclass(frozen=True)
class DeliveryOutcome:
    status: DeliveryStatus
    reason: str | None = None
    delivery_id: uuid.UUID | None = None
    post_id: uuid.UUID | None = None
    integration_id: uuid.UUID | None = None
    probe: bool = False  # no recipient at our domain (a provider's set-up check)
    platform_id: str | None = None
    attachment_bytes: int = 0  # of the post made, when this outcome made one

    @classmethod
    def of(cls, row: DeliveryRow, attachments: Sequence[AttachmentRow] = ()) -> DeliveryOutcome:
        """The outcome ``row`` records (``attachments``: those of the post it made)."""
        return cls(
            status=row.status,
            reason=row.reason,
            delivery_id=row.id,
            post_id=row.post_id,
            integration_id=row.integration_id,
            platform_id=row.platform_id,
            attachment_bytes=sum(a.size for a in attachments),
        )


@dataclass
class _Plan:
    """What to do with the mail for one integration: seen before (``previous``, its first
    delivery that ended), or as decided."""

    route: Route
    decision: Decision
    previous: Delivery | None = None


class Pipeline:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        blobs: BlobStore,
        settings: Settings,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.engine: AsyncEngine = sessionmaker.kw["bind"]
        self.blobs = blobs
        self.settings = settings

    def committed(self, outcomes: list[DeliveryOutcome]) -> list[DeliveryOutcome]:
        """The mail's rows are committed; the answer is not sent yet (where the reliability
        suite's failpoint, tests/reliability/failpoint.py, ends the process). The events they
        wrote are this process's dispatcher's to send (a wake; nothing when it has no
        endpoints)."""
        signal.wake()
        return outcomes

    async def deliver(self, email: InboundEmail) -> list[DeliveryOutcome]:
        """Record the mail and post it where it should go. Expected outcomes are return values.

        Raises ``InfrastructureFailure`` when the database or the disk fails (answer 503). A bug
        while processing is rolled back and recorded ``failed`` (answer 500).
        """
        try:
            return await self._deliver(email)
        except InfrastructureFailure:
            raise
        except Exception as exc:
            if is_infrastructure_error(exc):
                raise InfrastructureFailure(str(exc)) from exc
            logger.exception("processing a %s mail failed", email.provider)
            failed = await record_failure(self.sessionmaker, self.blobs, email, exc)
            return [DeliveryOutcome.of(row) for row in failed]

    async def refuse(
        self,
        provider: str,
        reason: str,
        detail: str,
        recipients: Sequence[str],
        envelope_from: str | None,
    ) -> list[DeliveryOutcome]:
        """Record an authenticated payload we cannot read (malformed, too complex) and refuse it."""
        email = InboundEmail(
            provider=provider,
            recipients=tuple(recipients),
            envelope_from=envelope_from,
            from_address=None,
            from_name=None,
            subject="",
            text=None,
            html=None,
            message_id=None,
        )
        try:
            async with self.sessionmaker.begin() as session:
                deliveries = await log_for_each_route(
                    Writer(session),
                    email,
                    None,
                    status=DeliveryStatus.rejected,
                    reason=reason,
                    error=detail[:ERROR_TEXT_LIMIT],
                )
        except Exception as exc:
            raise InfrastructureFailure(str(exc)) from exc
        return [DeliveryOutcome.of(row) for row in deliveries]

    # --- the flow ------------------------------------------------------------------------------

    async def _deliver(self, email: InboundEmail) -> list[DeliveryOutcome]:
        routed = addresses(email)
        key = dedupe_key(email)
        probe = is_probe(email, routed, self.settings)
        if email.event_id and not probe:
            fresh = await self._fresh(email, key, routed)
            if fresh is not None:
                return fresh
        # A copy of a provider event whose token another request claimed, with nothing recorded
        # yet: that request is writing it now, and counted it. (The rare claimer that died
        # before writing leaves this copy to post uncounted; a retry of a rate-limited or failed
        # attempt has a delivery recorded, and is counted again.)
        in_flight = False
        async with self.sessionmaker() as session:
            repo = InboundRepository(session)
            known = False  # no final delivery of this event anywhere: none per integration
            if email.event_id:
                # One query for both: the ones that ended, and the retryable ones.
                seen = await repo.deliveries_by_key(key, (*FINAL_STATUSES, *RETRYABLE))
                earlier = [d for d in seen if d.status in FINAL_STATUSES]
                if earlier:  # the provider's retry
                    outcomes = await self._again(repo, Writer(session), email, key, earlier, probe)
                    await session.commit()
                    return outcomes
                known = True
                in_flight = not probe and not seen
                tried = [d for d in seen if d.status in RETRYABLE]
                if tried and not await self._same_content(email, tried):
                    # The event id was used before with another body: a replayed token, never
                    # a new post. (A provider's own retry carries the same content.)
                    return [
                        DeliveryOutcome(
                            status=DeliveryStatus.duplicate,
                            delivery_id=tried[0].id,
                            integration_id=tried[0].integration_id,
                            platform_id=tried[0].platform_id,
                        )
                    ]
            routes = await repo.routes(routed)
            plans = [await self._plan(repo, email, route, key, known) for route in routes]
            session.expunge_all()  # keep what was read, detached
            await session.rollback()
        if not routes:
            return [await self._unrouted(email, key, probe=probe)]
        for plan in plans:
            counted = in_flight or plan.previous is not None or not plan.decision.posts
            if not counted and await self._over_rate(plan.route):
                plan.decision = RATE_LIMITED
        return await self._write(email, key, plans)

    async def _fresh(
        self, email: InboundEmail, key: str, routed: Sequence[str]
    ) -> list[DeliveryOutcome] | None:
        """A provider event never seen before: one connection, no ORM, few round trips.

        The token is claimed first, with the routes read in the same round trip: every delivery
        recorded with an event's key claims its token (in the same transaction), so a fresh
        claim means nothing of this event was recorded and no dedupe lookup is needed. None (all
        rolled back) when the token was seen before or the mail goes nowhere: the general path
        then decides. The claim may be committed before the deliveries are written (on
        PostgreSQL, and when counting): a retry that finds it claimed with nothing recorded
        takes the general path, and the post's unique key keeps the two from double-posting.
        """
        assert email.event_id is not None  # noqa: S101
        first_id = uuid.uuid4()  # the token points at the first delivery written
        async with self.engine.connect() as conn:
            # PostgreSQL: each step below is one autocommitted statement (one round trip) until
            # a transaction is begun; SQLite: one transaction, committed where it says.
            writer = await Writer.on(conn)
            token = TokenRow(email.provider, email.event_id, first_id)
            # Counted with the claim (a duplicate never counts), outside the transaction that
            # writes the post (DESIGN.md); a mail the rules refuse is taken back.
            windows = rate_windows(self.settings, int(time.time()))
            counted = await writer.claim_and_route(token, routed, windows)
            if not counted:
                await conn.rollback()
                return None
            routes = [route for route, _ in counted]
            decisions = [decide(email, route, self.settings) for route in routes]
            for index, (route, counts) in enumerate(counted):
                if not windows:
                    continue
                if not decisions[index].posts:
                    await writer.uncount(route.id, windows)
                elif over_rate(counts, self.settings):
                    decisions[index] = RATE_LIMITED
            if windows and conn.in_transaction():
                await conn.commit()  # SQLite: the claim and the counts (PostgreSQL: committed)
            posting = any(d.posts for d in decisions)
            if posting:
                email = await content.store_attachments(email, self.blobs)
            kept = None
            if not all(d.posts for d in decisions):
                kept = await content.keep(email, self.blobs)
            html_text = await rendered(email) if posting else (None, None)
            if len(routes) > 1 and not conn.in_transaction():
                await conn.begin()  # the deliveries of every integration, or none
            outcomes = []
            for index, (route, decision) in enumerate(zip(routes, decisions, strict=True)):
                post = post_row(email, key, route, decision, html_text) if decision.posts else None
                delivery = self._delivery(
                    email, key, route, decision, post, kept, id=first_id if index == 0 else None
                )
                limit = self.settings.max_attachment_bytes
                attachments = attachment_rows(email, post, limit) if post else []
                if await writer.write(post, attachments, delivery):
                    outcomes.append(DeliveryOutcome.of(delivery, attachments))
                    continue
                # The claim was committed before the write (PostgreSQL, or rate limits on),
                # and a retry of this event that found it claimed with nothing recorded yet
                # (the general path) posted the mail meanwhile: a duplicate of that post.
                repo = InboundRepository(conn)
                duplicate = self._duplicate(
                    repo, writer, email, key, route.platform_id, route.id, address=route.address
                )
                outcomes.append(await duplicate)
            if conn.in_transaction():  # not when each statement was one autocommitted unit
                await conn.commit()
        return self.committed(outcomes)

    async def _plan(
        self,
        repo: InboundRepository,
        email: InboundEmail,
        route: Route,
        key: str,
        known_new: bool = False,
    ) -> _Plan:
        """``known_new``: the caller just found no final delivery with this key on any
        integration, so this one has none either (a concurrent one is caught by the token
        claim and the post's unique key when writing)."""
        previous = None if known_new else await repo.final_delivery(route.id, key)
        if previous is not None:
            return _Plan(route, Decision(), previous)
        return _Plan(route, decide(email, route, self.settings))

    async def _over_rate(self, route: Route) -> bool:
        """Counted in the database, in a short transaction of its own, before the post is made."""
        if not self.settings.rate_limits:
            return False
        windows = rate_windows(self.settings, int(time.time()))
        async with self.sessionmaker.begin() as session:
            counts = await Writer(session).count(route.id, windows)
        return over_rate(counts, self.settings)

    def _delivery(
        self,
        email: InboundEmail,
        key: str,
        route: Route,
        decision: Decision,
        post: PostRow | None,
        kept: str | None,
        id: uuid.UUID | None = None,
    ) -> DeliveryRow:
        """The delivery row of ``decision`` (posted as ``post``, or refused with ``kept``)."""
        return delivery_row(
            email,
            key,
            id=id,
            status=decision.status or DeliveryStatus.accepted,
            platform_id=route.platform_id,
            integration_id=route.id,
            reason=decision.reason,
            post_id=post.id if post else None,
            content_sha256=None if decision.posts else kept,
            address=route.address,
        )

    async def _unrouted(self, email: InboundEmail, key: str, *, probe: bool) -> DeliveryOutcome:
        kept = await content.keep(email, self.blobs)
        row = delivery_row(
            email,
            key,
            status=DeliveryStatus.rejected,
            reason=RejectionReason.unknown_recipient,
            content_sha256=kept,
        )
        async with self.sessionmaker.begin() as session:
            writer = Writer(session)
            await writer.add_deliveries([row])
            if email.event_id:
                # A later fresh claim then proves that nothing of the event was recorded.
                await writer.claim_token(TokenRow(email.provider, email.event_id, row.id))
        return replace(DeliveryOutcome.of(row), probe=probe)

    async def _write(
        self, email: InboundEmail, key: str, plans: Sequence[_Plan]
    ) -> list[DeliveryOutcome]:
        new = [p for p in plans if p.previous is None]
        stored = email
        if any(p.decision.posts for p in new):
            stored = await content.store_attachments(email, self.blobs)
        kept = None
        if any(not p.decision.posts for p in new):
            kept = await content.keep(email, self.blobs)
        outcomes: list[DeliveryOutcome] = []
        async with self.sessionmaker.begin() as session:
            repo, writer = InboundRepository(session), Writer(session)
            if email.event_id and not await writer.claim_token(
                TokenRow(email.provider, email.event_id, None)
            ):
                # Seen before (perhaps a moment ago, by a concurrent request): a retry of that.
                earlier = await repo.deliveries_by_key(key)
                if earlier:
                    return await self._again(repo, writer, email, key, earlier)
            for plan in plans:
                outcomes.append(await self._write_one(repo, writer, stored, key, plan, kept))
            if email.event_id and outcomes and outcomes[0].delivery_id is not None:
                await writer.point_token(email.provider, email.event_id, outcomes[0].delivery_id)
        return self.committed(outcomes)

    async def _write_one(
        self,
        repo: InboundRepository,
        writer: Writer,
        email: InboundEmail,
        key: str,
        plan: _Plan,
        kept: str | None,
    ) -> DeliveryOutcome:
        route, decision = plan.route, plan.decision
        if plan.previous is not None:
            return await self._seen_before(
                repo, writer, email, key, plan.previous, address=route.address
            )
        post = None
        if decision.posts:
            post = post_row(email, key, route, decision, await rendered(email))
        delivery = self._delivery(email, key, route, decision, post, kept)
        attachments = (
            attachment_rows(email, post, self.settings.max_attachment_bytes) if post else []
        )
        if not await writer.write(post, attachments, delivery):
            # A concurrent delivery of the same mail committed first.
            return await self._duplicate(
                repo, writer, email, key, route.platform_id, route.id, address=route.address
            )
        return DeliveryOutcome.of(delivery, attachments)

    # --- a mail seen before ----------------------------------------------------------------------

    async def _again(
        self,
        repo: InboundRepository,
        writer: Writer,
        email: InboundEmail,
        key: str,
        earlier: Sequence[Delivery],
        probe: bool = False,
    ) -> list[DeliveryOutcome]:
        """A provider event seen before (its deliveries, oldest first): each integration's first
        delivery of it is seen again (``_seen_before``). The new rows describe the mail as the
        first delivery recorded it: the signature does not cover the body, so a replayed
        token's body, and the recipients it names, are written to nobody's log."""
        firsts: dict[uuid.UUID | None, Delivery] = {}
        for delivery in earlier:  # an integration's later rows are duplicates of its first
            firsts.setdefault(delivery.integration_id, delivery)
        return [
            await self._seen_before(repo, writer, email, key, first, probe=probe, as_first=True)
            for first in firsts.values()
        ]

    async def _seen_before(
        self,
        repo: InboundRepository,
        writer: Writer,
        email: InboundEmail,
        key: str,
        previous: Delivery,
        *,
        probe: bool = False,
        as_first: bool = False,
        address: str | None = None,
    ) -> DeliveryOutcome:
        """A mail that ``previous`` (an integration's first final delivery of it) ended for good:
        a refusal is answered as the first time, with no new row; an accepted mail adds a
        ``duplicate`` row pointing at its post. ``as_first``: the row repeats what
        ``previous`` recorded of the mail (envelope, sender, subject, size, verdicts)."""
        if previous.status is DeliveryStatus.rejected or previous.integration_id is None:
            return _repeat(previous, probe)
        described = previous if as_first else None
        return await self._duplicate(
            repo,
            writer,
            email,
            key,
            previous.platform_id,
            previous.integration_id,
            described,
            address=address,
        )

    async def _duplicate(
        self,
        repo: InboundRepository,
        writer: Writer,
        email: InboundEmail,
        key: str,
        platform_id: str | None,
        integration_id: uuid.UUID,
        described: Delivery | None = None,
        address: str | None = None,
    ) -> DeliveryOutcome:
        """The ``duplicate`` row of a mail the integration posted before, pointing at that post
        (``described``: the row repeats what that delivery recorded of the mail; ``address``:
        the integration's address it came to)."""
        row = delivery_row(
            email,
            key,
            status=DeliveryStatus.duplicate,
            platform_id=platform_id,
            integration_id=integration_id,
            post_id=await repo.post_id_for(integration_id, key),
            address=address,
        )
        if described is not None:
            row = replace(row, **{name: getattr(described, name) for name in DESCRIBED})
        await writer.add_deliveries([row])
        return DeliveryOutcome.of(row)

    async def _same_content(self, email: InboundEmail, tried: Sequence[Delivery]) -> bool:
        digest = content.content_digest(email)
        for delivery in tried:
            if delivery.content_sha256 and (
                await content.kept_digest(delivery.content_sha256, self.blobs) == digest
            ):
                return True
        return False


def _repeat(delivery: Delivery, probe: bool = False) -> DeliveryOutcome:
    status = delivery.status
    if status in (DeliveryStatus.accepted, DeliveryStatus.duplicate):
        status = DeliveryStatus.duplicate
    return DeliveryOutcome(
        status=status,
        reason=delivery.reason,
        delivery_id=delivery.id,
        post_id=delivery.post_id,
        integration_id=delivery.integration_id,
        probe=probe and delivery.integration_id is None,
        platform_id=delivery.platform_id,
    )
