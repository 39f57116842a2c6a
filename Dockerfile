# syntax=docker/dockerfile:1
# mailslot's production image.
#   docker build -t mailslot .
#   docker run --rm --env-file mailslot.env mailslot alembic upgrade head   # release step
#   docker run --env-file mailslot.env -p 8000:8000 mailslot                 # the API
# Migrations are never run at container start: run them once per release, before the new
# containers take traffic.

# ---- builder: a virtual environment with the dependencies, and the sources beside it ----
FROM python:3.11-slim AS builder
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# The dependencies first, exactly as uv.lock pins them, in a layer of their own that only
# pyproject.toml and uv.lock invalidate (the [dev] extra is not installed).
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    uv sync --frozen --no-dev --no-install-project --python python3.11

# The application itself runs from /app, its working directory: uvicorn, alembic (configured
# by [tool.alembic] in pyproject.toml) and `python -m app` import the `app` package from there.
COPY pyproject.toml uv.lock README.md ./
COPY migrations ./migrations
COPY app ./app
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --python python3.11 && \
    python -m compileall -q app migrations

# ---- runtime ----
FROM python:3.11-slim

RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app

COPY --from=builder --chown=app:app /app /app

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1

WORKDIR /app
USER app
EXPOSE 8000

# Behind a reverse proxy, set FORWARDED_ALLOW_IPS to its address so that --proxy-headers
# trusts its X-Forwarded-* headers (uvicorn trusts only 127.0.0.1 by default).
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--timeout-graceful-shutdown", "30"]
