"""`readmit serve` with two workers, as a real process: both serve (rounds of requests until each
has answered), /metrics adds them up, /health counts the workers serving each version, one POST
/reload-model swaps a promoted version into every worker, a killed worker is replaced, every
scored record is logged once."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from readmit import registry
from readmit.settings import Settings
from readmit.stack.foreground import free_port, start_api
from tests.models import MODEL_INPUTS, log_and_register, records
from tests.monitoring import window

WAIT = 300.0  # a bound against hanging only
ROUND = 30  # requests sent at once until both workers have answered
MOST_ROUNDS = 20
MORE = 20
ADMIN_KEY = "admin-key-for-the-workers-test"


def _log_lines(path) -> list[dict]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def _metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{url}/metrics").text
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    found = [float(v) for v in re.findall(pattern, text, re.MULTILINE)]
    assert len(found) == 1, (name, labels, [s for s in text.splitlines() if name in s])
    return found[0]


def _send(url: str, payloads: list[dict]) -> list[int]:
    with ThreadPoolExecutor(6) as pool:  # a new connection per request
        return list(pool.map(lambda p: httpx.post(f"{url}/predict", json=p).status_code, payloads))


def _served_by(log) -> list[int]:
    """The pid of the worker behind each /predict answered so far."""
    return [
        line["pid"]
        for line in _log_lines(log)
        if line.get("msg") == "request" and line.get("endpoint") == "/predict"
    ]


def _loaded_by(log) -> set[int]:
    """The pids of the workers that logged loading a model."""
    return {line["pid"] for line in _log_lines(log) if line.get("msg") == "model loaded"}


def test_two_workers_serve_add_up_in_metrics_log_once_and_all_take_a_promotion(
    small_data, lightgbm_model, tmp_path
):
    settings = Settings(
        data_dir=tmp_path,
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        api_port=free_port(),
    )
    inputs = small_data.test_inputs[MODEL_INPUTS]
    first = log_and_register(settings, lightgbm_model, inputs)
    registry.promote(settings, first)
    env = {
        "READMIT_API_WORKERS": "2",
        "READMIT_DATA_DIR": str(tmp_path),
        "READMIT_MLFLOW_TRACKING_URI": str(settings.mlflow_tracking_uri),
        "READMIT_API_PORT": str(settings.api_port),
        # Polling off (an hour): only /reload-model can bring the promoted version in.
        "READMIT_MODEL_POLL_SECONDS": "3600",
        "READMIT_API_KEY": ADMIN_KEY,
        "READMIT_PREDICTION_LOG_FLUSH_SECONDS": "0.2",
    }
    log = tmp_path / "api.log"
    api = start_api(settings, log, env, timeout=WAIT)
    try:
        payloads = [
            {**r, "encounter_id": 700_000 + i, "patient_nbr": 800_000 + i}
            for i, r in enumerate(records(inputs.head(ROUND * MOST_ROUNDS + MORE)))
        ]
        assert len(payloads) == ROUND * MOST_ROUNDS + MORE  # the last MORE are never in a round
        # The kernel hands each connection to whichever worker accepts first, so a small burst
        # may all land on one: send rounds until both have answered (20 rounds is the bound).
        sent = 0
        while len(set(_served_by(log))) < 2:
            assert sent < ROUND * MOST_ROUNDS, "one worker answered every request"
            assert _send(api.url, payloads[sent : sent + ROUND]) == [200] * ROUND
            sent += ROUND
        assert len(_served_by(log)) == sent
        assert httpx.get(f"{api.url}/health").json()["workers"] == {first: 2}
        payloads = payloads[:sent] + payloads[-MORE:]
        total = '{endpoint="/predict",method="POST",status="200"}'
        assert _metric(api.url, "readmit_http_requests_total", total) == sent
        assert (
            _metric(api.url, "readmit_http_request_duration_seconds_count", '{endpoint="/predict"}')
            == sent
        )
        assert _metric(api.url, "readmit_model_loaded") == 1.0

        second = log_and_register(settings, lightgbm_model, inputs)
        registry.promote(settings, second)
        headers = {"X-API-Key": ADMIN_KEY}
        reply = httpx.post(f"{api.url}/reload-model", headers=headers, timeout=WAIT)
        assert reply.status_code == 200, reply.text
        assert reply.json()["changed"] is True
        assert reply.json()["detail"].endswith("2 of 2 workers checked @production")
        # Both workers had swapped before the answer: one of them only through the signal.
        loaded = {
            line["pid"]
            for line in _log_lines(log)
            if line.get("msg") == "model loaded" and line.get("model_version") == second
        }
        assert len(loaded) == 2
        deadline = time.monotonic() + WAIT
        versions = {httpx.get(f"{api.url}/health").json()["model"]["version"] for _ in range(20)}
        assert versions == {second}
        assert httpx.get(f"{api.url}/health").json()["workers"] == {second: 2}
        now = f'{{name="readmission",version="{second}"}}'
        assert _metric(api.url, "readmit_model_info", now) == 1.0
        assert _metric(api.url, "readmit_model_reloads_total") == 4  # two loads in each worker

        victim = min(loaded)
        os.kill(victim, signal.SIGKILL)
        while len(_loaded_by(log)) < 3:  # the replacement has loaded the model
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.2)
        while (health := httpx.get(f"{api.url}/health")).status_code != 200:
            assert time.monotonic() < deadline, health.text  # ready once it has published
            time.sleep(0.2)
        assert health.json()["workers"] == {second: 2}  # the dead worker's entry is gone
        assert _send(api.url, payloads[sent:]) == [200] * MORE
        assert _metric(api.url, "readmit_http_requests_total", total) == sent + MORE
        assert _metric(api.url, "readmit_model_loaded") == 1.0
        exited = [line for line in _log_lines(log) if "exited" in line.get("msg", "")]
        assert len(exited) == 1 and str(victim) in exited[0]["msg"]
    finally:
        api.stop()
    assert api.process.returncode is not None
    logged = window(settings.resolved_monitor_db_url)
    assert sorted(row["encounter_id"] for row in logged) == [p["encounter_id"] for p in payloads]
