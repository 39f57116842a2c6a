# mailslot: `make run` serves the API locally; `make test` runs the suite on PostgreSQL and SQLite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run migrate migration fmt lint test test-pg test-sqlite reliability openapi openapi-check check clean bench

help:
	@echo "make run          serve the API on http://$(HOST):$(PORT) (SQLite under ./var, no other service)"
	@echo "make test         the whole suite on PostgreSQL, then on SQLite"
	@echo "make test-pg | test-sqlite | lint | fmt | migrate | openapi | openapi-check"

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "mailslot needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	MAILSLOT_ENVIRONMENT=$${MAILSLOT_ENVIRONMENT:-development} $(BIN)/alembic upgrade head

run: migrate
	MAILSLOT_ENVIRONMENT=$${MAILSLOT_ENVIRONMENT:-development} $(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT) --reload --reload-dir app

migration: $(STAMP)
	MAILSLOT_ENVIRONMENT=development $(BIN)/alembic revision --autogenerate -m "$(m)"

fmt: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

lint: $(STAMP)
	$(BIN)/ruff format --check . && $(BIN)/ruff check . && $(BIN)/mypy app tests

# Both databases at once (each run's output printed whole when it ends).
test: $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target test-pg test-sqlite

test-pg: $(STAMP)
	TEST_DATABASE=postgresql $(BIN)/pytest --ignore=tests/reliability $(PYTEST_ARGS)

test-sqlite: $(STAMP)
	TEST_DATABASE=sqlite $(BIN)/pytest --ignore=tests/reliability $(PYTEST_ARGS)

reliability: $(STAMP)
	$(BIN)/pytest tests/reliability $(PYTEST_ARGS)

openapi: $(STAMP)
	$(BIN)/python -m app openapi --output openapi/openapi.json

openapi-check: $(STAMP)
	$(BIN)/python -m app openapi --check openapi/openapi.json

check: lint test openapi-check

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info

# The inbound benchmark (needs wrk: apt-get install -y wrk); see docs/performance.md.
bench: $(STAMP)
	$(BIN)/python -m bench
