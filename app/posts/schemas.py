from __future__ import annotations

import uuid
from datetime import datetime

from app.models import Service
from app.schemas import ReadModel


class PostAuthor(ReadModel):
    email: str | None
    name: str | None
    verified: bool


class AttachmentRead(ReadModel):
    id: uuid.UUID
    filename: str
    content_type: str
    size: int
    sha256: str
    inline: bool
    content_id: str | None
    url: str


class OmittedAttachment(ReadModel):
    filename: str
    size: int
    reason: str


class PostRead(ReadModel):
    id: uuid.UUID
    group_id: uuid.UUID
    integration_id: uuid.UUID
    source: Service
    author: PostAuthor
    subject: str
    text: str | None
    html: str | None
    attachments: list[AttachmentRead]
    omitted_attachments: list[OmittedAttachment]
    received_at: datetime
    created_at: datetime
