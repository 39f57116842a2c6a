"""Tenant isolation over every operation of ``openapi/openapi.json``, with each role of platform B.

tests/test_tenancy.py checks a hand-picked list of management requests; this module walks the
committed spec, so that an endpoint added later is covered (or fails here until it is), and
reaches what only mail creates: posts, attachments, deliveries and their replay.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from tests.auth import OPERATOR, bearer
from tests.conftest import make_settings
from tests.factories import World
from tests.inbound.payloads import (
    INBOUND_PASSWORD,
    INBOUND_USER,
    MAILGUN_KEY,
    basic,
    postmark_attachment,
    postmark_json,
)

SPEC = json.loads(
    (Path(__file__).resolve().parents[2] / "openapi" / "openapi.json").read_text(encoding="utf-8")
)
A, B = "pa", "pb"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
# A valid body for every operation that takes a JSON one; ``{name}`` is filled with an id.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/platforms"): {"name": "Taken", "plan": "premium"},
    ("PATCH", "/v1/platforms/{platform_id}"): {"plan": "essentials"},
    ("PATCH", "/v1/platform/settings"): {"members_can_add_integrations": False},
    ("POST", "/v1/groups"): {"name": "Intruders"},
    ("PATCH", "/v1/groups/{group_id}"): {"name": "Taken over", "description": "x"},
    ("PUT", "/v1/groups/{group_id}/members/{user_id}"): {"role": "manager"},
    ("POST", "/v1/integrations"): {"title": "Sneaky", "group_id": "{group_id}"},
    ("PATCH", "/v1/integrations/{integration_id}"): {"title": "Taken over", "enabled": False},
    ("POST", "/v1/integrations/{integration_id}/test"): {"from": "eve@example.org"},
    ("POST", "/v1/integrations/{integration_id}/rotate-address"): {"grace_days": 0},
    ("POST", "/v1/event-endpoints"): {"url": "http://127.0.0.1:9/events"},
    ("PATCH", "/v1/event-endpoints/{endpoint_id}"): {"description": "changed"},
}
# Fields no body may carry: who owns a thing, its address, who made or wrote it.
FORBIDDEN_FIELDS = (
    "platform_id",
    "platform",
    "address",
    "display_address",
    "author",
    "author_email",
    "created_by",
    "source",
)
HTTP_METHODS = {"get", "head", "post", "put", "patch", "delete"}


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


def security_of(operation: dict[str, Any]) -> str:
    """``operator``, ``user`` or ``none`` (inbound webhooks and health checks)."""
    schemes = {name for requirement in operation.get("security") or [] for name in requirement}
    if "OperatorToken" in schemes:
        return "operator"
    return "user" if "UserToken" in schemes else "none"


def has_json_body(operation: dict[str, Any]) -> bool:
    return "application/json" in operation.get("requestBody", {}).get("content", {})


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@dataclass
class Scene:
    """Platform A's data (made by its own people and by mail), and platform B's own ids."""

    a: dict[str, list[str]] = field(default_factory=dict)
    b: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # what of A no answer to B may contain
    signed: dict[str, dict[str, str]] = field(default_factory=dict)  # A's signed URLs' queries


async def _deliver(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    return await client.post("/inbound/postmark", json=payload, headers=basic())


async def build(client: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch) -> Scene:
    scene = Scene()
    for platform in (A, B):
        await world.platform(platform, members_can_add_integrations=True)
    # The same user ids on both platforms: B's mia and mo must not borrow A's rights.
    group_a = await world.group(A, "Alpha secret group")
    group_b = await world.group(B, "Bravo group")
    for group, platform in ((group_a, A), (group_b, B)):
        await world.member(group, "mia", "manager", platform)
        await world.member(group, "mo", "member", platform)
    by_mo = await world.integration(group_a, "Alpha by mo", A, user_id="mo", role="member")
    by_root = await world.integration(group_a, "Alpha by root", A)
    own = await world.integration(group_b, "Bravo own", B)

    mail = postmark_json(
        by_mo["address"],
        subject="Alpha quarterly secret",
        html='<p>Report <img src="cid:logo@a"></p>',
        attachments=[
            postmark_attachment("report.txt", "text/plain", b"alpha secret report"),
            postmark_attachment("logo.png", "image/png", PNG, "logo@a"),
        ],
    )
    accepted = await _deliver(client, mail)
    assert accepted.status_code == 200, accepted.text
    [post_id] = accepted.json()["post_ids"]
    refused = await _deliver(
        client,
        postmark_json(
            by_root["address"], headers=[{"Name": "Auto-Submitted", "Value": "auto-replied"}]
        ),
    )
    assert refused.status_code == 403, refused.text

    def boom(_: str) -> str:
        raise RuntimeError("a bug while sanitising")

    with monkeypatch.context() as patch:
        patch.setattr("app.inbound.rows.sanitize_html", boom)
        failed = await _deliver(client, postmark_json(by_root["address"], html="<p>later</p>"))
    assert failed.status_code == 500, failed.text

    root_a = bearer("root", A, "admin")
    post = (await client.get(f"/v1/posts/{post_id}", headers=root_a)).json()
    # The operator's: an event endpoint, and an event of A (the tenants' tokens reach neither).
    endpoint = await client.post(
        "/v1/event-endpoints", json={"url": "http://127.0.0.1:9/events"}, headers=OPERATOR
    )
    assert endpoint.status_code == 201, endpoint.text
    events = (await client.get("/v1/events", headers=OPERATOR)).json()["items"]
    event_of_a = next(e["id"] for e in events if e["platform_id"] == A)
    scene.a = {
        "group_id": [group_a],
        "integration_id": [by_mo["id"], by_root["id"]],
        "post_id": [post_id],
        "attachment_id": [a["id"] for a in post["attachments"]],
        "delivery_id": [
            *accepted.json()["delivery_ids"],
            *refused.json()["delivery_ids"],
            *failed.json()["delivery_ids"],
        ],
        "user_id": ["mo", "newbie"],
        "platform_id": [A],
        "endpoint_id": [endpoint.json()["id"]],
        "event_id": [event_of_a],
    }
    scene.signed = {
        a["id"]: {k: v[0] for k, v in parse_qs(urlsplit(a["url"]).query).items()}
        for a in post["attachments"]
    }
    scene.b = {
        "group_id": group_b,
        "integration_id": own["id"],
        "user_id": "newbie",
        "platform_id": B,
        "endpoint_id": endpoint.json()["id"],  # the operator's (there is no other)
    }
    scene.secrets = [
        *itertools.chain.from_iterable(v for k, v in scene.a.items() if k.endswith("_id")),
        by_mo["address"],
        by_root["address"],
        "Alpha",
        "alpha secret report",
    ]
    scene.secrets = [s for s in scene.secrets if s not in {"mo", "newbie", A}]
    return scene


_SIGNED = re.compile(r"expires=\d+&(?:amp;)?sig=[0-9a-f]+")


async def snapshot(client: httpx.AsyncClient, platform: str) -> str:
    """Everything the platform's admin (and the operator, of it) can read, signatures removed."""
    root = bearer("root", platform, "admin")

    async def get(path: str, **params: Any) -> Any:
        r = await client.get(path, params=params, headers=root)
        assert r.status_code == 200, (path, r.text)
        return r.json()

    data: dict[str, Any] = {"platform": await get("/v1/platform")}
    data["groups"] = (await get("/v1/groups", limit=200))["items"]
    for group in data["groups"]:
        data[f"members {group['id']}"] = await get(f"/v1/groups/{group['id']}/members", limit=200)
        posts = (await get(f"/v1/groups/{group['id']}/posts", limit=200))["items"]
        data[f"posts {group['id']}"] = posts
        for post in posts:
            data[f"post {post['id']}"] = await get(f"/v1/posts/{post['id']}")
            for attachment in post["attachments"]:
                r = await client.get(f"/v1/attachments/{attachment['id']}/content", headers=root)
                data[f"content {attachment['id']}"] = [
                    r.status_code,
                    hashlib.sha256(r.content).hexdigest(),
                ]
    data["integrations"] = await get("/v1/integrations", limit=200)
    for integration in data["integrations"]["items"]:
        iid = integration["id"]
        data[f"integration {iid}"] = await get(f"/v1/integrations/{iid}")
        data[f"deliveries {iid}"] = await get(f"/v1/integrations/{iid}/deliveries", limit=200)
    data["deliveries"] = await get("/v1/deliveries", limit=200)
    for delivery in data["deliveries"]["items"]:
        data[f"delivery {delivery['id']}"] = await get(f"/v1/deliveries/{delivery['id']}")
    r = await client.get(f"/v1/platforms/{platform}", headers=OPERATOR)
    data["operator"] = r.json()
    r = await client.get("/v1/unrouted-deliveries", params={"limit": 200}, headers=OPERATOR)
    data["unrouted"] = r.json()
    return _SIGNED.sub("", json.dumps(data, sort_keys=True))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "blobs",
        mailgun_signing_key=MAILGUN_KEY,
        inbound_username=INBOUND_USER,
        inbound_password=INBOUND_PASSWORD,
        rate_limits="",
    )


@dataclass
class Probe:
    method: str
    path: str
    kind: str  # the operation's security
    url: str
    params: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    foreign: bool = False  # names one of A's ids

    def __str__(self) -> str:
        return f"{self.method} {self.url} {self.params or ''} {self.body or ''}".strip()


def probes(scene: Scene) -> Iterator[Probe]:
    """Every request of the spec, once for each of A's ids it can name (else once)."""
    for method, path, operation in operations():
        kind = security_of(operation)
        if kind == "none":
            yield Probe(method, path, kind, path)
            continue
        if has_json_body(operation) and (method, path) not in BODIES:
            pytest.fail(f"{method} {path}: add a valid body for it to BODIES")
        names = re.findall(r"\{(\w+)\}", path)
        for name in names:
            if name not in scene.a:
                pytest.fail(f"{method} {path}: no id of platform A for {{{name}}}; add one")
        template = BODIES.get((method, path))
        for values in itertools.product(*(scene.a[n] for n in names)):
            ids = {"group_id": scene.a["group_id"][0]} | dict(zip(names, values, strict=True))
            url = path.format(**ids)
            body = _fill(template, ids) if template is not None else None
            body_names_a = re.search(r"\{\w+\}", json.dumps(template)) is not None
            yield Probe(method, path, kind, url, body=body, foreign=bool(names) or body_names_a)
            if names == ["attachment_id"]:
                # A valid signature of A's other attachment does not open this one.
                other = next(a for a in scene.a["attachment_id"] if a not in values)
                yield Probe(method, path, kind, url, params=scene.signed[other], foreign=True)
        for parameter in operation.get("parameters", []):
            name = parameter["name"]
            if parameter["in"] == "query" and name.endswith("_id") and not names:
                for value in scene.a.get(name, []):
                    yield Probe(method, path, kind, path, params={name: value}, foreign=True)


CALLERS = {
    "admin": bearer("root", B, "admin"),
    "manager": bearer("mia", B, "member"),
    "member": bearer("mo", B, "member"),
    "operator": OPERATOR,
}


def test_the_committed_spec_has_every_operation_the_app_serves(app: FastAPI) -> None:
    served = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert served == {(method, path) for method, path, _ in operations()}


def test_every_request_body_refuses_unknown_fields_in_the_spec() -> None:
    schemas = SPEC["components"]["schemas"]

    def check(schema: dict[str, Any], where: str) -> None:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            check(schemas[name], name)
            return
        for sub in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
            check(sub, where)
        if schema.get("type") == "object" or "properties" in schema:
            assert schema.get("additionalProperties") is False, where
            for name, sub in schema.get("properties", {}).items():
                check(sub, f"{where}.{name}")

    checked = 0
    for _method, path, operation in operations():
        if has_json_body(operation) and not path.startswith("/inbound/"):
            check(operation["requestBody"]["content"]["application/json"]["schema"], path)
            checked += 1
    assert checked == len(BODIES)


@pytest.mark.parametrize("role", list(CALLERS))
async def test_platform_b_cannot_read_or_change_anything_of_platform_a(
    client: httpx.AsyncClient,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    subtests: pytest.Subtests,
    role: str,
) -> None:
    scene = await build(client, world, monkeypatch)
    caller = CALLERS[role]
    before = await snapshot(client, A)
    seen = 0

    for probe in probes(scene):
        if role == "operator" and probe.kind == "operator":
            continue  # the operator manages platforms: reading A's is its job
        with subtests.test(str(probe)):
            seen += 1
            if probe.kind == "none" and probe.path.startswith("/inbound/"):
                # A user's token is no provider credential; the mail names A's address.
                address = next(s for s in scene.secrets if "@" in s)
                payload: dict[str, Any] = (
                    {"data": {"recipient": address, "sender": "eve@example.org"}}
                    if probe.path.startswith("/inbound/mailgun")
                    else {"json": postmark_json(address)}
                )
                r = await client.post(
                    probe.url, params={"recipient": address}, headers=caller, **payload
                )
                assert r.status_code == 401, r.text
            else:
                r = await client.request(
                    probe.method, probe.url, params=probe.params, json=probe.body, headers=caller
                )
                if probe.kind == "operator" or (probe.kind == "user" and role == "operator"):
                    assert r.status_code == 401, r.text
                    if probe.method != "HEAD":
                        assert r.json()["code"] == "unauthenticated"
                elif probe.foreign:
                    assert r.status_code == 404, r.text
                    if probe.method != "HEAD":
                        assert r.headers["content-type"] == "application/problem+json"
                        assert r.json()["code"] == "not_found"
                else:  # B's own data, or health checks
                    assert r.status_code in (200, 201, 204, 403), r.text
            for secret in scene.secrets:
                assert secret not in r.text, secret

    assert seen > 40
    assert await snapshot(client, A) == before


async def test_no_body_field_sets_a_platform_address_author_or_creator(
    client: httpx.AsyncClient,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    subtests: pytest.Subtests,
) -> None:
    scene = await build(client, world, monkeypatch)
    before = await snapshot(client, A), await snapshot(client, B)
    schemas = SPEC["components"]["schemas"]

    for method, path, operation in operations():
        if not has_json_body(operation) or path.startswith("/inbound/"):
            continue
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        declared = set(schemas[ref.rsplit("/", 1)[1]].get("properties", {}))
        headers = OPERATOR if security_of(operation) == "operator" else bearer("root", B)
        url = path.format(**scene.b)
        for name in FORBIDDEN_FIELDS:
            if name in declared:
                continue
            body = _fill(BODIES[(method, path)], scene.b) | {name: "chosen"}
            with subtests.test(f"{method} {path} {name}"):
                r = await client.request(method, url, json=body, headers=headers)
                assert r.status_code == 422, r.text
                assert r.json()["code"] == "validation_error"
                assert [e["loc"] for e in r.json()["errors"]] == [["body", name]]

    assert (await snapshot(client, A), await snapshot(client, B)) == before
