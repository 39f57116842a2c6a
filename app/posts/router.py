from __future__ import annotations

import logging
import re
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from app.api.deps import CurrentUser, SessionDep, SettingsDep, UserCredentials, current_user
from app.api.pagination import Page, Pagination
from app.api.problems import responses
from app.blobs.store import BlobStore, BlobStoreUnavailable
from app.config import Settings
from app.errors import NotFound, Unauthenticated, Unavailable
from app.models import Attachment
from app.posts.schemas import PostRead
from app.posts.service import PostService

logger = logging.getLogger("mailslot.posts")

# Content is addressed by its SHA-256, so it never changes under a URL; how long a browser may
# keep it is bounded by the authorisation instead (and, for a signed URL, by its expiry).
CACHE_MAX_AGE_SECONDS = 900
CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox"

# Types a browser only displays or hands to a viewer: nothing here runs script in our origin.
# Anything else (text/html, image/svg+xml, application/xhtml+xml, text/xml, application/xml,
# JavaScript, CSS, PDF-likes such as PostScript, unknown types) is served as a download of
# application/octet-stream.
SAFE_CONTENT_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "image/heic",
        "image/heif",
        "image/tiff",
        "application/pdf",
        "text/plain",
        "text/csv",
        "text/calendar",
        "audio/mpeg",
        "audio/mp4",
        "audio/aac",
        "audio/ogg",
        "audio/opus",
        "audio/wav",
        "audio/x-wav",
        "audio/webm",
        "audio/flac",
        "video/mp4",
        "video/mpeg",
        "video/ogg",
        "video/webm",
        "video/quicktime",
        "application/zip",
        "application/gzip",
        "application/x-7z-compressed",
        "application/rtf",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        "application/octet-stream",
    }
)
FALLBACK_CONTENT_TYPE = "application/octet-stream"
_TEXT_TYPES = frozenset({"text/plain", "text/csv", "text/calendar"})
_CHARSET = re.compile(r"[a-z0-9][a-z0-9._:-]{0,39}")
_CHARSET_PARAM = re.compile(r""";\s*charset\s*=\s*"?([^";\s]*)"?""", re.IGNORECASE)
_NOT_TOKEN = re.compile(r"""[^\x20-\x7e]|["\\%;]""")


def safe_content_type(stored: str) -> str:
    """The stored type when it is inert (text keeps a plain charset), else octet-stream."""
    media_type = stored.split(";", 1)[0].strip().lower()
    if media_type not in SAFE_CONTENT_TYPES:
        return FALLBACK_CONTENT_TYPE
    if media_type in _TEXT_TYPES:
        match = _CHARSET_PARAM.search(stored)
        charset = match[1].lower() if match else ""
        if _CHARSET.fullmatch(charset) and charset not in {"utf-7", "utf7"}:
            return f"{media_type}; charset={charset}"
    return media_type


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII ``filename`` and the exact name in ``filename*`` (RFC 6266)."""
    name = "".join(c for c in filename if unicodedata.category(c)[0] != "C").strip()
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fallback = _NOT_TOKEN.sub("_", ascii_name).strip("_ ")
    if not fallback.strip("._ "):
        fallback = "attachment"
    elif fallback.startswith("."):  # a name with no ASCII left but its extension
        fallback = "attachment" + fallback
    encoded = quote(name or "attachment", safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


async def post_service(session: SessionDep, settings: SettingsDep) -> PostService:
    return PostService(session, settings)


async def blob_store(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


Service = Annotated[PostService, Depends(post_service)]
Blobs = Annotated[BlobStore, Depends(blob_store)]
Expires = Annotated[
    int | None, Query(description="Expiry of a signed URL (Unix time), from an attachment's url.")
]
Signature = Annotated[
    str | None, Query(max_length=128, description="Signature of a signed URL (hex).")
]


async def authorised_attachment(
    attachment_id: uuid.UUID,
    service: Service,
    credentials: UserCredentials,
    settings: SettingsDep,
    session: SessionDep,
    expires: Expires = None,
    sig: Signature = None,
) -> tuple[Attachment, int]:
    """The attachment, for a valid signed URL or a Bearer user who may see its post.

    Also returns how long (seconds) a browser may keep it.
    """
    if expires is not None and sig:
        signed = await service.signed_attachment(attachment_id, expires, sig)
        if signed is not None:
            return signed, min(CACHE_MAX_AGE_SECONDS, max(0, expires - int(time.time())))
    if credentials is None:
        raise Unauthenticated("A valid signed URL or a Bearer token is required.")
    user = await current_user(credentials, settings, session)
    return await service.attachment(user, attachment_id), CACHE_MAX_AGE_SECONDS


AuthorisedAttachment = Annotated[tuple[Attachment, int], Depends(authorised_attachment)]

router = APIRouter(tags=["posts"], responses=responses(401))
attachments_router = APIRouter(
    prefix="/v1/attachments", tags=["attachments"], responses=responses(401)
)


@router.get("/v1/groups/{group_id}/posts", status_code=200, responses=responses(404, 422))
async def list_group_posts(
    group_id: uuid.UUID, user: CurrentUser, service: Service, page: Pagination
) -> Page[PostRead]:
    """A group's posts, newest first by `(created_at, id)`; attachment URLs are signed."""
    result = await service.list(user, group_id, limit=page.limit, cursor=page.cursor)
    return Page(items=[service.read(p) for p in result.items], next_cursor=result.next_cursor)


@router.get("/v1/posts/{post_id}", status_code=200, responses=responses(404, 422))
async def get_post(post_id: uuid.UUID, user: CurrentUser, service: Service) -> PostRead:
    """A post; `cid:` images in its HTML point at the attachments' signed URLs."""
    return service.read(await service.get(user, post_id))


@router.delete("/v1/posts/{post_id}", status_code=204, responses=responses(403, 404, 422))
async def delete_post(post_id: uuid.UUID, user: CurrentUser, service: Service) -> Response:
    """Delete a post (platform admins, the group's managers) with its attachments."""
    await service.delete(user, post_id)
    return Response(status_code=204)


def _header(description: str, example: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string", "examples": [example]}}


_ETAG = _header("The SHA-256 of the bytes, quoted: send it back in `If-None-Match`.", '"9f86d0"')
_CACHE_CONTROL = _header(
    "`private`, for at most 15 minutes (and no later than a signed URL's expiry).",
    "private, max-age=900",
)
_NOSNIFF = _header("Always `nosniff`.", "nosniff")
_CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The attachment's bytes, served as a download: its stored type when "
        "inert (text with a plain charset), else `application/octet-stream`.",
        "headers": {
            "Content-Disposition": _header(
                "`attachment`, with an ASCII `filename` and the exact name in `filename*` "
                "(RFC 6266).",
                "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf",
            ),
            "ETag": _ETAG,
            "Cache-Control": _CACHE_CONTROL,
            "X-Content-Type-Options": _NOSNIFF,
            "Content-Security-Policy": _header(
                "Nothing in the file may run or load anything.", CONTENT_SECURITY_POLICY
            ),
            "Content-Length": {
                "description": "Size in bytes.",
                "schema": {"type": "integer", "examples": [48213]},
            },
        },
        "content": {
            media_type: {
                "schema": {"type": "string", "format": "binary"},
                "example": "%PDF-1.4" if media_type == "application/pdf" else "...",
            }
            for media_type in [FALLBACK_CONTENT_TYPE, *sorted(SAFE_CONTENT_TYPES)]
        },
    },
    304: {
        "description": "Not modified (`If-None-Match` names the current ETag).",
        "headers": {
            "ETag": _ETAG,
            "Cache-Control": _CACHE_CONTROL,
            "X-Content-Type-Options": _NOSNIFF,
        },
    },
    **responses(404, 422, 503),
}
_GET_CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    307: {
        "description": "Only when the service runs with `ATTACHMENT_DOWNLOADS=redirect` (an S3 "
        "blob store): the bytes are at `Location`, a presigned URL of the object store valid "
        "for `ATTACHMENT_REDIRECT_SECONDS`, which answers with the same `Content-Type`, "
        "`Content-Disposition` and `Cache-Control` as a 200 here.",
        "headers": {
            "Location": _header(
                "A short-lived URL of the object store.",
                "https://bucket.s3.example/attachments/9f86d0…?X-Amz-Signature=…",
            ),
            "ETag": _ETAG,
            "Cache-Control": _header("Always `no-store`.", "no-store"),
            "X-Content-Type-Options": _NOSNIFF,
        },
    },
    **_CONTENT_RESPONSES,
}
# The Bearer token is one way in; a signed URL (the query parameters) is the other.
_SIGNED_OR_BEARER: dict[str, Any] = {
    "security": [{}],
    "parameters": [
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "An ETag seen before: 304 while the content is the same.",
            "schema": {"type": "string"},
            "example": '"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"',
        }
    ],
}


def _headers(attachment: Attachment, size: int, max_age: int) -> dict[str, str]:
    return {
        "Content-Type": safe_content_type(attachment.content_type),
        "Content-Length": str(size),
        "Content-Disposition": content_disposition(attachment.filename),
        "ETag": f'"{attachment.sha256}"',
        "Cache-Control": f"private, max-age={max_age}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    }


async def _content_size(attachment: Attachment, blobs: BlobStore) -> int:
    try:
        size = await blobs.size(attachment.sha256)
    except BlobStoreUnavailable as exc:
        logger.warning("the blob store does not answer: %s", exc)
        raise Unavailable("The attachment store does not answer; try again later.") from exc
    if size is None:
        logger.error(
            "blob %s of attachment %s is missing from the store", attachment.sha256, attachment.id
        )
        raise NotFound("The attachment's content is missing.")
    return size


async def _redirect(
    attachment: Attachment, blobs: BlobStore, settings: Settings, max_age: int
) -> Response | None:
    """With ``ATTACHMENT_DOWNLOADS=redirect``: a redirect to a presigned URL of the store that
    answers with this API's content headers; None to stream (the setting off, a local store)."""
    if settings.attachment_downloads != "redirect":
        return None
    headers = _headers(attachment, 0, max_age)
    try:
        url = await blobs.presigned_url(
            attachment.sha256,
            content_type=headers["Content-Type"],
            content_disposition=headers["Content-Disposition"],
            cache_control=headers["Cache-Control"],
            expires_in=settings.attachment_redirect_seconds,
        )
    except BlobStoreUnavailable as exc:
        raise Unavailable("The attachment store does not answer; try again later.") from exc
    if url is None:
        return None
    return RedirectResponse(
        url,
        status_code=307,
        headers={
            "ETag": headers["ETag"],
            "Cache-Control": "no-store",  # the URL expires; the next visit asks again
            "X-Content-Type-Options": "nosniff",
        },
    )


def _not_modified(request: Request, attachment: Attachment, max_age: int) -> Response | None:
    etag = f'"{attachment.sha256}"'
    if not _etag_matches(request.headers.get("if-none-match"), etag):
        return None
    return Response(
        status_code=304,
        headers={
            "ETag": etag,
            "Cache-Control": f"private, max-age={max_age}",
            "X-Content-Type-Options": "nosniff",
        },
    )


@attachments_router.get(
    "/{attachment_id}/content",
    status_code=200,
    response_class=StreamingResponse,
    responses=_GET_CONTENT_RESPONSES,
    openapi_extra=_SIGNED_OR_BEARER,
)
async def get_attachment_content(
    request: Request, found: AuthorisedAttachment, blobs: Blobs, settings: SettingsDep
) -> Response:
    """Download an attachment, with a Bearer token or through its signed `url` (no header).

    Types that a browser could run are served as `application/octet-stream`.
    """
    attachment, max_age = found
    if (not_modified := _not_modified(request, attachment, max_age)) is not None:
        return not_modified
    size = await _content_size(attachment, blobs)
    if (redirect := await _redirect(attachment, blobs, settings, max_age)) is not None:
        return redirect
    chunks = blobs.read(attachment.sha256)
    try:
        first = await anext(chunks, b"")
    except FileNotFoundError:
        logger.error("blob %s of attachment %s vanished", attachment.sha256, attachment.id)
        raise NotFound("The attachment's content is missing.") from None
    except BlobStoreUnavailable as exc:
        logger.warning("the blob store does not answer: %s", exc)
        raise Unavailable("The attachment store does not answer; try again later.") from exc

    async def body() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(body(), headers=_headers(attachment, size, max_age))


@attachments_router.head(
    "/{attachment_id}/content",
    status_code=200,
    response_class=Response,
    responses=_CONTENT_RESPONSES,
    openapi_extra=_SIGNED_OR_BEARER,
)
async def head_attachment_content(
    request: Request, found: AuthorisedAttachment, blobs: Blobs
) -> Response:
    """The headers of `get_attachment_content`, without the bytes (never a redirect: a
    presigned URL is signed for GET only)."""
    attachment, max_age = found
    if (not_modified := _not_modified(request, attachment, max_age)) is not None:
        return not_modified
    size = await _content_size(attachment, blobs)
    return Response(status_code=200, headers=_headers(attachment, size, max_age))
