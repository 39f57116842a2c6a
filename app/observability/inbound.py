"""An inbound request, observed as it is answered: its one log line and its metrics.

``app.api.request_id`` calls ``observe`` when the answer of an ``/inbound/`` request starts (or
at the request's end, when none was sent), so that a provider holding its answer finds it
counted. The router (``app.inbound.router``) has recorded on the request's ``RequestRecord``
what became of it: the provider, the answer's ``status`` and ``reason``, and the delivery
outcomes (one per integration the mail reached). A request the endpoint never saw (the body
cap's 413, a 404 or 405 of the routing) is observed all the same, with the provider its path
names.

The line (logger ``mailslot.inbound.request``, INFO) replaces uvicorn's access line for these
paths (``app.logging`` drops that one): one line per request, with ``request_id``, ``provider``,
``status`` (the answer's code), ``outcome`` and ``reason``, ``delivery_ids``, ``post_ids``,
``integration_ids``, ``platform_ids``, ``bytes`` (of the request body read), ``duration_ms``,
``db_ms`` (time in database statements), ``client``, ``method`` and ``path`` (never the query
string, which names the recipient).
"""

from __future__ import annotations

import logging
import time

from app.logging import FIELDS
from app.observability import metrics
from app.observability.context import RequestRecord

INBOUND_PREFIX = "/inbound/"
logger = logging.getLogger("mailslot.inbound.request")

# What a problem answer (no JSON outcome of ours) says, by status code.
_PROBLEM_OUTCOMES = {
    401: "unauthenticated",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    500: "internal_error",
}
_providers: dict[str, str] = {}


def provider_of(path: str) -> str:
    """The provider an ``/inbound/`` path belongs to; ``unknown`` for a path of none."""
    if not _providers:
        from app.inbound.providers import PROVIDERS  # the registry imports the inbound package

        _providers.update({"/inbound" + p.path: p.name for p in PROVIDERS})
    return _providers.get(path, "unknown")


def observe(record: RequestRecord) -> None:
    """Log and count an answered inbound request."""
    seconds = time.perf_counter() - record.started
    status = record.status or 500  # no answer started: the server answers 500
    provider = record.provider or provider_of(record.path)
    outcome = record.outcome or _PROBLEM_OUTCOMES.get(status, "error")
    outcomes = record.outcomes
    metrics.inbound(provider, status, seconds, outcome, outcomes)
    if not logger.isEnabledFor(logging.INFO):
        return
    fields = {
        "request_id": record.request_id,
        "provider": provider,
        "status": status,
        "outcome": outcome,
        "reason": record.reason,
        "delivery_ids": [str(o.delivery_id) for o in outcomes if o.delivery_id],
        "post_ids": [str(o.post_id) for o in outcomes if o.post_id],
        "integration_ids": [str(o.integration_id) for o in outcomes if o.integration_id],
        "platform_ids": list(dict.fromkeys(o.platform_id for o in outcomes if o.platform_id)),
        "bytes": record.bytes_received,
        "duration_ms": round(seconds * 1000, 2),
        "db_ms": round(record.database_seconds * 1000, 2),
        "client": record.client,
        "method": record.method,
        "path": record.path,
    }
    message = f"{record.method} {record.path} {status} {outcome}"
    # Made and handled as Logger.info would, less its search of the caller's frame (nothing
    # shows where a line was written).
    logger.handle(
        logger.makeRecord(
            logger.name, logging.INFO, "", 0, message, (), None, extra={FIELDS: fields}
        )
    )
