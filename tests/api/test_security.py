"""Authentication as DESIGN.md's "Identity and tenancy" says."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.config import Settings
from app.main import create_app
from tests.auth import JWT_SECRET, OPERATOR, OPERATOR_TOKEN, bearer, token
from tests.conftest import make_settings
from tests.factories import World


def _rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _hs512() -> str:
    """A token signed with the right secret but an algorithm the service does not accept."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return token(algorithm="HS512")


def assert_401(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "unauthenticated"


class TestUserTokens:
    async def test_valid_token_reads_its_platform(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1", plan="standard")
        r = await client.get("/v1/platform", headers=bearer("alice", "p1", "member"))
        assert r.status_code == 200
        assert r.json()["id"] == "p1"
        assert r.json()["usage"]["integrations"] == {"count": 0, "limit": 10}

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param({}, id="missing"),
            pytest.param({"Authorization": "Bearer"}, id="empty"),
            pytest.param({"Authorization": "Basic YWxpY2U6cHc="}, id="basic-scheme"),
            pytest.param({"Authorization": "Bearer not.a.jwt"}, id="malformed"),
            pytest.param({"Authorization": f"Bearer {token(expires_in=-31)}"}, id="expired"),
            pytest.param({"Authorization": f"Bearer {token(secret='x' * 40)}"}, id="wrong-key"),
            pytest.param({"Authorization": f"Bearer {token(role='owner')}"}, id="unknown-role"),
            pytest.param(
                {"Authorization": f"Bearer {token(platform='nope')}"}, id="unknown-platform"
            ),
            pytest.param({"Authorization": f"Bearer {token(expires_in=None)}"}, id="no-exp"),
            pytest.param({"Authorization": f"Bearer {token(user_id=None)}"}, id="no-sub"),
            pytest.param({"Authorization": f"Bearer {_hs512()}"}, id="other-alg"),
            pytest.param({"Authorization": f"Bearer {OPERATOR_TOKEN}"}, id="operator-token"),
        ],
    )
    async def test_bad_tokens_answer_401(
        self, client: httpx.AsyncClient, world: World, headers: dict[str, str]
    ) -> None:
        await world.platform("p1")
        assert_401(await client.get("/v1/platform", headers=headers))

    async def test_expiry_has_thirty_seconds_of_leeway(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        r = await client.get("/v1/platform", headers=bearer(expires_in=-20))
        assert r.status_code == 200

    async def test_unsigned_token_is_refused(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        claims = {"sub": "a", "platform": "p1", "role": "admin", "exp": int(time.time()) + 60}
        unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
        assert_401(
            await client.get("/v1/platform", headers={"Authorization": f"Bearer {unsigned}"})
        )


class TestRS256:
    async def test_rs256_is_accepted_only_with_a_public_key(
        self, database_url: str, tmp_path: Path, world: World
    ) -> None:
        private, public = _rsa_pair()
        await world.platform("p1")
        claims = {"sub": "a", "platform": "p1", "role": "admin", "exp": int(time.time()) + 60}
        rs_token = jwt.encode(claims, private, algorithm="RS256")
        for public_key, expected in ((public, 200), (None, 401)):
            settings = make_settings(database_url, tmp_path, jwt_public_key=public_key)
            app = create_app(settings)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as c:
                r = await c.get("/v1/platform", headers={"Authorization": f"Bearer {rs_token}"})
            await app.state.engine.dispose()
            assert r.status_code == expected, r.text

    async def test_public_key_cannot_be_used_as_an_hs256_secret(
        self, database_url: str, tmp_path: Path, world: World
    ) -> None:
        _, public = _rsa_pair()
        await world.platform("p1")
        settings = make_settings(database_url, tmp_path, jwt_public_key=public, jwt_secret=None)
        assert settings.jwt_secret is None
        app = create_app(settings)
        claims = {"sub": "a", "platform": "p1", "role": "admin", "exp": int(time.time()) + 60}
        forged = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            r = await c.get("/v1/platform", headers={"Authorization": f"Bearer {forged}"})
        await app.state.engine.dispose()
        assert_401(r)


class TestOperatorToken:
    async def test_operator_lists_platforms(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        r = await client.get("/v1/platforms", headers=OPERATOR)
        assert r.status_code == 200
        assert [p["id"] for p in r.json()["items"]] == ["p1"]

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param({}, id="missing"),
            pytest.param({"Authorization": "Bearer wrong-operator-token"}, id="wrong"),
            pytest.param({"Authorization": f"Bearer {OPERATOR_TOKEN}x"}, id="longer"),
            pytest.param(bearer("root", "p1", "admin"), id="admin-jwt"),
        ],
    )
    async def test_anything_else_is_refused(
        self, client: httpx.AsyncClient, world: World, headers: dict[str, str]
    ) -> None:
        await world.platform("p1")
        assert_401(await client.get("/v1/platforms", headers=headers))
        assert_401(
            await client.post(
                "/v1/platforms", json={"name": "x", "plan": "premium"}, headers=headers
            )
        )


def test_settings_fixture_is_not_production(settings: Settings) -> None:
    assert settings.environment == "test"
