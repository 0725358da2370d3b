"""Helpers of the monitoring tests: the API with a given monitor-db, and what it stored."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from readmit.serving.app import create_app
from readmit.settings import Settings
from readmit.storage import monitor

# A patient number whose digits occur in no other logged value, so a search for it in stored
# bytes is meaningful; the pseudonym key the tests use.
PATIENT = 918273645546372
KEY = "first-test-key"


def api_settings(base: Settings, folder: Path, url: str, **changes: object) -> Settings:
    update = {
        "data_dir": folder,
        "monitor_db_url": url,
        "pseudonym_key": KEY,
        "prediction_log_flush_seconds": 0.05,
        "prediction_log_retry_seconds": 0.1,
    }
    return base.model_validate({**base.model_dump(), **update, **changes})


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[TestClient]:
    """The API for the duration of the block; leaving it flushes the prediction log."""
    with TestClient(create_app(settings)) as client:
        yield client


def window(url: str) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        return monitor.read_window(engine).to_dict("records")
    finally:
        engine.dispose()


def metric(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, name
    return float(found.group(1))


def wait_until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def record_a_monitoring_run(settings: Settings) -> None:
    """A stored monitoring run that judged drift and live performance, and a champion-challenger
    comparison, so the exporter has monitor and comparison gauges to export (they exist only
    once such runs do). Their figures are fixed here: tests of the runs themselves are in
    tests/integration/test_monitor.py and test_compare.py."""
    column = {"method": "psi", "threshold": 0.1, "score": 0.02, "drifted": False}
    figures = {
        "drift": {
            "drift_share": 0.0,
            "drifted_features": [],
            "prediction_drift": {**column, "method": "wasserstein"},
            "features": {"age": column},
        },
        "performance": {"roc_auc": 0.66, "roc_auc_ci_low": 0.62, "roc_auc_ci_high": 0.7},
        "reasons": [],
    }
    engine = monitor.monitor_engine(settings)
    monitor.ensure_tables(engine)
    with engine.begin() as conn:
        monitor.insert_run(
            conn,
            {
                "run_at": datetime.now(UTC),
                "window_since": None,
                "window_limit": 5000,
                "first_scored_at": None,
                "last_scored_at": None,
                "model_name": "readmission",
                "model_version": "1",
                "rows": 600,
                "labelled_rows": 600,
                "verdict": "ok",
                "figures": figures,
                "mlflow_run_id": None,
            },
        )
        arm = {"model_name": "readmission", "labelled": 1200, "positives": 130}
        monitor.insert_comparison(
            conn,
            {
                "run_at": datetime.now(UTC),
                "window_since": None,
                "mode": "shadow",
                "champion_version": "1",
                "challenger_version": "2",
                "labelled": 1200,
                "decision": "keep",
                "applied": False,
                "figures": {
                    "champion": {
                        **arm,
                        "variant": "champion",
                        "model_version": "1",
                        "roc_auc": 0.66,
                        "brier": 0.095,
                    },
                    "challenger": {
                        **arm,
                        "variant": "challenger",
                        "model_version": "2",
                        "roc_auc": 0.67,
                        "brier": 0.094,
                    },
                    "auc_difference": 0.01,
                    "ci_low": -0.004,
                    "ci_high": 0.024,
                },
            },
        )
    engine.dispose()
