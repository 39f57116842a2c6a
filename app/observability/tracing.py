"""OpenTelemetry tracing, an optional extra (``pip install 'mailslot[otel]'``,
``uv sync --extra otel``): FastAPI's requests, SQLAlchemy's statements and httpx's calls.

On only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the extra is installed. ``setup`` then
makes the OpenTelemetry SDK's tracer provider the global one, exporting spans in batches to
that OTLP/HTTP endpoint (the SDK's standard variables apply: ``OTEL_SERVICE_NAME``, default
``mailslot``; ``OTEL_EXPORTER_OTLP_HEADERS``; ``OTEL_TRACES_SAMPLER``...). FastAPI (0.165 and
later) traces each request itself, its dependencies and endpoint included, once a tracer
provider is configured; the SQLAlchemy engine and httpx are instrumented here.

Without the variable, no module of the SDK, of its exporters or of the instrumentations is
imported (FastAPI imports the small OpenTelemetry API itself, and its tracing stays off while
no provider is configured).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from app.config import Settings

logger = logging.getLogger("mailslot.tracing")

_provider: Any = None  # one tracer provider per process


def setup(app: FastAPI, settings: Settings) -> bool:
    """Trace requests, the app's engine and httpx when the endpoint is set; whether it is on."""
    global _provider
    if not settings.otel_exporter_otlp_endpoint:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed (%s): "
            "tracing is off; install mailslot[otel] to turn it on",
            exc,
        )
        return False
    if _provider is None:
        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if resource.attributes.get(SERVICE_NAME, "").startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "mailslot"}))
        _provider = TracerProvider(resource=resource)
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(_provider)
        HTTPXClientInstrumentor().instrument(tracer_provider=_provider)
    # Its declared range stops below SQLAlchemy 2.1, whose engine events it uses unchanged.
    SQLAlchemyInstrumentor().instrument(
        engine=app.state.engine.sync_engine, tracer_provider=_provider, skip_dep_check=True
    )
    logger.info("tracing to %s", settings.otel_exporter_otlp_endpoint)
    return True
