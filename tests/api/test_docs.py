"""The documentation pages and the root index work with no network: every asset is the app's."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.conftest import make_settings


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.urls.append(str(found["src"]))
        if tag == "link" and found.get("href"):
            self.urls.append(str(found["href"]))


def assets_of(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


class TestDocumentationPages:
    @pytest.mark.parametrize(
        ("page", "expected"),
        [
            ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
            ("/redoc", {"redoc.standalone.js", "favicon.png"}),
        ],
    )
    async def test_every_script_and_stylesheet_is_served_by_the_app(
        self, client: httpx.AsyncClient, page: str, expected: set[str]
    ) -> None:
        response = await client.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        urls = assets_of(response.text)
        assert {url.rsplit("/", 1)[-1] for url in urls} >= expected
        for url in urls:
            parts = urlsplit(url)
            assert not parts.scheme, f"{page} loads {url} from another host"
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 1000, url
        assert "cdn.jsdelivr.net" not in response.text
        assert "fonts.googleapis.com" not in response.text

    async def test_the_pages_load_the_spec_the_app_serves(self, client: httpx.AsyncClient) -> None:
        for page in ("/docs", "/redoc"):
            assert "/openapi.json" in (await client.get(page)).text
        spec = await client.get("/openapi.json")
        assert spec.status_code == 200
        assert spec.json()["info"]["title"] == "mailslot"


class TestIndex:
    async def test_the_root_links_to_the_docs_and_the_spec(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/")
        assert response.status_code == 200
        body = response.json()
        assert body["name"] == "mailslot"
        links = body["links"]
        assert links["docs"] == "/docs"
        assert links["openapi"] == "/openapi.json"
        for url in links.values():
            assert (await client.get(url)).status_code == 200, url


class TestDocsSwitch:
    async def test_production_serves_no_docs_unless_enabled(
        self, database_url: str, tmp_path: Path
    ) -> None:
        production = {
            "environment": "production",
            "inbound_domain": "in.example.net",
            "jwt_secret": "p" * 40,
            "operator_token": "o" * 40,
            "url_signing_keys": "u" * 40,
        }
        for enabled, expected in ((None, 404), (False, 404), (True, 200)):
            settings = make_settings(database_url, tmp_path, **production, docs_enabled=enabled)
            app = create_app(settings)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as c:
                for path in ("/docs", "/redoc", "/openapi.json"):
                    assert (await c.get(path)).status_code == expected, (enabled, path)
                links = (await c.get("/")).json()["links"]
            await app.state.engine.dispose()
            assert ("docs" in links) is (expected == 200)

    def test_elsewhere_docs_are_on_by_default(self, settings: Settings) -> None:
        assert settings.environment == "test"
        assert settings.docs_enabled is True
