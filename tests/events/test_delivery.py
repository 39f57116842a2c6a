"""Events sent to a real receiver on loopback, every one verified with ``standardwebhooks``."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.db.base import utcnow
from app.db.engine import create_engine
from app.events.dispatcher import Dispatcher
from app.models import EventEndpoint, EventMessage, MessageStatus
from tests.auth import OPERATOR, bearer
from tests.events.conftest import send_mail, subscribe
from tests.events.receiver import Receiver
from tests.inbound.conftest import Inbox
from tests.inbound.payloads import postmark_attachment


class TestPostCreated:
    async def test_each_accepted_mail_yields_one_verified_post_created(
        self,
        client: httpx.AsyncClient,
        inbox: Inbox,
        receiver: Receiver,
        dispatcher: Dispatcher,
    ) -> None:
        endpoint = await subscribe(client, receiver.url)
        attachment = postmark_attachment("hello.txt", "text/plain", b"hello")
        for index in range(5):
            await send_mail(
                client,
                inbox.address,
                f"m-{index}",
                subject=f"Mail {index}",
                attachments=[attachment],
            )
            await send_mail(client, inbox.address, f"m-{index}")  # the provider's retry
        await dispatcher.run_once()
        assert all(r.verified_with(endpoint["secret"]) for r in receiver.received)
        created = receiver.events("post.created")
        assert len(created) == 5
        posts = {p["id"]: p for p in await inbox.posts()}
        assert {e["data"]["id"] for e in created} == set(posts)
        for event in created:
            assert event["id"].startswith("evt_")
            assert event["platform_id"] == "p1"
            post = posts[event["data"]["id"]]
            assert event["data"]["subject"] == post["subject"]
            assert event["data"]["text"] == post["text"]
            assert event["data"]["group_id"] == inbox.group
            assert event["data"]["integration_id"] == inbox.integration["id"]
            [sent] = event["data"]["attachments"]
            assert (sent["filename"], sent["size"]) == ("hello.txt", 5)
            assert "content" not in sent
        assert len({r.headers["webhook-id"] for r in receiver.received}) == len(receiver.received)
        await dispatcher.run_once()  # nothing is due any more
        assert len(receiver.received) == 5  # (the integration was created before the endpoint)

    async def test_a_refused_mail_yields_delivery_rejected(
        self, client: httpx.AsyncClient, inbox: Inbox, receiver: Receiver, dispatcher: Dispatcher
    ) -> None:
        await subscribe(client, receiver.url, event_types=["delivery.rejected"])
        await send_mail(
            client, inbox.address, headers=[{"Name": "Auto-Submitted", "Value": "auto-replied"}]
        )
        await dispatcher.run_once()
        [event] = receiver.events()
        assert event["type"] == "delivery.rejected"
        assert event["data"]["reason"] == "auto_reply"
        assert event["data"]["integration_id"] == inbox.integration["id"]

    async def test_types_and_platforms_filter_what_an_endpoint_gets(
        self, client: httpx.AsyncClient, inbox: Inbox, receiver: Receiver, dispatcher: Dispatcher
    ) -> None:
        await subscribe(client, receiver.url, platform_ids=["other"])
        await send_mail(client, inbox.address)
        await dispatcher.run_once()
        assert receiver.received == []

    async def test_the_dispatcher_of_the_lifespan_sends_within_a_second(
        self, app: FastAPI, client: httpx.AsyncClient, inbox: Inbox, receiver: Receiver
    ) -> None:
        await subscribe(client, receiver.url, event_types=["post.created"])
        async with app.router.lifespan_context(app):
            started = asyncio.get_running_loop().time()
            await send_mail(client, inbox.address)
            await receiver.wait_for(1, "post.created", seconds=5)
            elapsed = asyncio.get_running_loop().time() - started
        assert len(receiver.events("post.created")) == 1
        assert elapsed < 1.0


class TestRetries:
    async def test_a_receiver_down_then_back_gets_every_event(
        self,
        client: httpx.AsyncClient,
        inbox: Inbox,
        receiver: Receiver,
        dispatcher: Dispatcher,
    ) -> None:
        endpoint = await subscribe(client, receiver.url, event_types=["post.created"])
        await receiver.stop()  # connections refused
        for index in range(3):
            await send_mail(client, inbox.address, f"down-{index}")
        await dispatcher.run_once()
        receiver.status = 503  # answering, but failing
        await receiver.start()
        await asyncio.sleep(0.1)
        await dispatcher.run_once()
        receiver.status = 200
        await asyncio.sleep(0.1)
        await dispatcher.run_once()
        ok = [r for r in receiver.received if r.verified_with(endpoint["secret"])]
        assert len(ok) == len(receiver.received)
        delivered = {r.event["data"]["subject"] for r in receiver.received[-3:]}
        assert len({r.event["id"] for r in receiver.received}) == 3
        assert delivered == {"Hello"}
        r = await client.get(f"/v1/event-endpoints/{endpoint['id']}/attempts", headers=OPERATOR)
        attempts = r.json()["items"]
        assert len(attempts) == 9  # refused, 503, 200: three tries of each event
        assert {a["status"] for a in attempts} == {"delivered"}
        codes = sorted((a["status_code"] or 0) for a in attempts)
        assert codes == [0, 0, 0, 200, 200, 200, 503, 503, 503]
        failed = [a for a in attempts if a["status_code"] != 200]
        assert all(a["error"] and a["next_attempt_at"] for a in failed)
        r = await client.get(f"/v1/event-endpoints/{endpoint['id']}", headers=OPERATOR)
        assert r.json()["failing_since"] is None

    async def test_the_last_retry_marks_the_message_failed(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        inbox: Inbox,
        receiver: Receiver,
        dispatcher: Dispatcher,
    ) -> None:
        await subscribe(client, receiver.url, event_types=["post.created"])
        receiver.status = 500
        await send_mail(client, inbox.address)
        for _ in range(10):
            await dispatcher.run_once()
            await asyncio.sleep(0.06)
        assert len(receiver.received) == 8  # the first try and 7 retries
        async with app.state.sessionmaker() as session:
            [message] = (await session.scalars(sa.select(EventMessage))).all()
        assert message.status is MessageStatus.failed
        assert message.attempts == 8

    async def test_an_endpoint_failing_for_5_days_is_disabled_with_its_reason(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        inbox: Inbox,
        receiver: Receiver,
        dispatcher: Dispatcher,
    ) -> None:
        endpoint = await subscribe(client, receiver.url, event_types=["post.created"])
        async with app.state.sessionmaker.begin() as session:
            await session.execute(
                sa.update(EventEndpoint).values(
                    failing_since=utcnow() - timedelta(days=5, minutes=1)
                )
            )
        receiver.status = 410
        await send_mail(client, inbox.address)
        await dispatcher.run_once()
        r = await client.get(f"/v1/event-endpoints/{endpoint['id']}", headers=OPERATOR)
        assert r.json()["enabled"] is False
        assert "answered 410" in r.json()["disabled_reason"]
        r = await client.patch(
            f"/v1/event-endpoints/{endpoint['id']}", json={"enabled": True}, headers=OPERATOR
        )
        assert (r.json()["enabled"], r.json()["disabled_reason"]) == (True, None)


class TestRotation:
    async def test_both_secrets_sign_during_the_overlap(
        self,
        client: httpx.AsyncClient,
        inbox: Inbox,
        receiver: Receiver,
        dispatcher: Dispatcher,
    ) -> None:
        endpoint = await subscribe(client, receiver.url, event_types=["post.created"])
        r = await client.post(
            f"/v1/event-endpoints/{endpoint['id']}/rotate-secret", headers=OPERATOR
        )
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["secret"] != endpoint["secret"]
        assert rotated["secret"].startswith("whsec_")
        assert rotated["previous_secret_expires_at"] is not None
        await send_mail(client, inbox.address)
        await dispatcher.run_once()
        [received] = receiver.received
        assert len(received.headers["webhook-signature"].split(" ")) == 2
        assert received.verified_with(endpoint["secret"])
        assert received.verified_with(rotated["secret"])
        assert not received.verified_with("whsec_" + "A" * 32)


class TestTwoDispatchers:
    async def test_two_dispatchers_never_send_the_same_message_twice(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        inbox: Inbox,
        receiver: Receiver,
        settings: object,
    ) -> None:
        await subscribe(client, receiver.url, event_types=["post.created"])
        for index in range(40):
            await send_mail(client, inbox.address, f"pair-{index}")
        engines = [create_engine(app.state.settings.database_url) for _ in range(2)]
        dispatchers = [
            Dispatcher(async_sessionmaker(e, expire_on_commit=False), app.state.settings)
            for e in engines
        ]
        try:
            await asyncio.gather(*(d.run_once() for d in dispatchers))
        finally:
            for d, e in zip(dispatchers, engines, strict=True):
                await d.stop()
                await e.dispose()
        ids = [r.headers["webhook-id"] for r in receiver.received]
        assert len(ids) == 40
        assert len(set(ids)) == 40


class TestPing:
    async def test_ping_answers_the_receivers_status(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        endpoint = await subscribe(client, receiver.url)
        r = await client.post(f"/v1/event-endpoints/{endpoint['id']}/ping", headers=OPERATOR)
        assert r.status_code == 200, r.text
        assert r.json()["delivered"] is True
        assert r.json()["status_code"] == 200
        [received] = receiver.received
        assert received.event["type"] == "ping"
        assert received.verified_with(endpoint["secret"])
        receiver.status = 418
        r = await client.post(f"/v1/event-endpoints/{endpoint['id']}/ping", headers=OPERATOR)
        assert (r.json()["delivered"], r.json()["status_code"]) == (False, 418)


class TestRedeliver:
    async def test_redeliver_sends_the_same_event_again(
        self, client: httpx.AsyncClient, inbox: Inbox, receiver: Receiver, dispatcher: Dispatcher
    ) -> None:
        endpoint = await subscribe(client, receiver.url, event_types=["post.created"])
        await send_mail(client, inbox.address)
        await dispatcher.run_once()
        [first] = receiver.received
        r = await client.post(
            f"/v1/events/{first.headers['webhook-id']}/redeliver", headers=OPERATOR
        )
        assert r.status_code == 202, r.text
        await dispatcher.run_once()
        assert len(receiver.received) == 2
        second = receiver.received[1]
        assert second.headers["webhook-id"] == first.headers["webhook-id"]
        assert second.event == first.event
        assert second.verified_with(endpoint["secret"])
        r = await client.post("/v1/events/evt_nope/redeliver", headers=OPERATOR)
        assert (r.status_code, r.json()["code"]) == (404, "not_found")


class TestDeletedPosts:
    async def test_a_deleted_post_keeps_what_was_posted_in_its_event(
        self, client: httpx.AsyncClient, inbox: Inbox, receiver: Receiver, dispatcher: Dispatcher
    ) -> None:
        await send_mail(client, inbox.address, subject="Kept in the event")
        [post] = await inbox.posts()
        r = await client.delete(f"/v1/posts/{post['id']}", headers=bearer("root"))
        assert r.status_code == 204
        r = await client.get("/v1/events", headers=OPERATOR)
        by_type = {e["type"]: e for e in r.json()["items"]}
        assert by_type["post.created"]["data"]["subject"] == "Kept in the event"
        assert by_type["post.deleted"]["data"]["id"] == post["id"]

    async def test_deleting_a_group_keeps_its_posts_in_their_events(
        self, client: httpx.AsyncClient, inbox: Inbox
    ) -> None:
        await send_mail(client, inbox.address, subject="Group gone")
        r = await client.delete(f"/v1/groups/{inbox.group}", headers=bearer("root"))
        assert r.status_code == 204, r.text
        r = await client.get("/v1/events", headers=OPERATOR)
        by_type = {e["type"]: e for e in r.json()["items"]}
        assert by_type["post.created"]["data"]["subject"] == "Group gone"
        assert by_type["integration.deleted"]["data"]["id"] == inbox.integration["id"]


class TestSentToTheCheckedAddress:
    async def test_a_url_refused_when_sending_is_an_attempt_that_failed(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        inbox: Inbox,
        receiver: Receiver,
        dispatcher: Dispatcher,
    ) -> None:
        endpoint = await subscribe(client, receiver.url, event_types=["post.created"])
        app.state.settings.events_allow_loopback = False  # as if DNS now said loopback
        try:
            await send_mail(client, inbox.address)
            await dispatcher.run_once()
        finally:
            app.state.settings.events_allow_loopback = True
        assert receiver.received == []
        r = await client.get(f"/v1/event-endpoints/{endpoint['id']}/attempts", headers=OPERATOR)
        [attempt] = r.json()["items"]
        assert attempt["status_code"] is None
        assert "loopback" in attempt["error"]
