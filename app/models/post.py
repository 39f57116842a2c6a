from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, CreatedAt, UTCDateTime, UUIDPrimaryKey


class Post(UUIDPrimaryKey, CreatedAt, Base):
    """A post made from one email in one group. ``dedupe_key`` makes it exactly once."""

    __tablename__ = "posts"
    __table_args__ = (
        sa.UniqueConstraint("integration_id", "dedupe_key"),
        sa.Index("ix_posts_group_created", "group_id", "created_at", "id"),
    )

    # The integration's platform, copied for tenant scoping. No foreign key of its own: the
    # integration's key (below) already ties the post to that platform, and a second key would
    # lock one of a few hot platform rows for every mail (docs/decisions.md).
    platform_id: Mapped[str] = mapped_column(sa.String(64))
    group_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("groups.id", ondelete="CASCADE"))
    integration_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("integrations.id"))
    dedupe_key: Mapped[str] = mapped_column(sa.String(128))
    source: Mapped[str] = mapped_column(sa.String(16), default="email")
    author_email: Mapped[str | None] = mapped_column(sa.String(320))
    author_name: Mapped[str | None] = mapped_column(sa.String(400))
    author_verified: Mapped[bool] = mapped_column(default=False)
    subject: Mapped[str] = mapped_column(sa.Text, default="")
    text: Mapped[str | None] = mapped_column(sa.Text)
    html: Mapped[str | None] = mapped_column(sa.Text)
    omitted_attachments: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, default=list)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)

    attachments: Mapped[list[Attachment]] = relationship(
        lazy="raise", order_by="Attachment.position", cascade="all, delete-orphan"
    )


class Attachment(UUIDPrimaryKey, Base):
    """A file of a post; its bytes live in the blob store under ``sha256``."""

    __tablename__ = "attachments"
    __table_args__ = (sa.Index("ix_attachments_sha256", "sha256"),)

    post_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("posts.id", ondelete="CASCADE"), index=True
    )
    platform_id: Mapped[str] = mapped_column(sa.String(64))  # its post's (as the post's own)
    position: Mapped[int] = mapped_column(default=0)
    filename: Mapped[str] = mapped_column(sa.String(400))
    content_type: Mapped[str] = mapped_column(sa.String(200))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    inline: Mapped[bool] = mapped_column(default=False)
    content_id: Mapped[str | None] = mapped_column(sa.String(400))
