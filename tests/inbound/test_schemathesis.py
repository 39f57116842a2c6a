"""Schemathesis against the committed spec, in process, with valid tokens.

Every operation of ``openapi/openapi.json`` except the provider webhooks (``/inbound/*``, whose
bodies are provider formats the spec does not describe: ``test_properties.py`` covers their
parsers) is called with generated parameters and bodies, once as generated and once with the
path's ids replaced by real ones (a platform, a group with a member, an integration, a post with
an attachment, a delivery), so that the happy paths are reached too. Every answer must be no
5xx and conform to the spec: a documented status code, its content type, its schema.

The application runs on Schemathesis's own event loop (its ASGI client), so the test data is
made through that client too and the application's lifespan (which disposes of the engine) is
ended there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.python import asgi

from tests.auth import OPERATOR, bearer
from tests.inbound.payloads import basic, mime_message

Case = schemathesis.Case[Any]
SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
BASE_URL = f"http://{asgi.HOST}"
ADMIN = bearer("root", "p1", "admin")

FULL_SCHEMA = schemathesis.openapi.from_path(SPEC)
schema = FULL_SCHEMA.exclude(path_regex=r"^/inbound/")

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@dataclass
class Api:
    session: asgi.ASGIClient
    ids: dict[str, str]


def _answer(response: Any, method: str, path: str, *statuses: int) -> dict[str, Any]:
    """The JSON of a set-up answer, which must have one of ``statuses`` and conform to the spec."""
    assert response.status_code in statuses, (method, path, response.status_code, response.text)
    FULL_SCHEMA[path][method].validate_response(response)
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def api(app: FastAPI) -> Iterator[Api]:
    """The app with a platform ``p1``: a group with a member, an integration, a post from a mail
    with an attachment, and its delivery."""
    with asgi.get_client(cast(asgi.ASGIApp, app)) as session:
        try:
            _answer(
                session.post(
                    "/v1/platforms",
                    json={"id": "p1", "name": "Platform p1", "plan": "premium"},
                    headers=OPERATOR,
                ),
                "POST",
                "/v1/platforms",
                201,
            )
            group = _answer(
                session.post("/v1/groups", json={"name": "General"}, headers=ADMIN),
                "POST",
                "/v1/groups",
                201,
            )
            _answer(
                session.put(
                    f"/v1/groups/{group['id']}/members/bob", json={"role": "member"}, headers=ADMIN
                ),
                "PUT",
                "/v1/groups/{group_id}/members/{user_id}",
                201,
            )
            integration = _answer(
                session.post(
                    "/v1/integrations",
                    json={"title": "Newsletter", "group_id": group["id"]},
                    headers=ADMIN,
                ),
                "POST",
                "/v1/integrations",
                201,
            )
            address = integration["address"]
            raw = mime_message(
                address,
                html="<p>Hello <img src='cid:logo'></p>",
                attachments=[("report.pdf", "application/pdf", b"%PDF-1.4 hello")],
            )
            answer = _answer(
                session.post(
                    "/inbound/mime",
                    params={"recipient": address},
                    data=raw,
                    headers={**basic(), "Content-Type": "message/rfc822"},
                ),
                "POST",
                "/inbound/mime",
                200,
            )
            post = _answer(
                session.get(f"/v1/posts/{answer['post_ids'][0]}", headers=ADMIN),
                "GET",
                "/v1/posts/{post_id}",
                200,
            )
            ids = {
                "platform_id": "p1",
                "group_id": group["id"],
                "user_id": "bob",
                "integration_id": integration["id"],
                "post_id": post["id"],
                "attachment_id": post["attachments"][0]["id"],
                "delivery_id": answer["delivery_ids"][0],
            }
            yield Api(session, ids)
        finally:
            asgi.shutdown_lifespans()  # disposes of the engine on the loop that used it


def _headers(case: Case) -> dict[str, str]:
    operator = case.operation.path.startswith(("/v1/platforms", "/v1/unrouted-deliveries"))
    return dict(OPERATOR if operator else ADMIN)


def _use_real_ids(case: Case, ids: dict[str, str]) -> bool:
    """Put the fixture's ids in place of generated ones (path, query, top-level body fields)."""
    changed = False
    containers = [case.path_parameters, case.query]
    if isinstance(case.body, dict):
        containers.append(case.body)
    for values in containers:
        for name in list(values or ()):
            if name in ids and values is not None and values[name] != ids[name]:
                values[name] = ids[name]
                changed = True
    return changed


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_conforms_to_its_spec(case: Case, api: Api) -> None:
    headers = _headers(case)
    case.call_and_validate(base_url=BASE_URL, session=api.session, headers=headers, checks=CHECKS)
    if _use_real_ids(case, api.ids):
        case.call_and_validate(
            base_url=BASE_URL, session=api.session, headers=headers, checks=CHECKS
        )
