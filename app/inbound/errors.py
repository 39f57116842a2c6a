"""Every error of the inbound path, and the answer each one becomes.

Two kinds, kept apart as zulip's email mirror keeps them: the sender's fault, which refuses a mail
for good (:class:`Refusal`: recorded in the delivery log with its ``reason`` and answered with the
provider's refusal code), and problems with the request itself (:class:`RequestProblem`: answered
before anything is recorded). Our own failures are the third kind: :class:`InfrastructureFailure`
(a database or a disk down: 503, the provider retries; ``app.inbound.failures`` tells which
exceptions are that), and any other exception, a bug (500).

No FastAPI import: the router (``app.inbound.router``) turns these into answers.
"""

from __future__ import annotations

from typing import ClassVar


class InboundError(Exception):
    """Anything that stops an inbound request before its mail is delivered; ``detail`` says
    what (it is written to the delivery log or the problem body, never a secret)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- the sender's fault: refused for good ---------------------------------------------------------


class Refusal(InboundError):
    """An authenticated payload refused for good: recorded as ``rejected`` with ``reason`` for
    the envelope recipients known so far, and answered with the provider's refusal code (406,
    200, 403, 422: DESIGN.md's table), which stops its retries."""

    reason: ClassVar[str]


class MalformedMessage(Refusal):
    """An authenticated payload that is not what the provider sends, or has no recipient:
    reason ``malformed_message``."""

    reason = "malformed_message"

    def __init__(self, detail: str = "malformed message") -> None:
        super().__init__(detail)


class NotJson(MalformedMessage):
    """Text that is not JSON at all (as opposed to JSON nested too deeply): a Postmark body or a
    JSON field of a form. Callers that tolerate a broken optional field catch this one only."""


class MessageTooComplex(Refusal):
    """Nesting, part count, header size or recipients beyond our bounds (checked on the raw
    bytes, before any parser sees them): reason ``message_too_complex``."""

    reason = "message_too_complex"

    def __init__(self, reason_detail: str = "message too complex") -> None:
        super().__init__(reason_detail)


class MalformedBody(MalformedMessage):
    """The body is not a well-formed ``multipart/form-data`` or urlencoded form.

    Refused as ``malformed_message`` once the request is authenticated (basic auth); a provider
    that authenticates from the form's own fields (Mailgun) answers it 401 instead, since a body
    that is not a form carries no signature."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)


class FormTooComplex(MessageTooComplex):
    """A bound of ``app.inbound.multipart.FormLimits`` was passed; nothing read so far was kept.

    ``authenticated`` tells whether the request was authenticated when it happened (always true
    without a gate): a provider's payload beyond the bounds is refused as
    ``message_too_complex``; an anonymous body is answered 413, and nothing is recorded."""

    def __init__(self, detail: str, *, authenticated: bool) -> None:
        super().__init__(detail)
        self.authenticated = authenticated


# --- problems with the request: answered before anything is recorded ------------------------------


class RequestProblem(InboundError):
    """The request cannot be taken at all: a problem answer (``application/problem+json``),
    and no delivery is recorded."""


class EndpointDisabled(RequestProblem):
    """The endpoint's secret is not configured: 404."""

    def __init__(self, detail: str = "This inbound endpoint is not configured.") -> None:
        super().__init__(detail)


class InvalidCredentials(RequestProblem):
    """Bad signature or credentials: 401 with ``WWW-Authenticate: <scheme>``."""

    def __init__(self, detail: str, scheme: str = "Basic") -> None:
        super().__init__(detail)
        self.scheme = scheme


class PayloadTooLarge(RequestProblem):
    """The request body passed ``max_total`` bytes (``MAX_REQUEST_BYTES``): 413; nothing read so
    far was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


# --- our own failure ----------------------------------------------------------------------------


class InfrastructureFailure(Exception):
    """The database or the disk failed: answered 503, so that the provider retries; nothing
    half-written is visible (``app.inbound.failures.is_infrastructure_error`` classifies)."""
