from __future__ import annotations

import html as html_lib
import re
import uuid
from urllib.parse import unquote

from sqlalchemy.ext.asyncio import AsyncSession

from app.api.security import Principal
from app.config import Settings
from app.db.repository import PageResult
from app.errors import Forbidden, NotFound
from app.events.emit import emit, event
from app.events.render import render_pending
from app.groups.service import GroupAccess, GroupService
from app.models import Attachment, EventType, Post, Service
from app.posts import signing
from app.posts.repository import AttachmentRepository, PostRepository
from app.posts.schemas import AttachmentRead, OmittedAttachment, PostAuthor, PostRead

# ``src="cid:X"`` in sanitised HTML. nh3 writes every attribute value double-quoted, with a ``"``
# inside it as ``&quot;``, so a literal ``src="`` after a space starts an attribute: it can never be
# text inside another attribute's value (``alt="src='cid:x' onerror=…"`` must stay one value).
_CID_SRC = re.compile(r'(\ssrc=)"cid:([^"]*)"', re.IGNORECASE)


def _content_id_key(content_id: str) -> str:
    """``<part1@example.com>`` and ``cid:part1%40example.com`` both name ``part1@example.com``."""
    return unquote(content_id).strip().removeprefix("<").removesuffix(">").strip()


def rewrite_cid(html: str, urls: dict[str, str]) -> str:
    """Point ``src="cid:…"`` at the attachment URLs; unknown references are left as they are."""
    if not urls:
        return html
    folded = {key.casefold(): url for key, url in urls.items()}

    def replace(match: re.Match[str]) -> str:
        key = _content_id_key(html_lib.unescape(match[2]))
        url = urls.get(key) or folded.get(key.casefold())
        if url is None:
            return match[0]
        return f'{match[1]}"{html_lib.escape(url, quote=True)}"'

    return _CID_SRC.sub(replace, html)


class PostService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.posts = PostRepository(session)
        self.attachments = AttachmentRepository(session)
        self.groups = GroupService(session)
        self.signing_keys = signing.url_signing_keys(settings)

    async def _access(self, user: Principal, group_id: uuid.UUID, what: str) -> GroupAccess:
        try:
            return await self.groups.access(user, group_id)
        except NotFound:
            raise NotFound(f"No such {what}.") from None

    async def list(
        self, user: Principal, group_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> PageResult[Post]:
        """A group's posts, newest first; 404 for a group the caller cannot see."""
        group = (await self.groups.access(user, group_id)).group
        stmt = self.posts.in_group_stmt(user.platform_id, group.id)
        return await self.posts.page(stmt, limit=limit, cursor=cursor)

    async def get(self, user: Principal, post_id: uuid.UUID) -> Post:
        post = await self.posts.get(user.platform_id, post_id)
        if post is None:
            raise NotFound("No such post.")
        await self._access(user, post.group_id, "post")
        return post

    async def delete(self, user: Principal, post_id: uuid.UUID) -> None:
        """Delete a post and its attachment rows; the blobs stay for the cleanup command."""
        post = await self.posts.get(user.platform_id, post_id)
        if post is None:
            raise NotFound("No such post.")
        if not (await self._access(user, post.group_id, "post")).can_manage:
            raise Forbidden("Only platform admins and the group's managers may delete posts.")
        await render_pending(self.session, self.read, Post.id == post.id)
        deleted = {"id": str(post.id), "group_id": str(post.group_id)}
        deleted["integration_id"] = str(post.integration_id)
        await emit(
            self.session,
            [
                event(
                    EventType.post_deleted,
                    post.platform_id,
                    deleted,
                    post_id=post.id,
                    integration_id=post.integration_id,
                )
            ],
        )
        await self.posts.delete(post)

    async def signed_attachment(
        self, attachment_id: uuid.UUID, expires: int, sig: str
    ) -> Attachment | None:
        """The attachment when ``sig`` signs it (for its platform) and has not expired."""
        found = await self.attachments.get_with_post(attachment_id)
        if found is None:
            return None
        attachment, platform_id, _ = found
        if not signing.verify(platform_id, attachment_id, expires, sig, self.signing_keys):
            return None
        return attachment

    async def attachment(self, user: Principal, attachment_id: uuid.UUID) -> Attachment:
        """An attachment of a post the user may see."""
        found = await self.attachments.get_with_post(attachment_id)
        if found is None:
            raise NotFound("No such attachment.")
        attachment, platform_id, group_id = found
        if platform_id != user.platform_id:
            raise NotFound("No such attachment.")
        await self._access(user, group_id, "attachment")
        return attachment

    def url(self, attachment: Attachment) -> str:
        path = signing.signed_path(attachment.platform_id, attachment.id, self.signing_keys[0])
        base = self.settings.public_base_url
        return base.rstrip("/") + path if base else path

    def read(self, post: Post) -> PostRead:
        """The post as readers get it: signed attachment URLs, ``cid:`` images pointed at them."""
        attachments = [
            AttachmentRead(
                id=a.id,
                filename=a.filename,
                content_type=a.content_type,
                size=a.size,
                sha256=a.sha256,
                inline=a.inline,
                content_id=a.content_id,
                url=self.url(a),
            )
            for a in post.attachments
        ]
        urls = {
            _content_id_key(a.content_id): a.url
            for a in reversed(attachments)  # the first attachment wins a repeated Content-ID
            if a.content_id
        }
        return PostRead(
            id=post.id,
            group_id=post.group_id,
            integration_id=post.integration_id,
            source=Service(post.source),
            author=PostAuthor(
                email=post.author_email, name=post.author_name, verified=post.author_verified
            ),
            subject=post.subject,
            text=post.text,
            html=rewrite_cid(post.html, urls) if post.html else post.html,
            attachments=attachments,
            omitted_attachments=[
                OmittedAttachment.model_validate(o) for o in post.omitted_attachments or []
            ],
            received_at=post.received_at,
            created_at=post.created_at,
        )
