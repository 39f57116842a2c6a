"""The application's errors. Each maps to one problem ``code``; no FastAPI here."""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class Unauthenticated(AppError):
    status, code, title = 401, "unauthenticated", "Unauthenticated"


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class PlanLimitReached(AppError):
    status, code, title = 409, "plan_limit_reached", "Plan limit reached"


class NotReplayable(AppError):
    status, code, title = 409, "not_replayable", "Not replayable"


class ContentExpired(AppError):
    status, code, title = 409, "content_expired", "Content expired"


class UnsupportedMediaType(AppError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class InvalidCursor(AppError):
    status, code, title = 422, "invalid_cursor", "Invalid cursor"


class Invalid(AppError):
    """A request that passed schema validation but breaks a rule; ``errors`` names the fields."""

    status, code, title = 422, "validation_error", "Validation error"


class Unavailable(AppError):
    status, code, title = 503, "unavailable", "Service unavailable"
