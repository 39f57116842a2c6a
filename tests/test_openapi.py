"""The committed spec is the one the app serves, and it says what the server does."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from app import errors
from app.api.problems import HTTP_CODES, ProblemCode
from app.cli import openapi_document
from app.models import RejectionReason
from app.schemas import PLAIN_TEXT_PATTERN

SPEC = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
PROBLEM = "application/problem+json"
METHODS = {"get", "head", "post", "put", "patch", "delete"}


@cache
def spec() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(openapi_document())
    return document


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def schema(name: str) -> dict[str, Any]:
    found: dict[str, Any] = spec()["components"]["schemas"][name]
    return found


def operation(path: str, method: str) -> dict[str, Any]:
    found: dict[str, Any] = spec()["paths"][path][method]
    return found


def problem_codes(response: dict[str, Any]) -> list[str]:
    """The codes a problem answer lists (its schema narrows Problem.code)."""
    body = response["content"][PROBLEM]["schema"]
    assert body["allOf"] == [{"$ref": "#/components/schemas/Problem"}]
    codes: list[str] = body["properties"]["code"]["enum"]
    return codes


def test_committed_spec_matches_the_app() -> None:
    assert SPEC.read_text(encoding="utf-8") == openapi_document(), "run `make openapi`"


class TestOperations:
    def test_every_operation_has_a_unique_id_a_tag_and_a_description(self) -> None:
        ids = [op["operationId"] for _, _, op in operations()]
        assert len(ids) == len(set(ids))
        for path, method, op in operations():
            assert op.get("tags"), (method, path)
            assert op.get("description"), (method, path)
            for parameter in op.get("parameters", []):
                assert parameter.get("description"), (method, path, parameter["name"])
            assert "security" in op, (method, path)

    def test_top_level_tags_describe_every_tag_used_and_servers_are_given(self) -> None:
        described = {tag["name"]: tag["description"] for tag in spec()["tags"]}
        used = {tag for _, _, op in operations() for tag in op["tags"]}
        assert used <= set(described)
        assert all(described.values())
        assert spec()["servers"]

    def test_health_probes_need_no_credentials(self) -> None:
        assert operation("/healthz", "get")["security"] == []
        assert operation("/readyz", "get")["security"] == []


class TestProblems:
    def test_problem_code_is_the_enum_of_every_code_the_server_answers(self) -> None:
        assert schema("Problem")["properties"]["code"] == {
            "$ref": "#/components/schemas/ProblemCode",
            "description": "The stable code.",
        }
        documented = set(schema("ProblemCode")["enum"])
        raised = {
            cls.code
            for cls in vars(errors).values()
            if isinstance(cls, type) and hasattr(cls, "code")
        }
        assert raised | {code for code, _ in HTTP_CODES.values()} <= documented
        assert documented == {code.value for code in ProblemCode}

    def test_problem_answers_are_problem_json_only_and_list_their_codes(self) -> None:
        for path, method, op in operations():
            for status, response in op["responses"].items():
                if PROBLEM in response.get("content", {}):
                    assert list(response["content"]) == [PROBLEM], (method, path, status)
                    codes = problem_codes(response)
                    assert codes, (method, path, status)
                    assert "example" in response["content"][PROBLEM]

    def test_every_422_of_the_api_is_a_problem_and_fastapis_own_schema_is_gone(self) -> None:
        assert "HTTPValidationError" not in spec()["components"]["schemas"]
        for path, method, op in operations():
            if path.startswith("/v1/") and "422" in op["responses"]:
                codes = problem_codes(op["responses"]["422"])
                assert "validation_error" in codes, (method, path)
        assert problem_codes(operation("/v1/platforms/{platform_id}", "get")["responses"]["422"])

    def test_each_operation_lists_the_codes_it_answers(self) -> None:
        create = operation("/v1/integrations", "post")["responses"]
        assert problem_codes(create["409"]) == ["plan_limit_reached"]
        assert problem_codes(create["415"]) == ["unsupported_media_type"]
        assert problem_codes(create["401"]) == ["unauthenticated"]
        replay = operation("/v1/deliveries/{delivery_id}/replay", "post")["responses"]
        assert problem_codes(replay["409"]) == ["not_replayable", "content_expired"]
        listing = operation("/v1/integrations", "get")["responses"]
        assert problem_codes(listing["422"]) == ["validation_error", "invalid_cursor"]
        assert "415" not in listing

    def test_401_says_how_to_authenticate(self) -> None:
        for path, method, op in operations():
            if "401" in op["responses"]:
                assert "WWW-Authenticate" in op["responses"]["401"]["headers"], (method, path)


class TestRequestBodies:
    @pytest.mark.parametrize(
        ("name", "fields"),
        [
            ("GroupUpdate", ["name", "members_can_add_integrations"]),
            ("IntegrationUpdate", ["title", "enabled", "allowed_senders", "oversize_attachments"]),
            ("PlatformUpdate", ["name", "plan"]),
        ],
    )
    def test_patch_bodies_do_not_offer_null_where_it_is_refused(
        self, name: str, fields: list[str]
    ) -> None:
        for field in fields:
            prop = json.dumps(schema(name)["properties"][field])
            assert '"null"' not in prop, (name, field)

    def test_null_clears_a_group_description(self) -> None:
        variants = schema("GroupUpdate")["properties"]["description"]["anyOf"]
        assert {"type": "null"} in variants

    def test_fields_with_defaults_are_optional_in_create_bodies(self) -> None:
        create = schema("IntegrationCreate")
        assert create["required"] == ["title"]
        for name in ("IntegrationCreate", "GroupCreate", "PlatformCreate"):
            assert all("default" not in p for p in schema(name)["properties"].values()), name
        assert 'Default: `"reject"`' in create["properties"]["oversize_attachments"]["description"]

    def test_exactly_one_of_group_id_and_new_group_is_expressed(self) -> None:
        create = schema("IntegrationCreate")
        assert create["not"]["required"] == ["group_id", "new_group"]
        assert create["description"].startswith("Give exactly one of `group_id`")

    def test_length_limits_and_patterns_are_in_the_schema(self) -> None:
        title = schema("IntegrationCreate")["properties"]["title"]
        assert (title["minLength"], title["maxLength"]) == (1, 100)
        assert title["pattern"] == PLAIN_TEXT_PATTERN
        name = schema("GroupCreate")["properties"]["name"]
        assert (name["minLength"], name["maxLength"]) == (1, 200)
        platform_id = schema("PlatformCreate")["properties"]["id"]
        assert (platform_id["maxLength"], platform_id["pattern"]) == (64, "^[A-Za-z0-9_.:-]+$")

    @pytest.mark.parametrize(
        ("value", "accepted"),
        [
            ("Weekly newsletter", True),
            ("  Café  ", True),
            ("", False),
            ("   ", False),
            ("Title\r\n", False),
            ("a\u2028b", False),
            ("tab\there", False),
        ],
    )
    def test_the_text_pattern_agrees_with_the_server(self, value: str, accepted: bool) -> None:
        assert (re.fullmatch(PLAIN_TEXT_PATTERN, value) is not None) is accepted


class TestResponseBodies:
    def test_pages_have_names(self) -> None:
        names = set(spec()["components"]["schemas"])
        assert {"PostPage", "GroupPage", "MemberPage", "PlatformPage", "DeliveryPage"} <= names
        assert not [n for n in names if n.startswith("Page_")]

    def test_every_property_has_a_description(self) -> None:
        for name, component in spec()["components"]["schemas"].items():
            for prop, sub in component.get("properties", {}).items():
                assert sub.get("description"), (name, prop)

    def test_every_request_and_response_body_has_an_example(self) -> None:
        for path, method, op in operations():
            bodies = [op.get("requestBody", {}), *op["responses"].values()]
            for body in bodies:
                for media_type, media in body.get("content", {}).items():
                    assert "example" in media, (method, path, media_type)

    def test_reasons_are_the_rejection_reasons(self) -> None:
        reasons = {reason.value for reason in RejectionReason}
        delivery = schema("DeliveryRead")["properties"]["reason"]["anyOf"]
        assert {"$ref": "#/components/schemas/RejectionReason"} in delivery
        assert set(schema("RejectionReason")["enum"]) == reasons
        answer = json.dumps(schema("InboundAnswer")["properties"]["reason"])
        assert "#/components/schemas/RejectionReason" in answer
        (param,) = [
            p for p in operation("/v1/deliveries", "get")["parameters"] if p["name"] == "reason"
        ]
        assert "#/components/schemas/RejectionReason" in json.dumps(param["schema"])

    def test_response_headers_the_server_sends_are_declared(self) -> None:
        content = operation("/v1/attachments/{attachment_id}/content", "get")["responses"]
        assert {"ETag", "Content-Disposition", "Cache-Control"} <= set(content["200"]["headers"])
        assert "ETag" in content["304"]["headers"]
        for path in ("/inbound/mailgun", "/inbound/postmark", "/inbound/mime"):
            assert "Retry-After" in operation(path, "post")["responses"]["429"]["headers"]
        assert (
            "Retry-After" in operation("/inbound/sendgrid", "post")["responses"]["503"]["headers"]
        )


class TestInbound:
    def test_basic_auth_endpoints_name_the_scheme_and_mailgun_describes_its_signature(
        self,
    ) -> None:
        scheme = spec()["components"]["securitySchemes"]["InboundBasic"]
        assert (scheme["type"], scheme["scheme"]) == ("http", "basic")
        for path in ("/inbound/sendgrid", "/inbound/postmark", "/inbound/mime"):
            assert operation(path, "post")["security"] == [{"InboundBasic": []}]
        for path in ("/inbound/mailgun", "/inbound/mailgun/mime"):
            body = operation(path, "post")["requestBody"]
            assert "HMAC-SHA256" in body["description"]
            form = body["content"]["multipart/form-data"]["schema"]
            assert {"timestamp", "token", "signature"} <= set(form["required"])

    def test_each_providers_request_fields_are_documented(self) -> None:
        mailgun = operation("/inbound/mailgun", "post")["requestBody"]["content"]
        assert set(mailgun) == {"application/x-www-form-urlencoded", "multipart/form-data"}
        assert "recipient" in mailgun["multipart/form-data"]["schema"]["properties"]
        sendgrid = operation("/inbound/sendgrid", "post")["requestBody"]["content"]
        assert "envelope" in sendgrid["multipart/form-data"]["schema"]["properties"]
        postmark = operation("/inbound/postmark", "post")["requestBody"]["content"]
        assert "OriginalRecipient" in postmark["application/json"]["schema"]["properties"]

    def test_the_raw_mime_endpoint_documents_its_envelope_recipient(self) -> None:
        params = {(p["in"], p["name"]) for p in operation("/inbound/mime", "post")["parameters"]}
        assert {("query", "recipient"), ("header", "X-Envelope-To")} <= params

    def test_the_status_table_is_in_the_spec(self) -> None:
        (inbound,) = [tag for tag in spec()["tags"] if tag["name"] == "inbound"]
        assert (
            "| refused for good (a refusal `reason`) | 406 | 200 | 403 | 422 |"
            in (inbound["description"])
        )
