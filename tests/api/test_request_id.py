"""``X-Request-ID``: the proxy's, when it is one, else ours; on every answer and log line."""

from __future__ import annotations

import io
import json
import logging
import re

import httpx
import pytest
from fastapi import FastAPI

from app.api.request_id import request_id
from app.logging import JsonFormatter
from tests.auth import bearer
from tests.factories import World

GENERATED = re.compile(r"[0-9a-f]{32}")


class TestRequestId:
    async def test_every_answer_carries_one(self, client: httpx.AsyncClient, world: World) -> None:
        await world.platform("p1")
        answers = [
            await client.get("/healthz"),
            await client.get("/"),
            await client.get("/v1/platform", headers=bearer()),
            await client.get("/v1/platform"),  # 401
            await client.get("/v1/nothing-here"),  # 404
            await client.post("/inbound/mime"),  # 401 of an inbound endpoint
            await client.get("/inbound/mime"),  # 405
            await client.get("/metrics"),  # 401
        ]
        ids = [r.headers["x-request-id"] for r in answers]
        assert all(GENERATED.fullmatch(i) for i in ids), ids
        assert len(set(ids)) == len(ids)

    @pytest.mark.parametrize(
        "given",
        ["3f2b9c1d-0a8e-4f6b-9d7c-5a3e1f0b2d4c", "Root=1-67891233-abcdef012345678912345678", "a"],
    )
    async def test_the_proxys_id_is_echoed(self, client: httpx.AsyncClient, given: str) -> None:
        r = await client.post("/inbound/mailgun", headers={"X-Request-ID": given})
        assert r.headers["x-request-id"] == given
        r = await client.get("/healthz", headers={"X-Request-ID": given})
        assert r.headers["x-request-id"] == given

    @pytest.mark.parametrize(
        "given",
        ["", "two words", "a" * 129, "alice@example.org", "<script>", "caf\u00e9", "a\tb"],
    )
    async def test_anything_else_is_replaced_by_one_of_ours(
        self, client: httpx.AsyncClient, given: str
    ) -> None:
        r = await client.get("/healthz", headers={b"X-Request-ID": given.encode()})
        assert GENERATED.fullmatch(r.headers["x-request-id"])

    def test_the_first_header_counts(self) -> None:
        headers = [(b"x-request-id", b"first"), (b"x-request-id", b"second")]
        assert request_id(headers) == "first"

    async def test_a_bug_of_ours_is_answered_and_logged_with_the_id(
        self, app: FastAPI, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def broken() -> None:
            raise RuntimeError("a bug")

        app.add_api_route("/v1/broken", broken)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/v1/broken", headers={"X-Request-ID": "req-500"})
        assert r.status_code == 500
        assert r.headers["x-request-id"] == "req-500"
        [record] = [r for r in caplog.records if r.name == "mailslot.errors"]
        line = json.loads(JsonFormatter().format(record))
        assert line["request_id"] == "req-500"
        assert "RuntimeError: a bug" in line["exc_info"]

    async def test_lines_written_while_a_request_is_served_name_it(self, app: FastAPI) -> None:
        async def chatty() -> dict[str, str]:
            logging.getLogger("mailslot.test").warning("working on it")
            return {}

        app.add_api_route("/v1/chatty", chatty)
        written = io.StringIO()
        handler = logging.StreamHandler(written)
        handler.setFormatter(JsonFormatter())
        logger = logging.getLogger("mailslot.test")
        logger.addHandler(handler)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as c:
                await c.get("/v1/chatty", headers={"X-Request-ID": "req-chatty"})
            logger.warning("after the request")
        finally:
            logger.removeHandler(handler)
        during, after = (json.loads(line) for line in written.getvalue().splitlines())
        assert (during["message"], during["request_id"]) == ("working on it", "req-chatty")
        assert "request_id" not in after
