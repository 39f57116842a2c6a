"""What operators see of the service: one log line per inbound request, Prometheus metrics, and
optional OpenTelemetry tracing.

- ``context``: the request being served (its id, its timing, what the inbound router made of it),
  set by ``app.api.request_id.RequestContext`` for every HTTP request;
- ``inbound``: the one place an inbound request is observed once answered (its log line and its
  metrics);
- ``metrics``: the metrics (prometheus-client, multiprocess mode) and their directory;
- ``blobs``: the blob store's errors, counted around any store;
- ``tracing``: OpenTelemetry, only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the ``otel``
  extra is installed (nothing of it is imported otherwise);
- ``setup``: ``install(app)``, which ``create_app`` calls.

The log formats (JSON lines or text) and the redaction every line goes through are
``app.logging``'s.
"""
