"""The in-process signal that events were committed: it wakes this process's dispatcher.

``wake()`` is called after a commit that may have written events (the inbound pipeline's
``committed``, and every session whose transaction emitted one); the dispatcher also polls, so
a commit in another process is seen within ``EVENTS_POLL_SECONDS``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

_waiters: set[asyncio.Event] = set()
_refreshing: set[asyncio.Event] = set()
_idle: set[asyncio.Event] = set()  # dispatchers with no enabled endpoint: a commit is no news

EMITTED = "mailslot.events_emitted"  # the session's info key: its transaction wrote events
CHANGED = "mailslot.endpoints_changed"  # ... or changed the endpoints


def wake() -> None:
    """Wake every dispatcher of this process that has endpoints to send to (cheap: sets a
    flag; one without endpoints is left asleep, so that mail costs it nothing)."""
    for waiter in _waiters:
        if waiter not in _idle:
            waiter.set()


def idle(waiter: asyncio.Event, is_idle: bool) -> None:
    """Whether ``waiter``'s dispatcher found no enabled endpoint at its last poll (``wake``
    then passes it by; ``refresh`` still wakes it)."""
    if is_idle:
        _idle.add(waiter)
    else:
        _idle.discard(waiter)


def refresh() -> None:
    """The endpoints changed: every dispatcher of this process looks at them again now."""
    for waiter in _waiters:
        _refreshing.add(waiter)
        waiter.set()


def take_refresh(waiter: asyncio.Event) -> bool:
    """Whether ``waiter``'s dispatcher was asked to look at the endpoints again (once)."""
    if waiter in _refreshing:
        _refreshing.discard(waiter)
        return True
    return False


def register(waiter: asyncio.Event) -> None:
    _waiters.add(waiter)


def unregister(waiter: asyncio.Event) -> None:
    _waiters.discard(waiter)
    _refreshing.discard(waiter)
    _idle.discard(waiter)


def mark(session_info: dict[Any, Any], *, endpoints: bool = False) -> None:
    """The transaction of the session owning ``session_info`` wrote events (``endpoints``:
    changed the endpoints)."""
    session_info[CHANGED if endpoints else EMITTED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(CHANGED, False):
        session.info.pop(EMITTED, None)
        refresh()
    elif session.info.pop(EMITTED, False):
        wake()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(EMITTED, None)
    session.info.pop(CHANGED, None)
