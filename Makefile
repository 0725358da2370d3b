# Two set-up commands: `make run` (the main job, embedded mode) and `make test` (the suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run serve test lint bench-ingest bench-model bench-api clean-state

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/readmit pipeline
	$(BIN)/readmit serve

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench-ingest: install
	$(BIN)/python bench/ingest.py

bench-api: install
	$(BIN)/python bench/api.py

bench-model: install
	$(BIN)/python bench/model_quality.py

clean-state:
	rm -rf .readmit
