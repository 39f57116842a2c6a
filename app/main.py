"""The ASGI application: ``app.main:app``."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from sqlalchemy.ext.asyncio import async_sessionmaker

from app import __version__
from app.api.body_limit import BodyLimit
from app.api.headers import SecurityHeaders
from app.api.health import router as health_router
from app.api.index import router as index_router
from app.api.openapi import install as install_openapi
from app.api.problems import install_problem_handlers
from app.api.router import api_router, inbound_router
from app.blobs.factory import create_blob_store
from app.blobs.store import LocalBlobStore
from app.config import Settings, get_settings
from app.db.engine import create_engine
from app.events.dispatcher import Dispatcher
from app.events.openapi import install as install_event_catalogue
from app.logging import configure as configure_logging
from app.observability.setup import install as install_observability

logger = logging.getLogger("mailslot")

# Temporary files older than this at start-up belong to no request in flight (any worker's).
SPOOL_LEFTOVER_SECONDS = 15 * 60


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_format)  # uvicorn has configured its loggers by now
    engine = create_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        spool = LocalBlobStore(settings.blob_dir)  # request bodies, whichever the blob store
        swept = await asyncio.to_thread(spool.sweep_tmp, SPOOL_LEFTOVER_SECONDS)
        if swept:
            logger.info("removed %d temporary leftovers from %s", swept, spool.tmp_dir)
        await app.state.blobs.start()  # one client per process (S3), closed at shutdown
        if settings.uses_development_defaults:
            logger.warning(
                "running in %s with local defaults for %s; never use these in production",
                settings.environment,
                ", ".join(settings.uses_development_defaults),
            )
        # What start-up made (modules, routes, the models' metadata) lives as long as the
        # process: kept out of the collector's scans, so that a full collection under load
        # does not walk it again and again (a pause on every request in flight).
        if not gc.get_freeze_count():  # once per process
            gc.collect()
            gc.freeze()
        if settings.events_dispatcher:
            app.state.events.start()  # one dispatcher per process (app/events/dispatcher.py)
        try:
            yield
        finally:
            await app.state.events.stop()
            await app.state.blobs.close()
            await engine.dispose()

    options: dict[str, Any] = {
        "title": "mailslot",
        "version": __version__,
        "description": "Turns email into posts in the groups of a team-collaboration platform.",
        "generate_unique_id_function": _operation_id,
        "redirect_slashes": False,
        "lifespan": lifespan,
        # FastAPI's own OpenTelemetry: tracing only when app.observability.tracing exports it
        # (metrics are Prometheus's, logs our JSON lines). Off, a request skips its probes of
        # the global providers.
        "telemetry": {
            "tracing": bool(settings.otel_exporter_otlp_endpoint),
            "metrics": False,
            "logs": False,
        },
    }
    if settings.docs_enabled:
        # /docs and /redoc load Swagger UI and ReDoc from the app itself (the fastapi-offline
        # package ships them, under /static-offline-docs), not from a CDN: they work offline.
        app = FastAPIOffline(**options)
    else:  # production's default: the committed openapi/openapi.json is the reference
        app = FastAPI(**options, docs_url=None, redoc_url=None, openapi_url=None)
    own_routes = list(app.router.routes)  # /openapi.json and, when enabled, the docs pages
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    app.state.blobs = create_blob_store(settings)
    app.state.events = Dispatcher(app.state.sessionmaker, settings)
    install_problem_handlers(app)
    app.add_middleware(  # innermost: CORS and security headers apply to its 413 too
        BodyLimit,
        api_limit=settings.max_api_body_bytes,
        inbound_limit=settings.max_request_bytes,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(SecurityHeaders)  # added last: outermost, so CORS answers carry it too
    install_observability(app)  # metrics, X-Request-ID (outermost), the blob store's errors
    app.include_router(inbound_router)  # matched first: the endpoints that take the bursts
    app.include_router(index_router)
    app.include_router(health_router)
    app.include_router(api_router)
    # Matched last: /openapi.json and the docs pages.
    app.router.routes[:] = [r for r in app.router.routes if r not in own_routes] + own_routes
    install_event_catalogue(app)
    install_openapi(app)
    return app


def __getattr__(name: str) -> Any:
    """``app.main:app`` is built on first access, so importing this module reads no settings."""
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
