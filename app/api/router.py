"""Every router of the service."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import JsonBodyOnly
from app.api.metrics import router as metrics_router
from app.deliveries.router import router as deliveries_router
from app.events.router import router as events_router
from app.groups.router import router as groups_router
from app.inbound.router import router as inbound_router
from app.integrations.router import router as integrations_router
from app.platforms.router import operator_router
from app.platforms.router import router as platform_router
from app.posts.router import attachments_router
from app.posts.router import router as posts_router

# The inbound endpoints, which take the bursts, are matched first, at the application's own
# level (app.main): each level of included routers costs a request a walk of its routes. They
# read their provider's own format from the raw stream; every other body is JSON (else 415).
__all__ = ["api_router", "inbound_router"]

api_router = APIRouter()
for router in (
    operator_router,
    platform_router,
    groups_router,
    integrations_router,
    posts_router,
    attachments_router,
    deliveries_router,
    events_router,
):
    api_router.include_router(router, dependencies=[JsonBodyOnly])
api_router.include_router(metrics_router)
