"""The UI's tests run against a real API process serving a small model trained by the real
pipeline (see `tests.ui.stack`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ui.stack import Stack, shared_stack, stop_stack


@pytest.fixture(scope="session")
def stack(full_dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield shared_stack(full_dataset, tmp_path_factory)
    stop_stack()


@pytest.fixture
def ui_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The UI pointed at the stack: its API and the MLflow store the API loads models from."""
    monkeypatch.setenv("READMIT_API_URL", stack.api_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.env["MLFLOW_TRACKING_URI"])
    monkeypatch.delenv("READMIT_PROMETHEUS_URL", raising=False)
    return stack
