"""The in-process wake-up: a dispatcher without endpoints is not woken by every mail."""

from __future__ import annotations

import asyncio

from app.events import signal


async def test_a_commit_wakes_only_dispatchers_with_endpoints() -> None:
    busy, idle = asyncio.Event(), asyncio.Event()
    signal.register(busy)
    signal.register(idle)
    try:
        signal.idle(idle, True)
        signal.wake()
        assert (busy.is_set(), idle.is_set()) == (True, False)
        signal.refresh()  # the endpoints changed: every dispatcher looks again
        assert idle.is_set()
        assert signal.take_refresh(idle)
        idle.clear()
        signal.idle(idle, False)  # its last poll found an endpoint
        signal.wake()
        assert idle.is_set()
    finally:
        signal.unregister(busy)
        signal.unregister(idle)
