"""``GET /metrics``: every worker's metrics in the Prometheus text format
(``app.observability.metrics``).

Not for the public internet: it asks for the operator token (``Authorization: Bearer``) unless
``METRICS_ACCESS=open`` (for a scraper on a private network that the proxy keeps the path
from).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import OperatorCredentials, SettingsDep, operator
from app.api.problems import responses
from app.observability.metrics import render

router = APIRouter(tags=["operator"])

_EXAMPLE = (
    "# HELP mailslot_inbound_requests_total Inbound webhook requests answered, by provider and"
    " answer status code.\n"
    "# TYPE mailslot_inbound_requests_total counter\n"
    'mailslot_inbound_requests_total{code="200",provider="mailgun"} 1042.0\n'
)


@router.get(
    "/metrics",
    status_code=200,
    response_class=Response,
    responses={
        200: {
            "description": "The metrics, summed over the server's workers.",
            "content": {"text/plain": {"schema": {"type": "string"}, "example": _EXAMPLE}},
        },
        **responses(401),
    },
)
async def get_metrics(credentials: OperatorCredentials, settings: SettingsDep) -> Response:
    """Prometheus metrics of every worker of this server (operator token, unless
    `METRICS_ACCESS=open`)."""
    if settings.metrics_access == "operator":
        await operator(credentials, settings)
    return Response(await asyncio.to_thread(render), media_type=CONTENT_TYPE_LATEST)
