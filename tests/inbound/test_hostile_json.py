"""Provider JSON nested deeper than MAX_JSON_DEPTH is a malformed payload, never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from app.inbound.errors import MalformedMessage, NotJson
from app.inbound.providers.base import MAX_JSON_DEPTH, load_json
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import basic, mailgun_form, postmark_json, sendgrid_form


def nested(depth: int) -> str:
    """``depth`` arrays inside each other."""
    return "[" * depth + "]" * depth


# Deeper than the interpreter's recursion limit (the parser raised RecursionError: a 500), and
# just over our own bound (accepted before, although nothing a provider sends nests so deep).
DEPTHS = [pytest.param(100_000, id="100000-levels"), pytest.param(MAX_JSON_DEPTH + 1, id="bound+1")]


class TestLoadJson:
    def test_at_the_bound_is_read_one_more_level_is_malformed(self) -> None:
        assert load_json(nested(MAX_JSON_DEPTH), "x") is not None
        with pytest.raises(MalformedMessage, match="nested deeper"):
            load_json(nested(MAX_JSON_DEPTH + 1), "x")
        deep_object = '{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1)
        with pytest.raises(MalformedMessage, match="nested deeper"):
            load_json(deep_object, "x")

    def test_far_past_the_recursion_limit_is_malformed_not_recursion_error(self) -> None:
        with pytest.raises(MalformedMessage, match="nested deeper"):
            load_json(nested(100_000), "x")
        with pytest.raises(MalformedMessage, match="nested deeper"):
            load_json(nested(100_000).encode(), "x", object_pairs_hook=list)

    def test_text_that_is_not_json(self) -> None:
        with pytest.raises(NotJson):
            load_json("{not json", "x")
        with pytest.raises(NotJson):
            load_json(b"\xff\xfe", "x")
        with pytest.raises(NotJson):  # over the interpreter's digit limit for int()
            load_json("1" * 5000, "x")


@pytest.mark.parametrize("depth", DEPTHS)
async def test_postmark_document_nested_too_deeply_is_malformed_403(
    client: httpx.AsyncClient, inbox: Inbox, depth: int
) -> None:
    doc = json.dumps(postmark_json(inbox.address))
    body = doc.replace('"Attachments": []', f'"Attachments": [{{"Name": {nested(depth)}}}]')
    assert body != doc
    r = await client.post(
        "/inbound/postmark",
        content=body.encode(),
        headers={**basic(), "Content-Type": "application/json"},
    )
    assert r.status_code == 403, r.text
    assert r.json()["reason"] == "malformed_message"
    assert await inbox.posts() == []


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("name", ["envelope", "charsets", "attachment-info", "content-ids"])
async def test_sendgrid_json_field_nested_too_deeply_is_malformed(
    client: httpx.AsyncClient, inbox: Inbox, name: str, depth: int
) -> None:
    fields = sendgrid_form(inbox.address)
    if name == "envelope":
        fields[name] = json.dumps({"to": [inbox.address], "from": "a@example.org", "x": 0})
    else:
        fields[name] = json.dumps({"x": 0})
    fields[name] = fields[name].replace("0}", nested(depth) + "}")
    r = await client.post("/inbound/sendgrid", data=fields, headers=basic())
    assert r.status_code == 200, r.text  # SendGrid's refusal: 200, so that it does not retry
    assert r.json()["reason"] == "malformed_message"
    assert await inbox.posts() == []


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("name", ["message-headers", "content-id-map"])
async def test_mailgun_json_field_nested_too_deeply_is_malformed_406(
    client: httpx.AsyncClient, inbox: Inbox, name: str, depth: int
) -> None:
    form = mailgun_form(inbox.address)
    if name == "message-headers":
        form[name] = form[name][:-1] + ", " + nested(depth) + "]"
    else:
        form[name] = '{"<cid>": ' + nested(depth) + "}"
    r = await client.post("/inbound/mailgun", data=form)
    assert r.status_code == 406, r.text
    assert r.json()["reason"] == "malformed_message"
    assert await inbox.posts() == []


async def test_a_mailgun_content_id_map_that_is_not_json_is_still_ignored(
    client: httpx.AsyncClient, inbox: Inbox
) -> None:
    form = mailgun_form(inbox.address)
    form["content-id-map"] = "{not json"
    r = await client.post("/inbound/mailgun", data=form)
    assert r.status_code == 200, r.text
