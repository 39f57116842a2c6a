"""What the cleanup command forgets of events: those past retention that no endpoint waits for."""

from __future__ import annotations

from datetime import timedelta

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from app.config import Settings
from app.db.base import utcnow
from app.events.dispatcher import Dispatcher
from app.maintenance import cleanup
from app.models import Event, EventAttempt, EventMessage
from tests.auth import OPERATOR
from tests.events.conftest import send_mail, subscribe
from tests.events.receiver import Receiver
from tests.inbound.conftest import Inbox


async def counts(app: FastAPI) -> dict[str, int]:
    async with app.state.engine.connect() as conn:
        return {
            model.__tablename__: int(
                (await conn.execute(sa.select(sa.func.count()).select_from(model))).scalar_one()
            )
            for model in (Event, EventMessage, EventAttempt)
        }


class TestEventRetention:
    async def test_sent_events_go_after_retention_and_waiting_ones_stay(
        self,
        client: httpx.AsyncClient,
        inbox: Inbox,
        receiver: Receiver,
        dispatcher: Dispatcher,
        app: FastAPI,
        settings: Settings,
    ) -> None:
        await subscribe(client, receiver.url, description="up")
        await send_mail(client, inbox.address, "sent", subject="Sent long ago")
        await dispatcher.run_once()
        assert len(receiver.events("post.created")) == 1
        down = await subscribe(client, "http://127.0.0.1:9/down", description="down")
        await send_mail(client, inbox.address, "waiting", subject="Still waiting")
        await dispatcher.run_once()  # the "down" endpoint refuses: its message stays pending
        long_ago = utcnow() - timedelta(days=settings.delivery_retention_days, minutes=1)
        async with app.state.sessionmaker.begin() as session:
            await session.execute(sa.update(Event).values(created_at=long_ago))
        await send_mail(client, inbox.address, "recent", subject="Recent")
        before = await counts(app)

        report = await cleanup(settings, grace_seconds=3600)

        # The integration's creation (no endpoint then) and the sent post.created.
        assert report.events_purged == 2
        assert "events purged: 2" in str(report)
        async with app.state.engine.connect() as conn:
            left = (await conn.execute(sa.select(Event.type, Event.post_id))).all()
        posts = {p["subject"]: p["id"] for p in await inbox.posts()}
        assert {(str(t), str(i)) for t, i in left} == {
            ("post.created", posts["Still waiting"]),
            ("post.created", posts["Recent"]),
        }
        after = await counts(app)
        # The sent event's message (one endpoint then) and its attempt went with it.
        assert after == {
            "events": before["events"] - 2,
            "event_messages": before["event_messages"] - 1,
            "event_attempts": before["event_attempts"] - 1,
        }
        r = await client.get(f"/v1/event-endpoints/{down['id']}/attempts", headers=OPERATOR)
        assert r.status_code == 200
        assert r.json()["items"]  # the waiting one's tries are still there
