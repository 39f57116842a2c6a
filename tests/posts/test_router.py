"""Posts and attachment downloads over HTTP: order, paging, visibility, deletion, safe serving."""

from __future__ import annotations

import hashlib
import html
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from app.models import Attachment, Post
from app.posts import signing
from app.posts.router import content_disposition, safe_content_type
from tests.auth import bearer
from tests.conftest import make_settings
from tests.factories import World

P, FOREIGN = "p1", "p2"
ROOT = bearer("root", P, "admin")
MANAGER = bearer("mia", P, "member")
MEMBER = bearer("mo", P, "member")
OUTSIDER = bearer("olly", P, "member")  # a member of another group only
FOREIGN_ADMIN = bearer("root", FOREIGN, "admin")


@dataclass
class File:
    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass
class Scene:
    app: FastAPI
    group: uuid.UUID
    integration: uuid.UUID
    foreign_group: uuid.UUID
    foreign_integration: uuid.UUID
    posts: list[uuid.UUID] = field(default_factory=list)


async def add_posts(
    app: FastAPI,
    count: int,
    *,
    group: uuid.UUID,
    integration: uuid.UUID,
    platform_id: str = P,
    created_at: Sequence[datetime] | None = None,
    html_body: str | None = None,
    files: Sequence[File] = (),
    omitted: Sequence[dict[str, Any]] = (),
) -> list[Post]:
    """Insert posts (and their attachments, with the bytes in the blob store) in one commit."""
    stored = [await app.state.blobs.put_bytes(f.data) for f in files]
    now = datetime.now(UTC)
    posts = [
        Post(
            platform_id=platform_id,
            group_id=group,
            integration_id=integration,
            dedupe_key=uuid.uuid4().hex,
            source="email",
            author_email="ann@example.com",
            author_name="Ann Example",
            author_verified=True,
            subject=f"Post {i}",
            text=f"Text {i}",
            html=html_body,
            omitted_attachments=list(omitted),
            received_at=now,
            created_at=created_at[i] if created_at else now,
            attachments=[
                Attachment(
                    platform_id=platform_id,
                    position=position,
                    filename=f.filename,
                    content_type=f.content_type,
                    size=len(f.data),
                    sha256=sha,
                    inline=f.inline,
                    content_id=f.content_id,
                )
                for position, (f, sha) in enumerate(zip(files, stored, strict=True))
            ],
        )
        for i in range(count)
    ]
    async with app.state.sessionmaker.begin() as session:
        session.add_all(posts)
    return posts


async def add_post(app: FastAPI, scene: Scene, **kwargs: Any) -> Post:
    kwargs.setdefault("group", scene.group)
    kwargs.setdefault("integration", scene.integration)
    return (await add_posts(app, 1, **kwargs))[0]


@pytest.fixture
async def scene(app: FastAPI, world: World) -> Scene:
    await world.platform(P)
    await world.platform(FOREIGN)
    group = await world.group(P, "Target")
    other = await world.group(P, "Other")
    await world.member(group, "mia", "manager")
    await world.member(group, "mo", "member")
    await world.member(other, "olly", "member")
    integration = await world.integration(group)
    foreign_group = await world.group(FOREIGN, "Elsewhere")
    foreign_integration = await world.integration(foreign_group, platform_id=FOREIGN)
    return Scene(
        app,
        uuid.UUID(group),
        uuid.UUID(integration["id"]),
        uuid.UUID(foreign_group),
        uuid.UUID(foreign_integration["id"]),
    )


def assert_problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


class TestListGroupPosts:
    async def test_walk_returns_every_post_once_newest_first(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        # 60 posts share one created_at (the id breaks the tie); 60 others have their own.
        moments = [base] * 60 + [base + timedelta(seconds=i) for i in range(-30, 30)]
        posts = await add_posts(
            scene.app, 120, group=scene.group, integration=scene.integration, created_at=moments
        )
        expected = [p.id for p in sorted(posts, key=lambda p: (p.created_at, p.id), reverse=True)]

        seen: list[uuid.UUID] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 50} | ({"cursor": cursor} if cursor else {})
            r = await client.get(f"/v1/groups/{scene.group}/posts", params=params, headers=MEMBER)
            assert r.status_code == 200, r.text
            body = r.json()
            pages += 1
            seen += [uuid.UUID(item["id"]) for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == expected
        assert len(set(seen)) == 120

    async def test_a_post_added_after_the_first_page_does_not_shift_later_pages(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        posts = await add_posts(scene.app, 5, group=scene.group, integration=scene.integration)
        r = await client.get(f"/v1/groups/{scene.group}/posts?limit=2", headers=ROOT)
        first = [item["id"] for item in r.json()["items"]]
        await add_post(scene.app, scene)
        rest: list[str] = []
        cursor = r.json()["next_cursor"]
        while cursor:
            r = await client.get(
                f"/v1/groups/{scene.group}/posts", params={"cursor": cursor}, headers=ROOT
            )
            rest += [item["id"] for item in r.json()["items"]]
            cursor = r.json()["next_cursor"]
        assert sorted(first + rest) == sorted(str(p.id) for p in posts)

    async def test_non_member_and_other_platform_get_404(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        await add_post(scene.app, scene)
        assert_problem(
            await client.get(f"/v1/groups/{scene.group}/posts", headers=OUTSIDER), 404, "not_found"
        )
        assert_problem(
            await client.get(f"/v1/groups/{scene.group}/posts", headers=FOREIGN_ADMIN),
            404,
            "not_found",
        )

    async def test_manager_and_admin_see_the_posts(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene)
        for headers in (MANAGER, ROOT):
            r = await client.get(f"/v1/groups/{scene.group}/posts", headers=headers)
            assert r.status_code == 200, r.text
            assert [item["id"] for item in r.json()["items"]] == [str(post.id)]

    async def test_an_empty_group_has_an_empty_last_page(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        r = await client.get(f"/v1/groups/{scene.group}/posts", headers=MEMBER)
        assert r.json() == {"items": [], "next_cursor": None}

    async def test_a_forged_cursor_is_refused(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        r = await client.get(
            f"/v1/groups/{scene.group}/posts", params={"cursor": "not-a-cursor"}, headers=ROOT
        )
        assert_problem(r, 422, "invalid_cursor")


class TestGetPost:
    async def test_post_has_exactly_the_contract_fields(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(
            scene.app,
            scene,
            files=[File("photo.png", "image/png", PNG)],
            omitted=[{"filename": "huge.iso", "size": 9_000_000, "reason": "too_large"}],
        )
        r = await client.get(f"/v1/posts/{post.id}", headers=MEMBER)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {
            "id",
            "group_id",
            "integration_id",
            "source",
            "author",
            "subject",
            "text",
            "html",
            "attachments",
            "omitted_attachments",
            "received_at",
            "created_at",
        }
        assert body["source"] == "email"
        assert body["group_id"] == str(scene.group)
        assert body["integration_id"] == str(scene.integration)
        assert body["author"] == {
            "email": "ann@example.com",
            "name": "Ann Example",
            "verified": True,
        }
        assert body["created_at"].endswith("Z")
        assert body["received_at"].endswith("Z")
        [attachment] = body["attachments"]
        assert set(attachment) == {
            "id",
            "filename",
            "content_type",
            "size",
            "sha256",
            "inline",
            "content_id",
            "url",
        }
        assert attachment["sha256"] == hashlib.sha256(PNG).hexdigest()
        assert attachment["size"] == len(PNG)
        assert attachment["url"].startswith(f"/v1/attachments/{attachment['id']}/content?expires=")
        assert body["omitted_attachments"] == [
            {"filename": "huge.iso", "size": 9_000_000, "reason": "too_large"}
        ]

    async def test_cid_images_point_at_signed_urls_while_the_stored_html_keeps_cid(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        stored_html = (
            '<p>Logo <img src="cid:logo@example.com" alt="logo"> and '
            '<img src="cid:unknown@example.com"></p>'
        )
        post = await add_post(
            scene.app,
            scene,
            html_body=stored_html,
            files=[File("logo.png", "image/png", PNG, "<logo@example.com>", inline=True)],
        )
        r = await client.get(f"/v1/posts/{post.id}", headers=MEMBER)
        body = r.json()
        url = body["attachments"][0]["url"]
        assert f'<img src="{html.escape(url)}" alt="logo">' in body["html"]
        assert 'src="cid:unknown@example.com"' in body["html"]  # no such part: left alone
        assert "cid:logo" not in body["html"]

        async with scene.app.state.sessionmaker() as session:
            assert await session.scalar(sa.select(Post.html).where(Post.id == post.id)) == (
                stored_html
            )
        image = await client.get(html.unescape(url))  # the rewritten src works, no Bearer
        assert image.status_code == 200
        assert image.content == PNG

    async def test_the_list_rewrites_cid_too(self, client: httpx.AsyncClient, scene: Scene) -> None:
        await add_post(
            scene.app,
            scene,
            html_body='<img src="cid:a%40b">',
            files=[File("a.png", "image/png", PNG, "a@b", inline=True)],
        )
        r = await client.get(f"/v1/groups/{scene.group}/posts", headers=MEMBER)
        [item] = r.json()["items"]
        assert item["html"] == f'<img src="{html.escape(item["attachments"][0]["url"])}">'

    async def test_non_member_and_other_platform_get_404(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene)
        foreign = await add_post(
            scene.app,
            scene,
            group=scene.foreign_group,
            integration=scene.foreign_integration,
            platform_id=FOREIGN,
        )
        assert_problem(await client.get(f"/v1/posts/{post.id}", headers=OUTSIDER), 404, "not_found")
        assert_problem(
            await client.get(f"/v1/posts/{post.id}", headers=FOREIGN_ADMIN), 404, "not_found"
        )
        assert_problem(await client.get(f"/v1/posts/{foreign.id}", headers=ROOT), 404, "not_found")
        assert_problem(
            await client.get(f"/v1/posts/{uuid.uuid4()}", headers=ROOT), 404, "not_found"
        )

    async def test_without_a_token_is_401(self, client: httpx.AsyncClient, scene: Scene) -> None:
        post = await add_post(scene.app, scene)
        r = await client.get(f"/v1/posts/{post.id}")
        assert_problem(r, 401, "unauthenticated")

    async def test_public_base_url_makes_urls_absolute(
        self, app: FastAPI, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene, files=[File("a.txt", "text/plain", b"hi")])
        settings = app.state.settings.model_copy(
            update={"public_base_url": "https://api.example.com/"}
        )
        other = create_app(settings)
        try:
            transport = httpx.ASGITransport(app=other)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                r = await c.get(f"/v1/posts/{post.id}", headers=MEMBER)
        finally:
            await other.state.engine.dispose()
        url = r.json()["attachments"][0]["url"]
        assert url.startswith("https://api.example.com/v1/attachments/")


class TestDeletePost:
    @pytest.mark.parametrize("headers", [ROOT, MANAGER], ids=["admin", "manager"])
    async def test_admin_and_manager_delete_then_it_is_gone(
        self, client: httpx.AsyncClient, scene: Scene, headers: dict[str, str]
    ) -> None:
        post = await add_post(scene.app, scene, files=[File("a.png", "image/png", PNG)])
        attachment_id = post.attachments[0].id
        r = await client.delete(f"/v1/posts/{post.id}", headers=headers)
        assert r.status_code == 204, r.text
        assert r.content == b""
        assert_problem(await client.get(f"/v1/posts/{post.id}", headers=ROOT), 404, "not_found")
        assert_problem(await client.delete(f"/v1/posts/{post.id}", headers=ROOT), 404, "not_found")
        async with scene.app.state.sessionmaker() as session:
            count = await session.scalar(
                sa.select(sa.func.count())
                .select_from(Attachment)
                .where(Attachment.post_id == post.id)
            )
        assert count == 0
        # The blob stays for the cleanup command; the attachment itself is gone.
        assert await scene.app.state.blobs.exists(hashlib.sha256(PNG).hexdigest())
        r = await client.get(f"/v1/attachments/{attachment_id}/content", headers=ROOT)
        assert_problem(r, 404, "not_found")

    async def test_member_who_sees_it_is_forbidden(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene)
        assert_problem(
            await client.delete(f"/v1/posts/{post.id}", headers=MEMBER), 403, "forbidden"
        )
        assert (await client.get(f"/v1/posts/{post.id}", headers=MEMBER)).status_code == 200

    async def test_those_who_cannot_see_it_get_404(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene)
        for headers in (OUTSIDER, FOREIGN_ADMIN):
            r = await client.delete(f"/v1/posts/{post.id}", headers=headers)
            assert_problem(r, 404, "not_found")
        assert (await client.get(f"/v1/posts/{post.id}", headers=ROOT)).status_code == 200


async def attachment_of(client: httpx.AsyncClient, post: Post, index: int = 0) -> dict[str, Any]:
    r = await client.get(f"/v1/posts/{post.id}", headers=ROOT)
    assert r.status_code == 200, r.text
    attachment: dict[str, Any] = r.json()["attachments"][index]
    return attachment


@pytest.mark.blob_stores
class TestAttachmentContent:
    async def test_download_is_byte_identical_with_safe_headers(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene, files=[File("photo.png", "image/png", PNG)])
        attachment = await attachment_of(client, post)
        r = await client.get(f"/v1/attachments/{attachment['id']}/content", headers=MEMBER)
        assert r.status_code == 200, r.text
        assert r.content == PNG
        sha = hashlib.sha256(PNG).hexdigest()
        assert r.headers["content-type"] == "image/png"
        assert r.headers["content-length"] == str(len(PNG))
        assert r.headers["etag"] == f'"{sha}"'
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"].startswith("private, max-age=")
        assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert r.headers["content-disposition"] == (
            "attachment; filename=\"photo.png\"; filename*=UTF-8''photo.png"
        )

    async def test_head_gives_the_headers_without_the_bytes(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene, files=[File("photo.png", "image/png", PNG)])
        attachment = await attachment_of(client, post)
        r = await client.head(f"/v1/attachments/{attachment['id']}/content", headers=MEMBER)
        assert r.status_code == 200
        assert r.content == b""
        assert r.headers["content-length"] == str(len(PNG))
        assert r.headers["etag"] == f'"{attachment["sha256"]}"'
        assert r.headers["content-type"] == "image/png"
        signed = await client.head(attachment["url"])
        assert signed.status_code == 200
        bad = await client.head(f"/v1/attachments/{attachment['id']}/content")
        assert bad.status_code == 401

    async def test_matching_if_none_match_answers_304(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene, files=[File("photo.png", "image/png", PNG)])
        attachment = await attachment_of(client, post)
        etag = f'"{attachment["sha256"]}"'
        path = f"/v1/attachments/{attachment['id']}/content"
        for value in (etag, f'"other", W/{etag}', "*"):
            r = await client.get(path, headers={**MEMBER, "If-None-Match": value})
            assert r.status_code == 304, value
            assert r.content == b""
            assert r.headers["etag"] == etag
        r = await client.get(path, headers={**MEMBER, "If-None-Match": '"other"'})
        assert r.status_code == 200
        # No 304 (and no ETag) before the caller is authenticated.
        r = await client.get(path, headers={"If-None-Match": etag})
        assert_problem(r, 401, "unauthenticated")

    @pytest.mark.parametrize(
        ("filename", "expected"),
        [
            (
                "Über résumé €.pdf",
                'attachment; filename="Uber resume .pdf"; '
                "filename*=UTF-8''%C3%9Cber%20r%C3%A9sum%C3%A9%20%E2%82%AC.pdf",
            ),
            (
                'say "hi"\\there.txt',
                'attachment; filename="say _hi__there.txt"; '
                "filename*=UTF-8''say%20%22hi%22%5Cthere.txt",
            ),
            (
                "日本語.txt",
                "attachment; filename=\"attachment.txt\"; filename*=UTF-8''"
                + quote("日本語.txt", safe=""),
            ),
        ],
    )
    async def test_content_disposition_encodes_any_name(
        self, client: httpx.AsyncClient, scene: Scene, filename: str, expected: str
    ) -> None:
        post = await add_post(scene.app, scene, files=[File(filename, "application/pdf", b"%PDF")])
        attachment = await attachment_of(client, post)
        r = await client.get(attachment["url"])
        assert r.status_code == 200
        assert r.headers["content-disposition"] == expected

    @pytest.mark.parametrize(
        "stored",
        [
            "text/html",
            "text/html; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/xml",
            "application/javascript",
            "text/css",
            "multipart/related",
            "not a type",
            "",
        ],
    )
    async def test_scriptable_types_are_served_as_octet_stream(
        self, client: httpx.AsyncClient, scene: Scene, stored: str
    ) -> None:
        data = b"<script>alert(document.domain)</script>"
        post = await add_post(scene.app, scene, files=[File("x.html", stored, data)])
        attachment = await attachment_of(client, post)
        assert attachment["content_type"] == stored  # the JSON tells what the mail said
        r = await client.get(attachment["url"])
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.content == data

    async def test_text_keeps_its_charset(self, client: httpx.AsyncClient, scene: Scene) -> None:
        post = await add_post(
            scene.app, scene, files=[File("a.txt", 'text/plain; charset="ISO-8859-1"', b"caf\xe9")]
        )
        attachment = await attachment_of(client, post)
        r = await client.get(attachment["url"])
        assert r.headers["content-type"] == "text/plain; charset=iso-8859-1"
        assert r.content == b"caf\xe9"

    async def test_signed_url_works_without_bearer(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene, files=[File("photo.png", "image/png", PNG)])
        attachment = await attachment_of(client, post)
        r = await client.get(attachment["url"])
        assert r.status_code == 200
        assert r.content == PNG
        max_age = int(r.headers["cache-control"].rsplit("=", 1)[1])
        assert 0 < max_age <= 900

    async def test_tampered_or_expired_signatures_are_401(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(
            scene.app,
            scene,
            files=[File("a.png", "image/png", PNG), File("b.txt", "text/plain", b"b")],
        )
        first = await attachment_of(client, post, 0)
        second = await attachment_of(client, post, 1)
        query = parse_qs(urlsplit(first["url"]).query)
        expires, sig = int(query["expires"][0]), query["sig"][0]
        path = f"/v1/attachments/{first['id']}/content"
        key = signing.url_signing_keys(scene.app.state.settings)[0]
        past = int(time.time()) - 10
        tampered = [
            {"expires": expires, "sig": ("0" if sig[0] != "0" else "1") + sig[1:]},
            {"expires": expires + 60, "sig": sig},
            {"expires": past, "sig": signing.sign(P, first["id"], past, key)},
            {"expires": expires, "sig": signing.sign(P, second["id"], expires, key)},
            # signed for another platform: the MAC names the tenant
            {"expires": expires, "sig": signing.sign(FOREIGN, first["id"], expires, key)},
            {"expires": expires, "sig": "é" * 10},
            {"expires": expires},
            {"sig": sig},
        ]
        for params in tampered:
            r = await client.get(path, params=params)
            assert_problem(r, 401, "unauthenticated")
            assert r.headers["www-authenticate"] == "Bearer"
        # A bad signature does not hide a valid Bearer token.
        r = await client.get(path, params=tampered[0], headers=MEMBER)
        assert r.status_code == 200

    async def test_bearer_users_who_cannot_see_the_post_get_404(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene, files=[File("a.png", "image/png", PNG)])
        attachment = await attachment_of(client, post)
        path = f"/v1/attachments/{attachment['id']}/content"
        for headers in (OUTSIDER, FOREIGN_ADMIN):
            assert_problem(await client.get(path, headers=headers), 404, "not_found")
        assert_problem(
            await client.get(f"/v1/attachments/{uuid.uuid4()}/content", headers=ROOT),
            404,
            "not_found",
        )
        assert_problem(await client.get(path), 401, "unauthenticated")

    async def test_a_missing_blob_is_a_404_problem(
        self, client: httpx.AsyncClient, scene: Scene, caplog: pytest.LogCaptureFixture
    ) -> None:
        data = b"soon gone"
        post = await add_post(scene.app, scene, files=[File("gone.txt", "text/plain", data)])
        await scene.app.state.blobs.delete(hashlib.sha256(data).hexdigest())
        attachment = await attachment_of(client, post)
        r = await client.get(attachment["url"])
        assert_problem(r, 404, "not_found")
        head = await client.head(attachment["url"])
        assert head.status_code == 404
        assert head.headers["content-type"] == "application/problem+json"
        assert "missing" in caplog.text

    async def test_an_empty_attachment_downloads(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene, files=[File("empty.txt", "text/plain", b"")])
        attachment = await attachment_of(client, post)
        r = await client.get(attachment["url"])
        assert r.status_code == 200
        assert r.content == b""
        assert r.headers["content-length"] == "0"


class TestRedirectToTheStore:
    """``ATTACHMENT_DOWNLOADS=redirect`` (S3): the bytes come from a presigned URL of the store,
    with this API's content headers; authorisation, HEAD and 304 are still answered here."""

    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path) -> Settings:
        return make_settings(
            database_url,
            tmp_path / "blobs",
            store="s3",
            attachment_downloads="redirect",
            attachment_redirect_seconds=120,
        )

    async def test_a_download_is_a_short_lived_redirect_serving_the_same_headers(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        svg = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>"
        post = await add_post(scene.app, scene, files=[File("Über.svg", "image/svg+xml", svg)])
        attachment = await attachment_of(client, post)
        r = await client.get(attachment["url"])
        assert r.status_code == 307, r.text
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["etag"] == f'"{attachment["sha256"]}"'
        location = r.headers["location"]
        assert "X-Amz-Expires=120" in location
        async with httpx.AsyncClient() as browser:
            served = await browser.get(location)
        assert served.status_code == 200
        assert served.content == svg
        assert served.headers["content-type"] == "application/octet-stream"  # never rendered
        assert served.headers["content-disposition"] == content_disposition("Über.svg")
        assert served.headers["cache-control"].startswith("private, max-age=")

    async def test_head_304_and_authorisation_are_answered_here(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        post = await add_post(scene.app, scene, files=[File("photo.png", "image/png", PNG)])
        attachment = await attachment_of(client, post)
        path = f"/v1/attachments/{attachment['id']}/content"
        head = await client.head(attachment["url"])  # a presigned URL is for GET only
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(PNG))
        etag = f'"{attachment["sha256"]}"'
        r = await client.get(path, headers={**MEMBER, "If-None-Match": etag})
        assert r.status_code == 304
        assert_problem(await client.get(path), 401, "unauthenticated")
        assert_problem(await client.get(path, headers=OUTSIDER), 404, "not_found")


class TestSigning:
    KEY = hashlib.sha256(b"k").digest()

    def test_signed_path_verifies_until_it_expires(self) -> None:
        attachment_id = uuid.uuid4()
        path = signing.signed_path(P, attachment_id, self.KEY, ttl=900, now=1_000_000)
        parsed = urlsplit(path)
        assert parsed.path == f"/v1/attachments/{attachment_id}/content"
        query = parse_qs(parsed.query)
        expires, sig = int(query["expires"][0]), query["sig"][0]
        assert 1_000_900 <= expires < 1_000_960
        keys = [self.KEY]
        assert signing.verify(P, attachment_id, expires, sig, keys, now=expires)
        assert not signing.verify(P, attachment_id, expires, sig, keys, now=expires + 1)
        assert not signing.verify(P, attachment_id, expires, sig, [b"other"], now=1_000_000)
        assert not signing.verify(P, uuid.uuid4(), expires, sig, keys, now=1_000_000)
        assert not signing.verify(FOREIGN, attachment_id, expires, sig, keys, now=1_000_000)

    def test_every_key_verifies_and_the_first_signs(self) -> None:
        attachment_id = uuid.uuid4()
        old, new = b"old-key", b"new-key"
        sig = signing.sign(P, attachment_id, 2_000_000, old)
        assert signing.verify(P, attachment_id, 2_000_000, sig, [new, old], now=1_000_000)
        assert not signing.verify(P, attachment_id, 2_000_000, sig, [new], now=1_000_000)

    def test_a_platform_id_cannot_borrow_from_the_attachment_id(self) -> None:
        """The message is length-prefixed: no other split of the same bytes signs alike."""
        attachment_id = "b"
        assert signing.sign("a:", attachment_id, 1, self.KEY) != signing.sign(
            "a", ":" + attachment_id, 1, self.KEY
        )

    async def test_urls_do_not_depend_on_the_jwt_secret_or_the_operator_token(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        """An operator (or whoever holds the JWT secret) cannot mint an attachment URL."""
        settings = scene.app.state.settings
        post = await add_post(scene.app, scene, files=[File("a.png", "image/png", PNG)])
        attachment = await attachment_of(client, post)
        query = parse_qs(urlsplit(attachment["url"]).query)
        expires, sig = int(query["expires"][0]), query["sig"][0]
        for secret in (settings.operator_token[0], settings.jwt_secret[0].secret):
            forged = signing.sign(P, attachment["id"], expires, secret.get_secret_value().encode())
            assert forged != sig
            r = await client.get(
                attachment["url"].split("?")[0], params={"expires": expires, "sig": forged}
            )
            assert_problem(r, 401, "unauthenticated")


class TestHelpers:
    @pytest.mark.parametrize(
        ("stored", "served"),
        [
            ("image/PNG", "image/png"),
            ("image/jpeg; name=x.jpg", "image/jpeg"),
            ("text/plain", "text/plain"),
            ("text/plain; charset=utf-7", "text/plain"),
            ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
            ("application/vnd.ms-excel", "application/vnd.ms-excel"),
            ("image/svg+xml", "application/octet-stream"),
            ("text/html;charset=utf-8", "application/octet-stream"),
        ],
    )
    def test_safe_content_type(self, stored: str, served: str) -> None:
        assert safe_content_type(stored) == served

    def test_content_disposition_strips_control_characters(self) -> None:
        assert content_disposition("a\r\nb\x00.txt") == (
            "attachment; filename=\"ab.txt\"; filename*=UTF-8''ab.txt"
        )
        assert content_disposition("") == (
            "attachment; filename=\"attachment\"; filename*=UTF-8''attachment"
        )
