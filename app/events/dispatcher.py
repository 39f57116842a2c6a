"""The dispatcher: in every server process, sends due event messages to their endpoints.

It claims due messages from the database (a lease: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
so two processes never take the same one; SQLite has one writer), POSTs each as Standard
Webhooks says (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``, signed with
``standardwebhooks``), records the attempt, and schedules a retry on ``EVENTS_RETRY_SCHEDULE``
(then marks the message failed). An endpoint failing for ``EVENTS_DISABLE_AFTER_DAYS`` is
disabled, with the reason shown in the API. A process that dies mid-send leaves a lease that
ends, and the message is sent again (at least once).

It wakes on ``app.events.signal.wake()`` after a commit that wrote events, and polls every
``EVENTS_POLL_SECONDS`` with one small query (the endpoints table and the due-messages index).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.db.base import utcnow
from app.events import signal
from app.events.render import render
from app.events.repository import (
    ATTEMPTS,
    ENDPOINTS,
    MESSAGES,
    Claimed,
    EventRow,
    claim,
    event_insert,
    event_values,
    new_event_id,
)
from app.events.service import body, encode
from app.events.targets import TargetRefused, target
from app.models import Event, EventEndpoint, EventType, MessageStatus
from app.posts.service import PostService

logger = logging.getLogger("mailslot.events")

BATCH = 32  # messages claimed at once, sent concurrently
LEASE_MARGIN_SECONDS = 30.0  # a lease outlives the longest try by this much
ERROR_LIMIT = 500
USER_AGENT = "mailslot-events/1"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    duration_ms: float
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signatures(endpoint: EventEndpoint, event_id: str, at: datetime, payload: bytes) -> str:
    """``v1,...`` with the current secret, and with the previous one during a rotation's
    overlap (space-separated, as the specification allows)."""
    secrets = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > at:
        secrets.append(endpoint.previous_secret)
    return " ".join(Webhook(secret).sign(event_id, at, payload) for secret in secrets)


def _timeout(settings: Settings) -> httpx.Timeout:
    seconds = settings.events_timeout_seconds
    return httpx.Timeout(seconds, connect=min(seconds, 5.0))


def new_client(settings: Settings) -> httpx.AsyncClient:
    """No redirects followed, no proxy from the environment (the checked address is the one
    connected to), bounded timeouts."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=_timeout(settings),
        headers={"User-Agent": USER_AGENT},
    )


async def post(
    client: httpx.AsyncClient,
    settings: Settings,
    endpoint: EventEndpoint,
    event_id: str,
    payload: bytes,
) -> Outcome:
    """One try: the URL checked again now, the checked address connected to."""
    started = time.perf_counter()
    try:
        checked = await target(endpoint.url, settings)
    except TargetRefused as exc:
        return Outcome(None, 0.0, f"refused: the url {exc}")
    now = utcnow()
    headers = {
        "Host": checked.host,
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures(endpoint, event_id, now, payload),
    }
    extensions = {"sni_hostname": checked.sni} if checked.sni else {}
    try:
        # httpx's timeouts bound each read and write; this bounds the whole try, well inside
        # the lease (a receiver dripping its header a byte at a time is cut off too).
        async with (
            asyncio.timeout(settings.events_timeout_seconds + 5),
            client.stream(
                "POST", checked.url, content=payload, headers=headers, extensions=extensions
            ) as response,
        ):
            code = response.status_code  # the body is not read
    except (httpx.TimeoutException, TimeoutError):
        return Outcome(None, _ms(started), "timed out")
    except httpx.HTTPError as exc:
        return Outcome(None, _ms(started), f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT])
    error = None if 200 <= code < 300 else f"answered {code}"
    return Outcome(code, _ms(started), error)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


class Dispatcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.client = client or new_client(settings)
        self.woken = asyncio.Event()
        self.active = False  # the last poll found enabled endpoints: a wake is worth a claim
        self.task: asyncio.Task[None] | None = None

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.events_timeout_seconds + LEASE_MARGIN_SECONDS)

    def start(self) -> None:
        signal.register(self.woken)
        self.task = asyncio.create_task(self._run(), name="mailslot-events-dispatcher")

    async def stop(self) -> None:
        signal.unregister(self.woken)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        await self.client.aclose()

    async def _run(self) -> None:
        """Poll every ``EVENTS_POLL_SECONDS`` (however often it is woken meanwhile); between
        polls, a wake claims at once, unless the last poll found no enabled endpoint."""
        interval = self.settings.events_poll_seconds
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), max(0.0, next_poll - loop.time()))
            self.woken.clear()
            try:
                if loop.time() >= next_poll or signal.take_refresh(self.woken):
                    next_poll = loop.time() + interval
                    if not await self.poll():
                        continue
                elif not self.active:
                    continue
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the event dispatcher failed; it tries again")
                await asyncio.sleep(interval)

    async def poll(self) -> bool:
        """One small query: are there enabled endpoints, and is any message due?"""
        now = utcnow()
        async with self.sessionmaker() as session:
            row = (
                await session.execute(
                    sa.select(
                        sa.exists().where(ENDPOINTS.c.enabled.is_(True)),
                        sa.exists().where(
                            MESSAGES.c.status == MessageStatus.pending,
                            MESSAGES.c.next_attempt_at <= now,
                        ),
                    )
                )
            ).one()
            await session.rollback()
        self.active = bool(row[0])
        signal.idle(self.woken, not self.active)
        return bool(row[1])

    async def run_once(self) -> int:
        """Claim and send due messages until none is due; how many were tried."""
        tried = 0
        while True:
            now = utcnow()
            async with self.sessionmaker.begin() as session:
                conn = await session.connection()
                claimed = await claim(conn, now=now, lease_until=now + self.lease, limit=BATCH)
            if not claimed:
                return tried
            await asyncio.gather(*(self.send(message) for message in claimed))
            tried += len(claimed)
            if len(claimed) < BATCH:
                return tried

    async def send(self, message: Claimed) -> None:
        try:
            await self._send(message)
        except Exception:
            # The lease ends and the message is tried again.
            logger.exception("sending event message %s failed", message.message_id)

    async def _send(self, message: Claimed) -> None:
        async with self.sessionmaker.begin() as session:
            endpoint = await session.get(EventEndpoint, message.endpoint_id)
            event = await session.get(Event, message.event_seq)
            if endpoint is None or event is None:
                return
            if not endpoint.enabled:
                await self._record(session, message, endpoint, event, None, final=True)
                return
            await render(session, PostService(session, self.settings).read, [event])
            session.expunge_all()
        payload = encode(body(event))
        outcome = await post(self.client, self.settings, endpoint, event.id, payload)
        async with self.sessionmaker.begin() as session:
            await self._record(session, message, endpoint, event, outcome)

    async def _record(
        self,
        session: AsyncSession,
        message: Claimed,
        endpoint: EventEndpoint,
        event: Event,
        outcome: Outcome | None,
        *,
        final: bool = False,
    ) -> None:
        """The try's attempt row, the message's new state and the endpoint's health, in one
        transaction that takes the endpoint's row first (so that concurrent records of one
        endpoint queue instead of deadlocking on the rows they share)."""
        now = utcnow()
        current = (
            await session.scalars(
                sa.select(EventEndpoint)
                .where(EventEndpoint.id == endpoint.id)
                .with_for_update(key_share=True)
            )
        ).first()
        attempts = message.attempts + 1
        schedule = self.settings.events_retry_schedule
        next_at: datetime | None = None
        if outcome is not None and outcome.delivered:
            status = MessageStatus.delivered
        elif final or event.type is EventType.ping or attempts > len(schedule):
            status = MessageStatus.failed
        else:
            status = MessageStatus.pending
            next_at = now + timedelta(seconds=schedule[attempts - 1])
        error = "the endpoint is disabled" if outcome is None else outcome.error
        await session.execute(
            sa.update(MESSAGES)
            .where(MESSAGES.c.id == message.message_id, MESSAGES.c.status == MessageStatus.pending)
            .values(
                status=status,
                attempts=attempts,
                next_attempt_at=next_at,
                leased_until=None,
                last_status_code=None if outcome is None else outcome.status_code,
                last_error=error,
            )
        )
        if outcome is None or current is None:
            return
        await session.execute(
            sa.insert(ATTEMPTS).values(
                message_id=message.message_id,
                endpoint_id=endpoint.id,
                event_id=event.id,
                at=now,
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                error=outcome.error,
                next_attempt_at=next_at,
            )
        )
        self._health(current, outcome, now)
        if not current.enabled:
            await session.execute(
                sa.update(MESSAGES)
                .where(
                    MESSAGES.c.endpoint_id == current.id,
                    MESSAGES.c.status == MessageStatus.pending,
                )
                .values(status=MessageStatus.failed, last_error="the endpoint was disabled")
            )

    def _health(self, endpoint: EventEndpoint, outcome: Outcome, now: datetime) -> None:
        """A success clears ``failing_since``; a failure sets it, and disables the endpoint once
        it has failed continuously for ``EVENTS_DISABLE_AFTER_DAYS``."""
        if outcome.delivered:
            endpoint.failing_since = None
            return
        if not endpoint.enabled:
            return
        if endpoint.failing_since is None:
            endpoint.failing_since = now
            return
        if now - endpoint.failing_since < timedelta(days=self.settings.events_disable_after_days):
            return
        endpoint.enabled = False
        endpoint.updated_at = now
        endpoint.disabled_reason = (
            f"disabled at {now:%Y-%m-%dT%H:%M:%SZ}: every try failed since "
            f"{endpoint.failing_since:%Y-%m-%dT%H:%M:%SZ} (last: {outcome.error})"
        )[:ERROR_LIMIT]
        logger.warning("event endpoint %s disabled: %s", endpoint.id, endpoint.disabled_reason)

    async def ping(self, endpoint_id: object) -> tuple[str, Outcome]:
        """A ``ping`` sent to the endpoint now (its message leased, so no dispatcher takes it)."""
        now = utcnow()
        row = EventRow(
            id=new_event_id(),
            type=EventType.ping,
            platform_id=None,
            payload={"endpoint_id": str(endpoint_id)},
            created_at=now,
        )
        leased = now + self.lease
        async with self.sessionmaker.begin() as session:
            endpoint = await session.get(EventEndpoint, endpoint_id)
            if endpoint is None:
                raise LookupError(endpoint_id)
            dialect = session.get_bind().dialect.name
            seq = (
                await session.execute(event_insert(dialect), event_values(row, "e_"))
            ).scalar_one()
            message_id = (
                await session.execute(
                    sa.insert(MESSAGES)
                    .values(
                        event_seq=seq,
                        endpoint_id=endpoint.id,
                        status=MessageStatus.pending,
                        attempts=0,
                        next_attempt_at=leased,
                        leased_until=leased,
                        created_at=now,
                    )
                    .returning(MESSAGES.c.id)
                )
            ).scalar_one()
            event = await session.get(Event, seq)
            assert event is not None  # noqa: S101
            session.expunge_all()
        outcome = await post(self.client, self.settings, endpoint, event.id, encode(body(event)))
        claimed = Claimed(message_id, event.seq, endpoint.id, 0)
        async with self.sessionmaker.begin() as session:
            await self._record(session, claimed, endpoint, event, outcome)
        return event.id, outcome
