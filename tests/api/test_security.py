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
            pytest.param({"Authorization": f"Bearer {token(aud=None)}"}, id="no-aud"),
            pytest.param(
                {"Authorization": f"Bearer {token(aud='billing-service')}"}, id="other-aud"
            ),
            pytest.param({"Authorization": f"Bearer {token(iss=None)}"}, id="no-iss"),
            pytest.param(
                {"Authorization": f"Bearer {token(iss='https://someone-else')}"}, id="other-iss"
            ),
            pytest.param({"Authorization": f"Bearer {token(iat=None)}"}, id="no-iat"),
            pytest.param(
                {"Authorization": f"Bearer {token(iat=int(time.time()) + 3600)}"},
                id="iat-in-the-future",
            ),
            pytest.param(
                {"Authorization": f"Bearer {token(exp=9_999_999_999)}"}, id="lives-for-ever"
            ),
            pytest.param(
                {"Authorization": f"Bearer {token(iat=str(int(time.time())))}"}, id="iat-a-string"
            ),
            pytest.param(
                {"Authorization": f"Bearer {token(exp=str(int(time.time()) + 60))}"},
                id="exp-a-string",
            ),
            pytest.param(
                {"Authorization": f"Bearer {token(expires_in=24 * 3600 + 1)}"},
                id="lives-a-second-over-a-day",
            ),
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

    async def test_a_token_for_another_service_is_refused_whatever_else_it_says(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        """A host platform that signs for several services with one key gives none of them
        access here: the review's token (aud billing-service, a foreign iss, exp far away)."""
        await world.platform("p1")
        foreign = token(aud="billing-service", iss="someone-else", exp=9_999_999_999)
        r = await client.get("/v1/platform", headers={"Authorization": f"Bearer {foreign}"})
        assert_401(r)
        assert "aud" in r.json()["detail"] or "iss" in r.json()["detail"]

    async def test_a_token_living_exactly_the_longest_lifetime_is_accepted(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        await world.platform("p1")
        r = await client.get("/v1/platform", headers=bearer(expires_in=24 * 3600))
        assert r.status_code == 200, r.text

    async def test_unsigned_token_is_refused(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        now = int(time.time())
        claims = {"sub": "a", "platform": "p1", "role": "admin", "iat": now, "exp": now + 60}
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
        rs_token = token("a", "p1", "admin", secret=private, algorithm="RS256")
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
        assert settings.jwt_secret == []
        app = create_app(settings)
        forged = token("a", "p1", "admin", secret=JWT_SECRET)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            r = await c.get("/v1/platform", headers={"Authorization": f"Bearer {forged}"})
        await app.state.engine.dispose()
        assert_401(r)


async def _status(settings: Settings, path: str, headers: dict[str, str]) -> int:
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get(path, headers=headers)
    await app.state.engine.dispose()
    return r.status_code


class TestKeyRotation:
    NEW_SECRET = "the-new-hs256-secret-0123456789abcdef0123"

    async def test_every_configured_hs256_secret_is_accepted(
        self, database_url: str, tmp_path: Path, world: World
    ) -> None:
        await world.platform("p1")
        settings = make_settings(
            database_url, tmp_path, jwt_secret=f"{self.NEW_SECRET},{JWT_SECRET}"
        )
        for secret in (self.NEW_SECRET, JWT_SECRET):
            headers = bearer(secret=secret)
            assert await _status(settings, "/v1/platform", headers) == 200
        assert await _status(settings, "/v1/platform", bearer(secret="x" * 40)) == 401

    async def test_the_kid_picks_the_named_key(
        self, database_url: str, tmp_path: Path, world: World
    ) -> None:
        await world.platform("p1")
        named = f'{{"2026-11": "{JWT_SECRET}", "2026-12": "{self.NEW_SECRET}"}}'
        settings = make_settings(database_url, tmp_path, jwt_secret=named)
        good = bearer(secret=self.NEW_SECRET, kid="2026-12")
        assert await _status(settings, "/v1/platform", good) == 200
        assert await _status(settings, "/v1/platform", bearer(secret=JWT_SECRET)) == 200  # no kid
        # a kid names one key: a token signed with the other one is refused
        wrong = bearer(secret=JWT_SECRET, kid="2026-12")
        assert await _status(settings, "/v1/platform", wrong) == 401
        assert await _status(settings, "/v1/platform", bearer(kid="2027-01")) == 401

    async def test_several_rs256_public_keys(
        self, database_url: str, tmp_path: Path, world: World
    ) -> None:
        await world.platform("p1")
        (old_private, old_public), (new_private, new_public) = _rsa_pair(), _rsa_pair()
        settings = make_settings(
            database_url, tmp_path, jwt_public_key=f"{new_public},{old_public}"
        )
        for private in (old_private, new_private):
            headers = bearer(secret=private, algorithm="RS256")
            assert await _status(settings, "/v1/platform", headers) == 200
        stranger, _ = _rsa_pair()
        headers = bearer(secret=stranger, algorithm="RS256")
        assert await _status(settings, "/v1/platform", headers) == 401

    async def test_several_operator_tokens(
        self, database_url: str, tmp_path: Path, world: World
    ) -> None:
        await world.platform("p1")
        new = "the-new-operator-token-0123456789abcdef"
        settings = make_settings(database_url, tmp_path, operator_token=f"{new},{OPERATOR_TOKEN}")
        for value in (new, OPERATOR_TOKEN):
            headers = {"Authorization": f"Bearer {value}"}
            assert await _status(settings, "/v1/platforms", headers) == 200
        refused = {"Authorization": f"Bearer {new},{OPERATOR_TOKEN}"}
        assert await _status(settings, "/v1/platforms", refused) == 401


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
