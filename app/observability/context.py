"""The request being served: set for every HTTP request by ``app.api.request_id``, read by the
log formatter (its id on every line written while it is served), by the database timing
(``metrics``) and by the inbound router, which says what became of a mail."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.inbound.pipeline import DeliveryOutcome

SCOPE_KEY = "mailslot.request"
"""The ASGI scope's key of the request's ``RequestRecord`` (for what runs outside the context
variable, such as the handler of unexpected errors)."""


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    client: str | None = None
    status: int | None = None
    """The answer's status code, once its headers are sent."""
    bytes_received: int = 0
    database_seconds: float = 0.0
    """Time spent in database statements while serving it."""
    # What the inbound router made of the request (a mail, or its refusal):
    provider: str | None = None
    outcome: str | None = None
    reason: str | None = None
    outcomes: Sequence[DeliveryOutcome] = ()


_CURRENT: ContextVar[RequestRecord | None] = ContextVar("mailslot_request", default=None)


def current() -> RequestRecord | None:
    """The request being served, if any."""
    return _CURRENT.get()


def enter(record: RequestRecord) -> object:
    """Make ``record`` the current request; the token for ``leave``."""
    return _CURRENT.set(record)


def leave(token: object) -> None:
    _CURRENT.reset(token)  # type: ignore[arg-type]
