"""Request bodies capped by path before any endpoint reads them.

FastAPI reads and validates a JSON body before it resolves the endpoint's dependencies, the
Bearer token among them: without a cap, an unauthenticated client could make a worker read
and parse any amount of JSON before its 401. :class:`BodyLimit` refuses a body over its path's
cap with a 413 ``payload_too_large`` problem: before reading when Content-Length says so, and
otherwise as soon as the bytes received pass the cap (a chunked upload is counted as it
streams). ``/inbound/`` bodies may be as large as ``MAX_REQUEST_BYTES`` (mail with
attachments); every other path as large as ``MAX_API_BODY_BYTES``.

It is a pure ASGI middleware: it adds no task, copies no body and costs one addition per
chunk. A slow upload is not its business: uvicorn has no body read timeout, so the reverse
proxy in front must have one (README, "Production").
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response

INBOUND_PREFIX = "/inbound/"


class BodyTooLarge(HTTPException):
    """The request body passed its path's cap (raised from ``receive``; answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"The request body is over {limit} bytes.")
        self.limit = limit


class BodyLimit:
    """Caps request bodies: ``inbound_limit`` bytes under ``/inbound/``, ``api_limit`` elsewhere."""

    def __init__(self, app: ASGIApp, *, api_limit: int, inbound_limit: int) -> None:
        self.app = app
        self.api_limit = api_limit
        self.inbound_limit = inbound_limit

    def limit_for(self, path: str) -> int:
        return self.inbound_limit if path.startswith(INBOUND_PREFIX) else self.api_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            # Refused before a byte of the body is read; the connection is closed afterwards
            # (uvicorn does so for a request whose body was not read).
            await problem_response(413, detail=BodyTooLarge(limit).detail)(scope, receive, send)
            return
        received = 0
        started = False

        async def receive_capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive_capped, send_tracked)
        except BodyTooLarge as exc:  # raised where no handler answered it
            if started:
                raise
            await problem_response(413, detail=exc.detail)(scope, receive, send)
