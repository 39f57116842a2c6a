"""The event catalogue, as OpenAPI 3.1 ``webhooks``: what mailslot POSTs to an endpoint."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Header, Response
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.events.schemas import (
    DeliveryEvent,
    IntegrationEvent,
    PingEvent,
    PostCreatedEvent,
    PostDeletedEvent,
)

SIGNED = (
    "Signed as Standard Webhooks says: verify `webhook-signature` (`v1,<base64 HMAC-SHA256>` "
    "of `webhook-id.webhook-timestamp.body` with the endpoint's secret; several, space-"
    "separated, during a rotation) with the `standardwebhooks` library, and check the "
    "timestamp. Answer 2xx within 15 seconds; anything else is retried (5 s, 5 min, 30 min, "
    "2 h, 5 h, 10 h, 10 h). The same event may arrive more than once: `webhook-id` is the "
    "same each time."
)

CATALOGUE: list[tuple[str, type[BaseModel], str]] = [
    ("post.created", PostCreatedEvent, "A mail became a post."),
    ("post.deleted", PostDeletedEvent, "A post was deleted (an admin or a group manager)."),
    ("delivery.rejected", DeliveryEvent, "A mail was refused for good (its reason says why)."),
    ("delivery.failed", DeliveryEvent, "A mail failed through a bug of ours (replayable)."),
    ("integration.created", IntegrationEvent, "An integration was created."),
    ("integration.deleted", IntegrationEvent, "An integration was deleted."),
    ("ping", PingEvent, "Sent by `POST /v1/event-endpoints/{id}/ping`."),
]


SECURITY_SCHEME = {
    "EventSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "webhook-signature",
        "description": "Standard Webhooks: `v1,<base64 HMAC-SHA256>` of "
        "`webhook-id.webhook-timestamp.body` with the endpoint's secret (`whsec_...`, shown "
        "when the endpoint is created or its secret rotated).",
    }
}


def schemas() -> dict[str, Any]:
    """The events' schemas, as the API's answers are documented (serialisation): the post, the
    delivery and the integration are the same components as in the API."""
    _, document = models_json_schema(
        [(model, "serialization") for _, model, _ in CATALOGUE],
        ref_template="#/components/schemas/{model}",
    )
    found: dict[str, Any] = document.get("$defs", {})
    return found


def _receiver(name: str, model: type[BaseModel], summary: str) -> Any:
    async def receive(
        webhook_id: str = Header(description="The event's id (`evt_...`)."),
        webhook_timestamp: str = Header(description="Unix seconds when it was sent."),
        webhook_signature: str = Header(description="`v1,<base64>`, space-separated."),
    ) -> Response:
        return Response(status_code=204)

    receive.__annotations__ = {**receive.__annotations__, "return": Response}
    for header in ("webhook_id", "webhook_timestamp", "webhook_signature"):
        receive.__annotations__[header] = str
    receive.__name__ = "event_" + name.replace(".", "_")
    receive.__doc__ = f"{summary}\n\n{SIGNED}"
    return receive


def install(app: FastAPI) -> None:
    for name, model, summary in CATALOGUE:
        receiver = _receiver(name, model, summary)
        body = {"$ref": f"#/components/schemas/{model.__name__}"}
        app.webhooks.post(
            name,
            operation_id=receiver.__name__,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "security": [{"EventSignature": []}],
            },
            status_code=200,
            response_class=Response,
            responses={200: {"description": "Received (any 2xx)."}},
            tags=["events"],
            summary=summary,
        )(receiver)
