"""Our own failures: which errors are the infrastructure's (answer 503, the provider retries),
and the ``failed`` deliveries that record a bug's mail for replay (answer 500)."""

from __future__ import annotations

import errno
import logging
import traceback
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.blobs.store import BlobStore
from app.inbound import content
from app.inbound.decide import Route, addresses, dedupe_key
from app.inbound.errors import InfrastructureFailure
from app.inbound.model import InboundEmail
from app.inbound.rows import DeliveryRow, TokenRow, delivery_row
from app.inbound.writer import Writer
from app.models import DeliveryStatus

logger = logging.getLogger("mailslot.inbound")

ERROR_TEXT_LIMIT = 4000


def is_infrastructure_error(exc: BaseException) -> bool:
    if isinstance(exc, InfrastructureFailure):
        return True
    if isinstance(exc, OSError) and exc.errno in {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EIO,
        errno.EROFS,
    }:
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError | ConnectionError
    ):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, OSError | ConnectionError):
        return True
    name = type(exc).__module__ + "." + type(exc).__name__
    if name.startswith("asyncpg.") and (
        "Connection" in type(exc).__name__ or "CannotConnectNow" in type(exc).__name__
    ):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_infrastructure_error(cause)


async def log_for_each_route(
    writer: Writer, email: InboundEmail, key: str | None, **values: Any
) -> list[DeliveryRow]:
    """Write one delivery of ``email`` per integration at its recipients (deleted ones too), or
    one unrouted delivery: how a mail that is not processed (unreadable, or our bug) is logged."""
    targets: list[Route | None] = list(await writer.routes(addresses(email))) or [None]
    deliveries = [
        delivery_row(
            email,
            key,
            platform_id=route.platform_id if route else None,
            integration_id=route.id if route else None,
            address=route.address if route else None,
            **values,
        )
        for route in targets
    ]
    await writer.add_deliveries(deliveries)
    return deliveries


async def record_failure(
    sessionmaker: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
    email: InboundEmail,
    exc: Exception,
) -> list[DeliveryRow]:
    """Our bug: the work was rolled back; record ``failed`` with the content, for replay, in a
    transaction of its own. Raises ``InfrastructureFailure`` when even that fails."""
    error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:ERROR_TEXT_LIMIT]
    key = dedupe_key(email)
    try:
        kept = await content.keep(email, blobs)
        async with sessionmaker.begin() as session:
            writer = Writer(session)
            deliveries = await log_for_each_route(
                writer,
                email,
                key,
                status=DeliveryStatus.failed,
                error=error,
                content_sha256=kept,
            )
            if email.event_id:
                await writer.claim_token(TokenRow(email.provider, email.event_id, deliveries[0].id))
    except Exception as second:
        logger.exception("recording a failed delivery failed too")
        raise InfrastructureFailure(str(second)) from second
    return deliveries
