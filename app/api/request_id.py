"""``X-Request-ID`` on every answer, and the request's context while it is served.

The id is the one the reverse proxy sent, when it is 1 to 128 characters of letters, digits and
``. _ ~ : + / = -`` (anything else, or none: a new one is made), so that a line of the proxy's
log and a line of ours name the same request. Every log line written while the request is
served carries it (``app.logging``), and ``/inbound/`` requests end with their one log line and
their metrics (``app.observability.inbound``), whatever answered them (the endpoint, the body
cap's 413, a 404 or 405 of the routing).

It is a pure ASGI middleware, like ``app.api.headers``: no task, no copy of the body, one
header added to the answer.
"""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import context
from app.observability.context import SCOPE_KEY, RequestRecord
from app.observability.inbound import INBOUND_PREFIX, observe

HEADER = b"x-request-id"
_ACCEPTED = re.compile(rb"[A-Za-z0-9._~:+/=-]{1,128}")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The proxy's ``X-Request-ID`` when it is acceptable, else a new random one."""
    for name, value in headers:
        if name == HEADER:
            if _ACCEPTED.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()


class RequestContext:
    """Gives each HTTP request an id (echoed in ``X-Request-ID``) and a ``RequestRecord``;
    observes each ``/inbound/`` request as its answer starts (so that a client that has its
    answer finds it counted), or at its end when no answer was sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        record = RequestRecord(
            request_id(scope["headers"]),
            scope["method"],
            scope["path"],
            client=client[0] if client else None,
        )
        scope[SCOPE_KEY] = record
        echoed = (HEADER, record.request_id.encode("ascii"))
        token = context.enter(record)
        if not record.path.startswith(INBOUND_PREFIX):

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    record.status = message["status"]
                    message["headers"] = [*message.get("headers", ()), echoed]
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            finally:
                context.leave(token)
            return

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                record.bytes_received += len(message.get("body", b""))
            return message

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
                observe(record)
            await send(message)

        try:
            await self.app(scope, receive_counted, send_observed)
        finally:
            if record.status is None:  # no answer started: the server answers 500
                observe(record)
            context.leave(token)
