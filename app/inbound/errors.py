"""The sender's fault, kept apart from ours: payloads we refuse for good."""

from __future__ import annotations


class MalformedMessage(Exception):
    """An authenticated payload that is not what the provider sends, or has no recipient."""

    def __init__(self, detail: str = "malformed message") -> None:
        super().__init__(detail)
        self.detail = detail


class MessageTooComplex(Exception):
    """Nesting, part count, header size or recipients beyond our bounds."""

    def __init__(self, reason_detail: str = "message too complex") -> None:
        super().__init__(reason_detail)
        self.detail = reason_detail
