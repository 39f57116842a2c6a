"""The rows the inbound path writes, typed, built from an ``InboundEmail`` and a ``Decision``.

Each row class names its model; ``columns(row)`` gives its values by column key (``from_`` is
the column ``from``), read from the model's mapper, so no column list is kept by hand. A column
a row does not carry takes the model's default when the writer inserts the row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar

import sqlalchemy as sa

from app.db.base import Base, utcnow
from app.inbound.decide import Decision, Route, author_verified
from app.inbound.html import html_to_text, sanitize_html
from app.inbound.model import InboundEmail
from app.inbound.rules import author_address
from app.models import Attachment, Delivery, DeliveryStatus, Post, ProviderToken, RateCounter


@dataclass(frozen=True)
class PostRow:
    model: ClassVar[type[Base]] = Post

    id: uuid.UUID
    platform_id: str
    group_id: uuid.UUID
    integration_id: uuid.UUID
    dedupe_key: str
    author_email: str | None
    author_name: str | None
    author_verified: bool
    subject: str
    text: str | None
    html: str | None
    omitted_attachments: list[dict[str, Any]]  # the JSON column's value
    received_at: datetime
    created_at: datetime
    source: str = "email"


@dataclass(frozen=True)
class AttachmentRow:
    model: ClassVar[type[Base]] = Attachment

    id: uuid.UUID
    post_id: uuid.UUID
    platform_id: str
    position: int
    filename: str
    content_type: str
    size: int
    sha256: str
    inline: bool
    content_id: str | None


@dataclass(frozen=True)
class DeliveryRow:
    model: ClassVar[type[Base]] = Delivery

    id: uuid.UUID
    provider: str
    status: DeliveryStatus
    platform_id: str | None
    integration_id: uuid.UUID | None
    envelope_from: str | None
    envelope_to: str | None
    from_: str | None
    subject: str | None
    size_bytes: int
    message_id: str | None
    spf: str | None
    dkim: str | None
    dedupe_key: str | None
    received_at: datetime
    reason: str | None = None
    post_id: uuid.UUID | None = None
    error: str | None = None
    content_sha256: str | None = None
    address: str | None = None  # the integration's address it came to


@dataclass(frozen=True)
class TokenRow:
    model: ClassVar[type[Base]] = ProviderToken

    provider: str
    token: str
    delivery_id: uuid.UUID | None
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class CounterRow:
    model: ClassVar[type[Base]] = RateCounter

    integration_id: uuid.UUID
    window_seconds: int
    window_start: int
    count: int = 1


Row = PostRow | AttachmentRow | DeliveryRow | TokenRow | CounterRow


def table(row_type: type[Row]) -> sa.Table:
    table: sa.Table = row_type.model.__table__  # type: ignore[assignment]
    return table


_COLUMN_KEYS: dict[type[Any], tuple[tuple[str, str], ...]] = {}


def column_keys(row_type: type[Any]) -> tuple[tuple[str, str], ...]:
    """``(field, column key)`` of each field of the row type, from the model's mapper."""
    keys = _COLUMN_KEYS.get(row_type)
    if keys is None:
        attributes = sa.inspect(row_type.model).column_attrs
        keys = tuple((f.name, attributes[f.name].columns[0].key) for f in fields(row_type))
        _COLUMN_KEYS[row_type] = keys
    return keys


def columns(row: Row) -> dict[str, Any]:
    """The row's values by column key, ready for an insert built from its model's table."""
    return {key: getattr(row, name) for name, key in column_keys(type(row))}


# --- from a mail ---------------------------------------------------------------------------------


def delivery_row(
    email: InboundEmail,
    key: str | None,
    *,
    status: DeliveryStatus,
    platform_id: str | None = None,
    integration_id: uuid.UUID | None = None,
    **values: Any,
) -> DeliveryRow:
    """A delivery of the mail (``values``: reason, post_id, error, content_sha256, id)."""
    return DeliveryRow(
        id=values.pop("id", None) or uuid.uuid4(),
        provider=email.provider,
        status=status,
        platform_id=platform_id,
        integration_id=integration_id,
        envelope_from=email.envelope_from,
        envelope_to=", ".join(email.recipients)[:998] or None,
        from_=email.from_address,
        subject=email.subject,
        size_bytes=email.size_bytes,
        message_id=(email.message_id or "")[:998] or None,
        spf=(email.spf or "")[:32] or None,
        dkim=(email.dkim or "")[:200] or None,
        dedupe_key=key,
        received_at=utcnow(),
        **values,
    )


# What a delivery records of the mail itself (a duplicate row may repeat the first one's).
DESCRIBED = (
    *("envelope_from", "envelope_to", "from_", "subject", "size_bytes", "message_id"),
    *("spf", "dkim", "address"),
)


def post_row(
    email: InboundEmail,
    key: str,
    route: Route,
    decision: Decision,
    rendered: tuple[str | None, str | None],
) -> PostRow:
    """The post of a mail ``decision`` posts to ``route``'s group."""
    if route.group_id is None:
        raise RuntimeError("a live integration has no group")
    html, text = rendered
    now = utcnow()
    omitted = [*(asdict(o) for o in email.omitted), *(asdict(o) for o in decision.omitted)]
    return PostRow(
        id=uuid.uuid4(),
        platform_id=route.platform_id,
        group_id=route.group_id,
        integration_id=route.id,
        dedupe_key=key,
        author_email=author_address(email),
        author_name=email.from_name,
        author_verified=author_verified(email),
        subject=email.subject,
        text=text,
        html=html,
        omitted_attachments=omitted,
        received_at=now,
        created_at=now,
    )


def attachment_rows(email: InboundEmail, post: PostRow, limit: int) -> list[AttachmentRow]:
    """The stored attachments of the post, in the mail's order (oversized ones omitted)."""
    kept = [a for a in email.attachments if a.kept and a.size <= limit and a.sha256]
    return [
        AttachmentRow(
            id=uuid.uuid4(),
            post_id=post.id,
            platform_id=post.platform_id,
            position=position,
            filename=attachment.filename,
            content_type=attachment.content_type,
            size=attachment.size,
            sha256=attachment.sha256 or "",
            inline=attachment.inline,
            content_id=attachment.content_id,
        )
        for position, attachment in enumerate(kept)
    ]


# HTML up to this size is sanitised on the event loop (about a millisecond); larger, in a thread.
INLINE_HTML_CHARS = 32_768


async def _off_loop_if_large(work: Callable[[str], str], html: str) -> str:
    if len(html) <= INLINE_HTML_CHARS:
        return work(html)
    return await asyncio.to_thread(work, html)


async def rendered(email: InboundEmail) -> tuple[str | None, str | None]:
    """The post's HTML (sanitised) and text (rendered from that HTML when the mail has none)."""
    html = await _off_loop_if_large(sanitize_html, email.html) if email.html else None
    if email.text is not None:
        return html, email.text
    return html, await _off_loop_if_large(html_to_text, html) if html else None
