"""Repository base and keyset pagination on ``(created_at, id)``, newest first."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.db.base import Base
from app.errors import InvalidCursor

ModelT = TypeVar("ModelT", bound=Base)


def encode_cursor(created_at: datetime, key: Any) -> str:
    raw = json.dumps([created_at.isoformat(), str(key)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, key_type: type) -> tuple[datetime, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, key = json.loads(raw)
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        moment = moment.astimezone(UTC)
        if not isinstance(key, str) or any(ord(c) < 32 or ord(c) == 127 for c in key):
            raise ValueError("bad key")
        return moment, uuid.UUID(key) if key_type is uuid.UUID else key
    except (
        ValueError,
        TypeError,
        OverflowError,
        binascii.Error,
        UnicodeDecodeError,
        json.JSONDecodeError,
    ) as exc:
        raise InvalidCursor("The cursor is not one this service issued.") from exc


@dataclass(frozen=True)
class PageResult(Generic[ModelT]):
    items: Sequence[ModelT]
    next_cursor: str | None


class Repository(Generic[ModelT]):
    model: type[ModelT]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, obj: ModelT) -> ModelT:
        self.session.add(obj)
        await self.session.flush()
        return obj

    async def delete(self, obj: ModelT) -> None:
        await self.session.delete(obj)
        await self.session.flush()

    async def page(
        self,
        stmt: sa.Select[ModelT],
        *,
        limit: int,
        cursor: str | None,
        created: InstrumentedAttribute[datetime] | None = None,
        key: InstrumentedAttribute[Any] | None = None,
    ) -> PageResult[ModelT]:
        """Keyset page, newest first. A page never repeats or skips a committed row."""
        if created is None:
            created = self.model.created_at  # type: ignore[attr-defined]
        if key is None:
            key = self.model.id  # type: ignore[attr-defined]
        if cursor is not None:
            key_type = uuid.UUID if isinstance(key.type, sa.Uuid) else str
            after_created, after_key = decode_cursor(cursor, key_type)
            stmt = stmt.where(
                sa.tuple_(created, key)
                < sa.tuple_(sa.literal(after_created, created.type), after_key)
            )
        rows = (
            await self.session.scalars(stmt.order_by(created.desc(), key.desc()).limit(limit + 1))
        ).all()
        if len(rows) <= limit:
            return PageResult(rows, None)
        last = rows[limit - 1]
        return PageResult(
            rows[:limit], encode_cursor(getattr(last, created.key), getattr(last, key.key))
        )

    async def count(self, stmt: sa.Select[Any]) -> int:
        return int(
            await self.session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery())) or 0
        )
