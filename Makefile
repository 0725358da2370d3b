# Two set-up commands: `make run` (the main job, embedded mode) and `make test` (the suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The stack's S3 server (node): its packages as pinned in s3server/package-lock.json.
S3SERVER_STAMP := s3server/node_modules/.installed-stamp

.PHONY: install s3server-deps run ui stack-up stack-down test lint loadtest bench-ingest bench-model bench-api bench-s3 clean-state

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq -r requirements.lock
	$(BIN)/pip install -qq --no-deps -e .
	touch $(STAMP)

$(S3SERVER_STAMP): s3server/package.json s3server/package-lock.json
	npm ci --prefix s3server --no-audit --no-fund --loglevel=error
	touch $(S3SERVER_STAMP)

install: $(STAMP)

s3server-deps: $(S3SERVER_STAMP)

# The main job, then the API (foreground) with the UI beside it; Ctrl-C stops both.
run: install
	$(BIN)/readmit pipeline
	$(BIN)/readmit ui & ui=$$!; trap 'kill $$ui 2>/dev/null' EXIT INT TERM; $(BIN)/readmit serve

ui: install
	$(BIN)/readmit ui

# The full stack on this machine (PostgreSQL, S3, MLflow, Airflow, API, UI, Prometheus).
stack-up: install s3server-deps
	$(BIN)/readmit stack up

stack-down: install
	$(BIN)/readmit stack down

test: install s3server-deps
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench-ingest: install
	$(BIN)/python bench/ingest.py

# A short Locust run against a running API (URL, USERS, SECONDS); fails when SLOs are missed.
URL ?= http://127.0.0.1:8000
USERS ?= 20
SECONDS ?= 30
loadtest: install
	$(BIN)/readmit loadtest --url $(URL) --users $(USERS) --seconds $(SECONDS)

bench-api: install
	$(BIN)/python bench/api.py

bench-model: install
	$(BIN)/python bench/model_quality.py

bench-s3: install s3server-deps
	$(BIN)/python bench/s3_store.py

clean-state:
	rm -rf .readmit
