"""Headers every answer carries: ``nosniff`` everywhere, ``no-store`` on the API's own data."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def security_headers(path: str) -> dict[str, str]:
    """What an answer to ``path`` carries when it sets nothing of its own."""
    if path.startswith("/v1/"):
        return {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    return {"X-Content-Type-Options": "nosniff"}


class SecurityHeaders:
    """``X-Content-Type-Options: nosniff`` on every answer; ``Cache-Control: no-store`` on every
    ``/v1`` answer that sets no caching of its own, since those carry integration addresses,
    signed attachment URLs and mail metadata that no shared or disk cache should keep.
    (Attachment downloads set ``private`` caching themselves, and keep it.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        defaults = security_headers(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in defaults.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
