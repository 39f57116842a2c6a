"""Observability wired into an application (``create_app`` calls ``install`` once)."""

from __future__ import annotations

from fastapi import FastAPI

from app.api.request_id import RequestContext
from app.observability import metrics, tracing
from app.observability.blobs import metered


def install(app: FastAPI) -> None:
    """Observe ``app`` (its settings, engine and blob store on ``app.state``): call after every
    other middleware is added, so that the request context is the outermost."""
    settings = app.state.settings
    metrics.setup(settings)
    metrics.instrument_engine(app.state.engine)
    app.state.blobs = metered(app.state.blobs)
    app.add_middleware(RequestContext)
    tracing.setup(app, settings)
