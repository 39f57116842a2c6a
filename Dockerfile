# syntax=docker/dockerfile:1
# mailslot's production image.
#   docker build -t mailslot .
#   docker run --rm --env-file mailslot.env mailslot alembic upgrade head   # release step
#   docker run --env-file mailslot.env -p 8000:8000 mailslot                 # the API
# Migrations are never run at container start: run them once per release, before the new
# containers take traffic.

# ---- builder: a virtual environment with the dependencies, and the sources beside it ----
FROM python:3.11-slim AS builder
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /bin/

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    VIRTUAL_ENV=/app/.venv

WORKDIR /app
RUN uv venv --python python3.11 /app/.venv

# The dependencies first, in a layer of their own that only pyproject.toml invalidates.
# There is no uv.lock yet, so `uv pip install -r pyproject.toml` stands in for
# `uv sync --frozen --no-dev --no-install-project` (the [dev] extra is not installed).
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv pip install -r pyproject.toml

# The application itself runs from /app, its working directory: uvicorn, alembic (configured
# by [tool.alembic] in pyproject.toml) and `python -m app` import the `app` package from there.
COPY pyproject.toml ./
COPY migrations ./migrations
COPY app ./app
RUN python -m compileall -q app migrations

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
