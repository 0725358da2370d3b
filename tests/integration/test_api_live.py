"""The API as a real process against real MLflow servers: hot reload, and MLflow going away."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from readmit import registry
from readmit.serving.schemas import EXAMPLE
from readmit.settings import Settings
from readmit.stack.foreground import free_port, start_api
from tests.models import MODEL_INPUTS, log_and_register
from tests.services import start_mlflow_server


def _api_env(settings: Settings, tracking_uri: str, model_name: str, port: int) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "READMIT_MODEL_NAME": model_name,
        "READMIT_MODEL_POLL_SECONDS": "1",
        "READMIT_API_PORT": str(port),
        "READMIT_DATA_DIR": str(settings.data_dir),
    }


class Traffic:
    """Sends /predict in a loop and records every status and served version."""

    def __init__(self, url: str) -> None:
        self.url, self.statuses, self.versions = url, Counter(), []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                response = client.post(f"{self.url}/predict", json=EXAMPLE)
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    self.versions.append(response.json()["model"]["version"])

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_promoted_version_is_swapped_in_under_traffic_without_failed_requests(
    mlflow_server, small_data, lightgbm_model, tmp_path
):
    settings = Settings(
        data_dir=tmp_path,
        mlflow_tracking_uri=mlflow_server.tracking_uri,
        model_name="readmission_live",
        api_port=free_port(),
    )
    inputs = small_data.test_inputs[MODEL_INPUTS]
    first = log_and_register(settings, lightgbm_model, inputs)
    registry.promote(settings, first)
    api = start_api(
        settings,
        tmp_path / "api.log",
        _api_env(settings, mlflow_server.tracking_uri, "readmission_live", settings.api_port),
    )
    try:
        assert httpx.get(f"{api.url}/health").json()["model"]["version"] == first
        second = log_and_register(settings, lightgbm_model, inputs)
        with Traffic(api.url) as traffic:
            time.sleep(1)
            registry.promote(settings, second)
            # A bound against hanging only; how fast the switch is, bench/reload.py measures.
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and (
                not traffic.versions or traffic.versions[-1] != second
            ):
                time.sleep(0.1)
            served_second = len(traffic.versions)
            while len(traffic.versions) < served_second + 20 and time.monotonic() < deadline:
                time.sleep(0.1)  # some answers after the switch, to see it does not go back
        assert set(traffic.statuses) == {200}, traffic.statuses
        assert traffic.versions[0] == first and traffic.versions[-1] == second, "no switch"
        flips = sum(
            1 for a, b in zip(traffic.versions, traffic.versions[1:], strict=False) if a != b
        )
        assert flips == 1  # one atomic swap, never back
        assert httpx.get(f"{api.url}/health").json()["model"]["version"] == second
    finally:
        api.stop()
    assert api.process.poll() is not None


def test_the_api_keeps_answering_when_mlflow_stops(small_data, lightgbm_model, tmp_path):
    settings = Settings(
        data_dir=tmp_path, mlflow_port=free_port(), api_port=free_port(), model_name="readmission"
    )
    mlflow = start_mlflow_server(settings, tmp_path / "mlflow.log")
    tracking = settings.model_copy(update={"mlflow_tracking_uri": mlflow.url})
    try:
        registry.promote(
            tracking,
            log_and_register(tracking, lightgbm_model, small_data.test_inputs[MODEL_INPUTS]),
        )
        api = start_api(
            settings,
            tmp_path / "api.log",
            _api_env(settings, mlflow.url, "readmission", settings.api_port),
        )
    except Exception:
        mlflow.stop()
        raise
    try:
        mlflow.stop()
        with Traffic(api.url) as traffic:
            deadline = time.monotonic() + 120  # a bound against hanging only
            while not _says_resolve_failed(api.url) and time.monotonic() < deadline:
                time.sleep(0.5)  # traffic goes on while polls fail
            time.sleep(3)  # and on through a few more failed polls
        assert set(traffic.statuses) == {200} and traffic.statuses[200] > 0
        health = httpx.get(f"{api.url}/health", timeout=30).json()
        assert health["ready"] and "resolve failed" in health["detail"]
    finally:
        api.stop()
        mlflow.stop()


def _says_resolve_failed(url: str) -> bool:
    health = httpx.get(f"{url}/health", timeout=30).json()
    return "resolve failed" in (health.get("detail") or "")


@pytest.fixture(autouse=True)
def _fast_fail_http(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
