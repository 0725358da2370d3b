"""One small real stack per test session: a model trained by the real pipeline on the first
rows of the data set, registered in a temporary MLflow, and `readmit serve` on a free port.

Both tests/ui and tests/e2e use it; it is built once however many conftests ask for it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from readmit.dataset import Dataset
from readmit.settings import Settings
from readmit.stack.foreground import Service, free_port, start_api

ROWS = 24_000
# Importing the API (MLflow, pandas, FastAPI) on a busy 2-core machine can take over a minute.
API_START_SECONDS = 240


@dataclass
class Stack:
    """The served API and what a UI process needs to reach it and its MLflow."""

    settings: Settings
    api: Service
    env: dict[str, str]
    folder: Path

    @property
    def api_url(self) -> str:
        return self.api.url


_built: list[Stack] = []


def shared_stack(full_dataset: Dataset, factory: pytest.TempPathFactory) -> Stack:
    """The session's stack, built on first use."""
    if _built and _built[0].api.process.poll() is None:
        return _built[0]
    _built.clear()
    _built.append(_build(full_dataset, factory))
    return _built[0]


def stop_stack() -> None:
    """Stop the API process; safe to call more than once."""
    for stack in _built:
        stack.api.stop()
    _built.clear()


def _build(full_dataset: Dataset, factory: pytest.TempPathFactory) -> Stack:
    from readmit.pipeline.clean import build_clean
    from readmit.pipeline.ingest import ingest
    from readmit.pipeline.train import train

    folder = factory.mktemp("ui-stack")
    sample = Dataset(full_dataset.frame.head(ROWS), full_dataset.sha256, full_dataset.source)
    settings = Settings(
        data_dir=folder,
        batch_size=ROWS,
        dataset_uri=full_dataset.source,
        mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db",
        api_port=free_port(),
        model_poll_seconds=3600,
    )
    ingest(settings, all_batches=True, dataset=sample)
    build_clean(settings)
    train(settings, max_rounds=30, bootstrap_rounds=20)
    env = {
        "READMIT_DATA_DIR": str(folder),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_API_PORT": str(settings.api_port),
        "READMIT_MODEL_POLL_SECONDS": "3600",
    }
    api = start_api(settings, folder / "api.log", env, timeout=API_START_SECONDS)
    try:
        _wait_ready(api.url)
    except Exception:
        api.stop()
        raise
    return Stack(settings=settings, api=api, env=env, folder=folder)


def _wait_ready(url: str, timeout: float = 120) -> None:
    """`start_api` returns once the process answers; the model may still be loading."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/health", timeout=5).json().get("ready"):
            return
        time.sleep(0.3)
    raise TimeoutError(f"the API at {url} loaded no model within {timeout:.0f} s")


def artifacts_dir(default: Path) -> Path:
    """Where screenshots are kept: READMIT_TEST_ARTIFACTS, else the given folder."""
    folder = Path(os.environ.get("READMIT_TEST_ARTIFACTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
