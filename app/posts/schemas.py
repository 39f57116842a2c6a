from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict

from app.models import Service
from app.schemas import ReadModel


class PostAuthor(ReadModel):
    email: str | None
    """The sender's address (the From header)."""
    name: str | None
    """The sender's display name, when the From header has one."""
    verified: bool
    """True only when the provider reported DKIM pass for the From domain, or an aligned SPF
    pass."""


class AttachmentRead(ReadModel):
    id: uuid.UUID
    """The attachment's id."""
    filename: str
    """Display name (paths and control characters removed)."""
    content_type: str
    """Media type as the mail declared it."""
    size: int
    """Size in bytes."""
    sha256: str
    """Hex SHA-256 of the bytes (also the download's ETag)."""
    inline: bool
    """Whether the HTML shows it (`cid:` reference)."""
    content_id: str | None
    """Content-ID of an inline part."""
    url: str
    """Download URL with a short-lived signature: usable without the Bearer header."""


class OmittedAttachment(ReadModel):
    filename: str
    """The file left out."""
    size: int | None
    """Its size in bytes; null when the mail does not say (a file given by reference)."""
    reason: Literal["too_large", "external_body", "not_fetched"]
    """Why: `too_large` (over the attachment limit, with `oversize_attachments: drop`);
    `external_body` (a `message/external-body` part: the mail only points to the file);
    `not_fetched` (the provider gave the file as a download URL). The service never fetches
    a file from elsewhere."""


POST_EXAMPLE: dict[str, Any] = {
    "id": "3f0c2a9e-8a34-4d5e-9a57-0f1d1c4b2a10",
    "group_id": "911a1c35-9e0d-4ca7-91e0-dbae774dd041",
    "integration_id": "6c4be14f-9746-4e1a-968f-3db8f987bb20",
    "source": "email",
    "author": {"email": "news@example.org", "name": "Weekly News", "verified": True},
    "subject": "This week",
    "text": "Hello!",
    "html": "<p>Hello!</p>",
    "attachments": [
        {
            "id": "0b7d5c1e-2f43-4a8b-9c6d-1e2f3a4b5c6d",
            "filename": "report.pdf",
            "content_type": "application/pdf",
            "size": 48213,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "inline": False,
            "content_id": None,
            "url": "/v1/attachments/0b7d5c1e-2f43-4a8b-9c6d-1e2f3a4b5c6d/content"
            "?expires=1764961600&sig=4e1f0c",
        }
    ],
    "omitted_attachments": [],
    "received_at": "2026-11-28T19:07:01.000Z",
    "created_at": "2026-11-28T19:07:01.000Z",
}


class PostRead(ReadModel):
    model_config = ConfigDict(json_schema_extra={"examples": [POST_EXAMPLE]})

    id: uuid.UUID
    """The post's id."""
    group_id: uuid.UUID
    """The group it is in."""
    integration_id: uuid.UUID
    """The integration the mail came through."""
    source: Service
    """Always `email` (the front end draws a mail icon)."""
    author: PostAuthor
    """Who sent the mail."""
    subject: str
    """The mail's subject (plain text)."""
    text: str | None
    """The text body."""
    html: str | None
    """The HTML body, sanitised; `cid:` images point at the attachments' signed URLs."""
    attachments: list[AttachmentRead]
    """The mail's attachments."""
    omitted_attachments: list[OmittedAttachment]
    """Files left out of the post, and why."""
    received_at: datetime
    """When the mail arrived."""
    created_at: datetime
    """When the post was made (the feed's order)."""
