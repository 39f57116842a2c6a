"""From one normalised email to deliveries and posts: routing, rules, dedupe, rate limits."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.blobs.store import BlobStore
from app.config import Settings
from app.db.base import utcnow
from app.inbound import content
from app.inbound.html import html_to_text, sanitize_html
from app.inbound.model import InboundEmail
from app.inbound.repository import FINAL_STATUSES, InboundRepository, Route, fresh_event
from app.inbound.rules import author_address, is_auto_reply, normalise_recipient, sender_allowed
from app.models import (
    Delivery,
    DeliveryStatus,
    Integration,
    OversizePolicy,
    RejectionReason,
)

logger = logging.getLogger("mailslot.inbound")

RETRYABLE = (DeliveryStatus.rate_limited, DeliveryStatus.failed)
WindowCounter = Callable[[uuid.UUID, Sequence[tuple[int, int]]], Awaitable[list[int]]]
ERROR_TEXT_LIMIT = 4000


class InfrastructureFailure(Exception):
    """The database or the disk failed: the provider should retry (503)."""


@dataclass(frozen=True)
class DeliveryOutcome:
    status: DeliveryStatus
    reason: str | None = None
    delivery_id: uuid.UUID | None = None
    post_id: uuid.UUID | None = None
    integration_id: uuid.UUID | None = None
    probe: bool = False  # no recipient at our domain (a provider's set-up check)


@dataclass
class _Plan:
    """What to do with the mail for one integration."""

    integration: Integration | Route
    dedupe_key: str
    status: DeliveryStatus | None = None  # decided before writing; None: post it
    reason: str | None = None
    previous: Delivery | None = None
    omitted: list[dict[str, Any]] = field(default_factory=list)


# HTML up to this size is sanitised on the event loop (about a millisecond); larger, in a thread.
INLINE_HTML_CHARS = 32_768


async def _off_loop_if_large(work: Callable[[str], str], html: str) -> str:
    if len(html) <= INLINE_HTML_CHARS:
        return work(html)
    return await asyncio.to_thread(work, html)


def is_infrastructure_error(exc: BaseException) -> bool:
    if isinstance(exc, InfrastructureFailure):
        return True
    if isinstance(exc, OSError) and exc.errno in {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EIO,
        errno.EROFS,
    }:
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError | ConnectionError
    ):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, OSError | ConnectionError):
        return True
    name = type(exc).__module__ + "." + type(exc).__name__
    if name.startswith("asyncpg.") and (
        "Connection" in type(exc).__name__ or "CannotConnectNow" in type(exc).__name__
    ):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_infrastructure_error(cause)


def dedupe_key(email: InboundEmail) -> str:
    """The provider's event id when it has one; else Message-Id with a digest of the content."""
    if email.event_id:
        basis = f"event\0{email.provider}\0{email.event_id}"
    else:
        basis = f"content\0{email.message_id or ''}\0{content.content_digest(email)}"
    return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).hexdigest()


def _passes(verdicts: str | None, domain: str) -> bool:
    """Whether ``{@domain : pass}``-style text (SendGrid's ``dkim``; a trusted host's DKIM and
    DMARC, app.inbound.authresults) has a pass for exactly ``domain``."""
    for entry in (verdicts or "").lower().replace("{", "").replace("}", "").split(","):
        name, _, verdict = entry.partition(":")
        if verdict.strip() == "pass" and name.strip().lstrip("@") == domain:
            return True
    return False


def author_verified(email: InboundEmail) -> bool:
    """DKIM pass for the author's domain (the From domain, or the envelope sender's for a mail
    without From), a DMARC pass whose header.from is that domain, or an SPF pass for an
    envelope sender of that same domain."""
    author = author_address(email)
    if not author or "@" not in author:
        return False
    domain = author.rsplit("@", 1)[1].lower()
    if _passes(email.dkim, domain) or _passes(email.dmarc, domain):
        return True
    envelope_domain = (email.envelope_from or "").rsplit("@", 1)[-1].strip("<> ").lower()
    return (email.spf or "").strip().lower() == "pass" and envelope_domain == domain


class InboundService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        blobs: BlobStore,
        settings: Settings,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.engine = cast(AsyncEngine, sessionmaker.kw["bind"])
        self.blobs = blobs
        self.settings = settings

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
        addresses = sorted({a for a in map(normalise_recipient, recipients) if a})
        try:
            async with self.sessionmaker.begin() as session:
                integrations = await InboundRepository(session).routes(addresses)
                targets: list[Route | None] = list(integrations) or [None]
                deliveries = [
                    self._delivery(
                        email,
                        None,
                        platform_id=i.platform_id if i else None,
                        integration_id=i.id if i else None,
                        status=DeliveryStatus.rejected,
                        reason=reason,
                        error=detail[:ERROR_TEXT_LIMIT],
                    )
                    for i in targets
                ]
                session.add_all(deliveries)
        except Exception as exc:
            raise InfrastructureFailure(str(exc)) from exc
        return [
            DeliveryOutcome(
                status=d.status, reason=reason, delivery_id=d.id, integration_id=d.integration_id
            )
            for d in deliveries
        ]

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
            return await self._record_failure(email, exc)

    async def _deliver(self, email: InboundEmail) -> list[DeliveryOutcome]:
        addresses = sorted({a for a in map(normalise_recipient, email.recipients) if a})
        key = dedupe_key(email)
        domain = "@" + (self.settings.inbound_domain or "")
        # A set-up probe names no recipient at our domain. A recipient that an MTA names itself
        # (raw MIME: ``?recipient=``, ``X-Envelope-To``) is never one: mail to a domain routed to
        # us by mistake is refused, so that the MTA bounces it rather than drops it.
        probe = email.provider != "mime" and not any(a.endswith(domain) for a in addresses)
        if email.event_id and not probe:
            fresh = await self._deliver_fresh(email, key, addresses)
            if fresh is not None:
                return fresh
        async with self.sessionmaker() as session:
            repo = InboundRepository(session)
            known = False  # no final delivery of this event anywhere: none per integration
            if email.event_id:
                # One query for both: the ones that ended, and the retryable ones.
                seen = await repo.deliveries_by_key(key, (*FINAL_STATUSES, *RETRYABLE))
                earlier = [d for d in seen if d.status in FINAL_STATUSES]
                if earlier:  # the provider's retry
                    outcomes = await self._again(repo, session, email, key, earlier, probe=probe)
                    await session.commit()
                    return outcomes
                known = True
                tried = [d for d in seen if d.status in RETRYABLE]
                if tried and not await self._same_content(email, tried):
                    # The event id was used before with another body: a replayed token, never
                    # a new post. (A provider's own retry carries the same content.)
                    return [
                        DeliveryOutcome(
                            status=DeliveryStatus.duplicate,
                            delivery_id=tried[0].id,
                            integration_id=tried[0].integration_id,
                        )
                    ]
            integrations = await repo.routes(addresses)
            plans = [
                await self._plan(repo, email, integration, key, known_new=known)
                for integration in integrations
            ]
            session.expunge_all()  # keep what was read, detached
            await session.rollback()
        if not integrations:
            return [await self._unrouted(email, key, probe=probe)]
        for plan in plans:
            if plan.status is None and plan.previous is None:
                await self._rate_limit(plan)
        return await self._write(email, key, plans)

    async def _deliver_fresh(
        self, email: InboundEmail, key: str, addresses: Sequence[str]
    ) -> list[DeliveryOutcome] | None:
        """A provider event never seen before: one connection, no ORM, few round trips.

        The token is claimed first: every delivery recorded with an event's key claims its token
        (in the same transaction), so a fresh claim means nothing of this event was recorded and
        no dedupe lookup is needed. None (all rolled back) when the token was seen before or the
        mail goes nowhere: the general path then decides.
        """
        event_id = email.event_id
        assert event_id is not None  # noqa: S101
        first_id = uuid.uuid4()  # the token points at the first delivery written
        rendered = None
        async with fresh_event(self.engine) as event:
            if self._plain(email):
                email = await content.store_attachments(email, self.blobs)
                rendered = await self._rendered(email)
                single = await self._post_values(email, key, None, rendered)
                accepted = self._delivery_values(
                    email, key, id=first_id, status=DeliveryStatus.accepted, post_id=single["id"]
                )
                route = await event.post_at_once(
                    addresses,
                    (email.provider, event_id),
                    single,
                    accepted,
                    self._attachment_rows(email, single["id"], None),
                )
                if route is not None:
                    outcome = DeliveryOutcome(
                        status=DeliveryStatus.accepted,
                        delivery_id=first_id,
                        post_id=single["id"],
                        integration_id=route.id,
                    )
                    return self._committed([outcome])
            routes = await event.claim_and_route(email.provider, event_id, first_id, addresses)
            if not routes:
                return None
            plans = [self._decide(_Plan(integration=r, dedupe_key=key), email) for r in routes]
            if self.settings.rate_limits and any(p.status is None for p in plans):
                # Counted outside the transaction that writes the post (DESIGN.md), after the
                # token claim (a duplicate never counts): the claim is committed first.
                await event.commit()
                for plan in plans:
                    if plan.status is None:
                        await self._rate_limit(plan, event.count_in_windows)
                await event.commit()
            if any(p.status is None for p in plans):
                email = await content.store_attachments(email, self.blobs)
            refused = any(p.status is not None for p in plans)
            kept = await content.keep(email, self.blobs) if refused else None
            if len(plans) > 1:
                await event.begin()  # all of them or none
            outcomes = []
            for index, plan in enumerate(plans):
                post = (
                    None if plan.status is not None else await self._post_values(email, key, plan)
                )
                delivery = self._delivery_values(
                    email,
                    key,
                    id=first_id if index == 0 else uuid.uuid4(),
                    platform_id=plan.integration.platform_id,
                    integration_id=plan.integration.id,
                    status=plan.status or DeliveryStatus.accepted,
                    reason=plan.reason,
                    post_id=post["id"] if post else None,
                    content_sha256=kept if plan.status is not None else None,
                )
                attachments = (
                    self._attachment_rows(email, post["id"], plan.integration.platform_id)
                    if post
                    else []
                )
                if not await event.write(post, attachments, delivery):
                    # Cannot be: the claim serialises this event. A bug: rolled back, recorded.
                    raise RuntimeError("a fresh event's post exists already")
                outcomes.append(
                    DeliveryOutcome(
                        status=delivery["status"],
                        reason=plan.reason,
                        delivery_id=delivery["id"],
                        post_id=delivery["post_id"],
                        integration_id=plan.integration.id,
                    )
                )
            await event.commit()
        return self._committed(outcomes)

    def _plain(self, email: InboundEmail) -> bool:
        """A mail that every integration without sender rules posts as it is: every attachment
        kept, not an auto-reply, no rate limit to count first (``FreshEvent.post_at_once``)."""
        limit = self.settings.max_attachment_bytes
        oversize = any(not a.kept or a.size > limit for a in email.attachments)
        return not (oversize or self.settings.rate_limits or is_auto_reply(email))

    def _committed(self, outcomes: list[DeliveryOutcome]) -> list[DeliveryOutcome]:
        """The mail's rows are committed; the answer is not sent yet (where the reliability
        suite's failpoint, tests/reliability/failpoint.py, ends the process)."""
        return outcomes

    async def _claim_for(
        self, session: AsyncSession, email: InboundEmail, delivery_id: uuid.UUID
    ) -> None:
        """Claim the event's token for a delivery recorded without a post (if not claimed yet):
        a later fresh claim then proves that nothing of the event was recorded."""
        if email.event_id:
            await InboundRepository(session).claim_token(
                email.provider, email.event_id, delivery_id
            )

    async def _same_content(self, email: InboundEmail, tried: Sequence[Delivery]) -> bool:
        digest = content.content_digest(email)
        for delivery in tried:
            if delivery.content_sha256 and (
                await content.kept_digest(delivery.content_sha256, self.blobs) == digest
            ):
                return True
        return False

    def _repeat(self, delivery: Delivery, probe: bool = False) -> DeliveryOutcome:
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
        )

    async def _plan(
        self,
        repo: InboundRepository,
        email: InboundEmail,
        integration: Integration | Route,
        key: str,
        *,
        known_new: bool = False,
    ) -> _Plan:
        """``known_new``: the caller just found no final delivery with this key on any
        integration, so this one has none either (a concurrent one is caught by the token
        claim and the post's unique key when writing)."""
        plan = _Plan(integration=integration, dedupe_key=key)
        previous = None if known_new else await repo.final_delivery(integration.id, key)
        if previous is not None:
            plan.previous = previous
            return plan
        return self._decide(plan, email)

    def _decide(self, plan: _Plan, email: InboundEmail) -> _Plan:
        """Refused for good (status and reason set), or to be posted (with what is omitted)."""
        integration = plan.integration
        limit = self.settings.max_attachment_bytes
        oversize = [a for a in email.attachments if not a.kept or a.size > limit]
        if integration.deleted_at is not None:
            # The address is no longer anyone's; the refusal is logged for its platform.
            plan.status, plan.reason = DeliveryStatus.rejected, RejectionReason.unknown_recipient
        elif not integration.enabled:
            plan.status, plan.reason = DeliveryStatus.rejected, RejectionReason.integration_disabled
        elif is_auto_reply(email):
            plan.status, plan.reason = DeliveryStatus.rejected, RejectionReason.auto_reply
        elif not sender_allowed(author_address(email), list(integration.allowed_senders or [])):
            plan.status, plan.reason = DeliveryStatus.rejected, RejectionReason.sender_not_allowed
        elif oversize and integration.oversize_attachments is OversizePolicy.reject:
            plan.status = DeliveryStatus.rejected
            plan.reason = RejectionReason.attachment_too_large
        else:
            plan.omitted = [
                {"filename": a.filename, "size": a.size, "reason": "too_large"} for a in oversize
            ]
        return plan

    async def _rate_limit(self, plan: _Plan, count: WindowCounter | None = None) -> None:
        """Counted in the database, in a short transaction of its own, before the post is made
        (``count``: on the caller's connection, which commits)."""
        limits = self.settings.rate_limits
        if not limits:
            return
        now = int(time.time())
        windows = [(limit.seconds, now - now % limit.seconds) for limit in limits]
        if count is not None:
            counts = await count(plan.integration.id, windows)
        else:
            async with self.sessionmaker.begin() as session:
                counts = await InboundRepository(session).count_in_windows(
                    plan.integration.id, windows
                )
        if any(count > limit.count for count, limit in zip(counts, limits, strict=True)):
            plan.status, plan.reason = DeliveryStatus.rate_limited, "rate_limited"

    def _delivery(self, email: InboundEmail, key: str | None, **values: Any) -> Delivery:
        fields = self._delivery_values(email, key, **values)
        fields["from_"] = fields.pop("from")
        return Delivery(**fields)

    def _delivery_values(
        self, email: InboundEmail, key: str | None, **values: Any
    ) -> dict[str, Any]:
        """A delivery row's columns (``from`` by its column name)."""
        return {
            "id": uuid.uuid4(),
            "provider": email.provider,
            "envelope_from": email.envelope_from,
            "envelope_to": ", ".join(email.recipients)[:998] or None,
            "from": email.from_address,
            "subject": email.subject,
            "size_bytes": email.size_bytes,
            "message_id": (email.message_id or "")[:998] or None,
            "spf": (email.spf or "")[:32] or None,
            "dkim": (email.dkim or "")[:200] or None,
            "dedupe_key": key,
            "received_at": utcnow(),
            "error": None,
            "content_sha256": None,
            "post_id": None,
            "reason": None,
            **values,
        }

    def _fill(
        self, target: Delivery | None, email: InboundEmail, key: str, **values: Any
    ) -> Delivery:
        """A new delivery row, or (replay) the failed one brought up to date."""
        if target is None:
            return self._delivery(email, key, **values)
        for name, value in {"error": None, "reason": None, "post_id": None, **values}.items():
            setattr(target, name, value)
        return target

    async def replay(self, delivery_id: uuid.UUID, platform_id: str) -> Delivery | None:
        """Process a ``failed`` delivery again from its kept content; None if it is not failed."""
        async with self.sessionmaker() as session:
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
            integration = await session.get(Integration, delivery.integration_id)
            session.expunge_all()  # keep what was read, detached
            await session.rollback()
        email = await content.load(content_sha, self.blobs)
        key = dedupe_key(email)
        if integration is None:
            return None
        async with self.sessionmaker() as session:
            plan = await self._plan(InboundRepository(session), email, integration, key)
            session.expunge_all()  # keep what was read, detached
            await session.rollback()
        stored = await content.store_attachments(email, self.blobs)
        async with self.sessionmaker.begin() as session:
            target = await session.get(Delivery, delivery_id, with_for_update=True)
            if target is None or target.status is not DeliveryStatus.failed:
                return target
            if plan.previous is not None:
                target.status = DeliveryStatus.duplicate
                target.post_id = plan.previous.post_id
                target.error = None
            else:
                await self._write_one(
                    InboundRepository(session), session, stored, key, plan, content_sha, target
                )
            await session.flush()
            return target

    async def _unrouted(self, email: InboundEmail, key: str, *, probe: bool) -> DeliveryOutcome:
        kept = await content.keep(email, self.blobs)
        delivery = self._delivery(
            email,
            key,
            platform_id=None,
            integration_id=None,
            status=DeliveryStatus.rejected,
            reason=RejectionReason.unknown_recipient,
            content_sha256=kept,
        )
        async with self.sessionmaker.begin() as session:
            session.add(delivery)
            await self._claim_for(session, email, delivery.id)
        return DeliveryOutcome(
            status=delivery.status,
            reason=delivery.reason,
            delivery_id=delivery.id,
            probe=probe,
        )

    async def _write(
        self, email: InboundEmail, key: str, plans: Sequence[_Plan]
    ) -> list[DeliveryOutcome]:
        to_post = [p for p in plans if p.previous is None and p.status is None]
        refused = [p for p in plans if p.previous is None and p.status is not None]
        stored = await content.store_attachments(email, self.blobs) if to_post else email
        kept = await content.keep(email, self.blobs) if refused else None
        outcomes: list[DeliveryOutcome] = []
        async with self.sessionmaker.begin() as session:
            repo = InboundRepository(session)
            if email.event_id and not await repo.claim_token(email.provider, email.event_id):
                # Seen before (perhaps a moment ago, by a concurrent request): a retry of that.
                earlier = await repo.deliveries_by_key(key)
                if earlier:
                    return await self._again(repo, session, email, key, earlier)
            for plan in plans:
                outcomes.append(await self._write_one(repo, session, stored, key, plan, kept))
            if email.event_id and outcomes and outcomes[0].delivery_id is not None:
                await repo.point_token(email.provider, email.event_id, outcomes[0].delivery_id)
        return self._committed(outcomes)

    async def _write_one(
        self,
        repo: InboundRepository,
        session: AsyncSession,
        email: InboundEmail,
        key: str,
        plan: _Plan,
        kept: str | None,
        target: Delivery | None = None,
    ) -> DeliveryOutcome:
        integration = plan.integration
        owner: dict[str, Any] = {
            "platform_id": integration.platform_id,
            "integration_id": integration.id,
        }
        if plan.previous is not None:
            return await self._seen_before(repo, session, email, key, plan.previous)
        if plan.status is not None:
            return await self._record(
                session,
                target,
                email,
                key,
                status=plan.status,
                reason=plan.reason,
                content_sha256=kept,
                **owner,
            )
        post_id = await self._add_post(repo, email, key, plan)
        if post_id is None:  # a concurrent delivery of the same mail committed first
            return await self._duplicate(repo, session, email, key, **owner)
        return await self._record(
            session, target, email, key, status=DeliveryStatus.accepted, post_id=post_id, **owner
        )

    async def _record(
        self,
        session: AsyncSession,
        target: Delivery | None,
        email: InboundEmail,
        key: str,
        **values: Any,
    ) -> DeliveryOutcome:
        """Write the delivery row (new, or the replayed one) and say what it was."""
        delivery = self._fill(target, email, key, **values)
        session.add(delivery)
        await session.flush()
        return DeliveryOutcome(
            status=delivery.status,
            reason=delivery.reason,
            delivery_id=delivery.id,
            post_id=delivery.post_id,
            integration_id=delivery.integration_id,
        )

    async def _again(
        self,
        repo: InboundRepository,
        session: AsyncSession,
        email: InboundEmail,
        key: str,
        earlier: Sequence[Delivery],
        *,
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
            await self._seen_before(repo, session, email, key, first, probe=probe, as_first=True)
            for first in firsts.values()
        ]

    async def _seen_before(
        self,
        repo: InboundRepository,
        session: AsyncSession,
        email: InboundEmail,
        key: str,
        previous: Delivery,
        *,
        probe: bool = False,
        as_first: bool = False,
    ) -> DeliveryOutcome:
        """A mail that ``previous`` (an integration's first final delivery of it) ended for good:
        a refusal is answered as the first time, with no new row; an accepted mail adds a
        ``duplicate`` row pointing at its post. ``as_first``: the row repeats what
        ``previous`` recorded of the mail (envelope, sender, subject, size, verdicts)."""
        if previous.status is DeliveryStatus.rejected or previous.integration_id is None:
            return self._repeat(previous, probe)
        described = (
            {
                "envelope_from": previous.envelope_from,
                "envelope_to": previous.envelope_to,
                "from": previous.from_,
                "subject": previous.subject,
                "size_bytes": previous.size_bytes,
                "message_id": previous.message_id,
                "spf": previous.spf,
                "dkim": previous.dkim,
            }
            if as_first
            else {}
        )
        return await self._duplicate(
            repo,
            session,
            email,
            key,
            platform_id=previous.platform_id,
            integration_id=previous.integration_id,
            **described,
        )

    async def _duplicate(
        self,
        repo: InboundRepository,
        session: AsyncSession,
        email: InboundEmail,
        key: str,
        *,
        integration_id: uuid.UUID,
        **values: Any,
    ) -> DeliveryOutcome:
        """The ``duplicate`` row of a mail the integration posted before, pointing at that post."""
        post_id = await repo.post_id_for(integration_id, key)
        return await self._record(
            session,
            None,
            email,
            key,
            status=DeliveryStatus.duplicate,
            post_id=post_id,
            integration_id=integration_id,
            **values,
        )

    async def _add_post(
        self, repo: InboundRepository, email: InboundEmail, key: str, plan: _Plan
    ) -> uuid.UUID | None:
        values = await self._post_values(email, key, plan)
        post_id = await repo.add_post_once(values)
        if post_id is not None:
            rows = self._attachment_rows(email, post_id, plan.integration.platform_id)
            await repo.add_attachments(rows)
        return post_id

    async def _rendered(self, email: InboundEmail) -> tuple[str | None, str | None]:
        """The post's HTML (sanitised) and text (rendered from that HTML when the mail has none)."""
        html = await _off_loop_if_large(sanitize_html, email.html) if email.html else None
        if email.text is not None:
            return html, email.text
        return html, await _off_loop_if_large(html_to_text, html) if html else None

    async def _post_values(
        self,
        email: InboundEmail,
        key: str,
        plan: _Plan | None,
        rendered: tuple[str | None, str | None] | None = None,
    ) -> dict[str, Any]:
        """The post's row (``plan`` None: the integration's columns are left to the caller)."""
        integration = plan.integration if plan is not None else None
        if integration is not None and integration.group_id is None:
            raise RuntimeError("a live integration has no group")
        html, text = rendered if rendered is not None else await self._rendered(email)
        now = utcnow()
        return {
            "id": uuid.uuid4(),
            "platform_id": integration.platform_id if integration else None,
            "group_id": integration.group_id if integration else None,
            "integration_id": integration.id if integration else None,
            "dedupe_key": key,
            "source": "email",
            "author_email": author_address(email),
            "author_name": email.from_name,
            "author_verified": author_verified(email),
            "subject": email.subject,
            "text": text,
            "html": html,
            "omitted_attachments": [
                {"filename": o.filename, "size": o.size, "reason": o.reason} for o in email.omitted
            ]
            + (plan.omitted if plan is not None else []),
            "received_at": now,
            "created_at": now,
        }

    def _attachment_rows(
        self, email: InboundEmail, post_id: uuid.UUID, platform_id: str | None
    ) -> list[dict[str, Any]]:
        """The stored attachments of the post, in the mail's order (oversized ones omitted)."""
        limit = self.settings.max_attachment_bytes
        kept = [a for a in email.attachments if a.kept and a.size <= limit and a.sha256]
        return [
            {
                "id": uuid.uuid4(),
                "post_id": post_id,
                "platform_id": platform_id,
                "position": position,
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "size": attachment.size,
                "sha256": attachment.sha256,
                "inline": attachment.inline,
                "content_id": attachment.content_id,
            }
            for position, attachment in enumerate(kept)
        ]

    async def _record_failure(self, email: InboundEmail, exc: Exception) -> list[DeliveryOutcome]:
        """Our bug: the work was rolled back; record ``failed`` with the content, for replay."""
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:ERROR_TEXT_LIMIT]
        key = dedupe_key(email)
        try:
            kept = await content.keep(email, self.blobs)
            addresses = sorted({a for a in map(normalise_recipient, email.recipients) if a})
            async with self.sessionmaker.begin() as session:
                integrations = await InboundRepository(session).routes(addresses)
                targets: list[Route | None] = list(integrations) or [None]
                deliveries = []
                for integration in targets:
                    delivery = self._delivery(
                        email,
                        key,
                        platform_id=integration.platform_id if integration else None,
                        integration_id=integration.id if integration else None,
                        status=DeliveryStatus.failed,
                        error=error,
                        content_sha256=kept,
                    )
                    session.add(delivery)
                    deliveries.append(delivery)
                await self._claim_for(session, email, deliveries[0].id)
        except Exception as second:
            logger.exception("recording a failed delivery failed too")
            raise InfrastructureFailure(str(second)) from second
        return [
            DeliveryOutcome(
                status=DeliveryStatus.failed, delivery_id=d.id, integration_id=d.integration_id
            )
            for d in deliveries
        ]
