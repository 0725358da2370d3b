"""Monitoring runs over a real prediction log (PostgreSQL and SQLite), against the reference
stored with the model's run on a real MLflow server (PostgreSQL store, S3 artifacts): steady
traffic is ok, a shifted field is drift naming that field, live performance matches an
independent computation, and every run is recorded, logged to MLflow and exported to
Prometheus. Runs that need no drift raise READMIT_MONITOR_MIN_ROWS past the window, so
Evidently runs only where drift is the point."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest
from sklearn.metrics import brier_score_loss, roc_auc_score
from typer.testing import CliRunner

from readmit import registry
from readmit.cli import app
from readmit.exporter import registry_for
from readmit.model import ReadmissionModel
from readmit.monitoring.monitor import MonitorWindow, run_monitor
from readmit.monitoring.outcomes import record_outcomes
from readmit.monitoring.prediction_log import Scored
from readmit.monitoring.reference import log_reference
from readmit.settings import Settings
from readmit.stack.foreground import free_port
from readmit.storage import monitor
from readmit.tracking import configure, log_model
from tests.models import MODEL_INPUTS, records

WINDOW = 2_000
NO_DRIFT = {"monitor_min_rows": 100_000}  # drift not judged: a run without Evidently
KEY = b"monitor-test-key"


@dataclass
class Monitored:
    """A registered version whose run holds its monitoring reference, and the test split."""

    settings: Settings
    model: ReadmissionModel
    version: str
    inputs: pd.DataFrame  # test-split inputs with encounter_id and patient_nbr
    labels: np.ndarray


@pytest.fixture(scope="module")
def monitored(
    mlflow_server, small_build, small_data, lightgbm_model, tmp_path_factory
) -> Monitored:
    folder = tmp_path_factory.mktemp("monitored")
    settings = small_build.settings.model_copy(
        update={
            "data_dir": folder,
            "raw_db_url": small_build.settings.resolved_raw_db_url,
            "clean_db_url": small_build.settings.resolved_clean_db_url,
            **mlflow_server.client_settings,
            "model_name": "readmission_monitored",
            "monitor_min_rows": 500,
            "monitor_min_labelled_rows": 300,
        }
    )
    inputs = small_data.test_inputs
    version = _register_with_reference(settings, lightgbm_model, small_data)
    return Monitored(settings, lightgbm_model, version, inputs, small_data.labels("test"))


def _register_with_reference(settings: Settings, model: ReadmissionModel, data) -> str:
    """As training leaves a version: the model and its reference in one run."""
    experiment = configure(settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = log_model(model, data.test_inputs[MODEL_INPUTS].head(3))
        probabilities = model.predict_frame(data.test_inputs)
        log_reference(settings, data.frames["train"], probabilities, data.labels("test"))
    return registry.register(settings, info.model_uri, run.info.run_id, {"readmit.test": "yes"})


def settings_for(monitored: Monitored, url: str, **changes: object) -> Settings:
    return monitored.settings.model_copy(update={"monitor_db_url": url, **changes})


def log_scored(
    settings: Settings, monitored: Monitored, inputs: pd.DataFrame, alias: str = "production"
) -> np.ndarray:
    """Score `inputs` with the model and log them exactly as the API's prediction log does."""
    probabilities = monitored.model.predict_frame(inputs)
    payloads = records(inputs[MODEL_INPUTS])
    for payload, encounter, patient in zip(
        payloads, inputs["encounter_id"], inputs["patient_nbr"], strict=True
    ):
        payload.update(encounter_id=int(encounter), patient_nbr=int(patient))
    scored = Scored(
        batch_id=uuid.uuid4().hex,
        scored_at=datetime.now(UTC),
        request_id=uuid.uuid4().hex,
        model_name=settings.model_name,
        model_version=monitored.version,
        model_alias=alias,
        threshold=monitored.model.threshold,
        records=payloads,
        probabilities=[float(p) for p in probabilities],
    )
    engine = monitor.monitor_engine(settings)
    try:
        monitor.ensure_tables(engine)
        with engine.begin() as conn:
            monitor.insert_predictions(conn, scored.rows(KEY))
    finally:
        engine.dispose()
    return probabilities


def steady(monitored: Monitored) -> pd.DataFrame:
    return monitored.inputs.head(WINDOW).reset_index(drop=True)


def latest(settings: Settings) -> dict:
    engine = monitor.monitor_engine(settings)
    try:
        with engine.connect() as conn:
            runs = monitor.latest_runs(conn, 5)
    finally:
        engine.dispose()
    return runs[0]


def samples(settings: Settings) -> dict[str, float]:
    text = generate_latest(registry_for(settings)).decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_steady_traffic_is_ok_recorded_logged_and_exported(monitored, monitor_url):
    settings = settings_for(monitored, monitor_url)
    log_scored(settings, monitored, steady(monitored))
    result = run_monitor(settings)
    assert result.verdict == "ok", result.reasons
    assert not result.drift_detected
    assert result.drifted_features == []
    assert (result.rows, result.labelled_rows, result.live_auc) == (WINDOW, 0, None)
    stored = latest(settings)
    assert stored["verdict"] == "ok"
    assert stored["model_version"] == monitored.version
    assert stored["rows"] == WINDOW
    assert stored["figures"]["drift"]["features"]["num_lab_procedures"]["method"] == "wasserstein"
    assert stored["mlflow_run_id"] == result.mlflow_run_id
    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.tags["readmit.model_version"] == monitored.version
    assert run.data.tags["readmit.verdict"] == "ok"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "monitor")}
    assert {"monitor/figures.json", "monitor/input_drift.html"} <= artifacts
    exported = samples(settings)
    assert exported['readmit_monitor_verdict{verdict="ok"}'] == 1
    assert exported['readmit_monitor_verdict{verdict="drift"}'] == 0
    assert exported["readmit_monitor_drift_detected"] == 0
    assert exported["readmit_monitor_drift_share"] == 0
    assert exported["readmit_monitor_labelled_rows"] == 0
    assert 0 <= exported['readmit_monitor_feature_drift_score{feature="a1cresult"}'] < 0.1
    assert exported["readmit_monitor_last_run_timestamp_seconds"] == pytest.approx(
        stored["run_at"].timestamp()
    )
    assert "readmit_monitor_live_auc" not in exported


@pytest.mark.parametrize(
    ("field", "shift"),
    [
        ("num_lab_procedures", lambda column: column * 10),
        ("a1cresult", lambda column: column.map(lambda _: ">8")),
    ],
    ids=["feed-error-x10", "coding-change"],
)
def test_a_shifted_field_is_drift_naming_that_field(monitored, tmp_path, field, shift):
    settings = settings_for(monitored, f"sqlite:///{tmp_path}/monitor.db")
    shifted = steady(monitored)
    shifted[field] = shift(shifted[field])
    log_scored(settings, monitored, shifted)
    result = run_monitor(settings)
    assert result.verdict == "drift", result.reasons
    assert result.drift_detected
    assert result.drifted_features[0] == field
    assert any(reason.startswith(f"{field} drifted") for reason in result.reasons)
    exported = samples(settings)
    assert exported['readmit_monitor_verdict{verdict="drift"}'] == 1
    assert exported["readmit_monitor_drift_detected"] == 1
    assert exported[f'readmit_monitor_feature_drift_score{{feature="{field}"}}'] >= 0.1


def test_live_auc_brier_and_calibration_equal_an_independent_computation(monitored, tmp_path):
    settings = settings_for(monitored, f"sqlite:///{tmp_path}/monitor.db", **NO_DRIFT)
    window = steady(monitored)
    probabilities = log_scored(settings, monitored, window)
    labels = monitored.labels[:WINDOW]
    known = 1_500  # outcomes of the first rows only: the rest are still unknown
    outcomes = [
        (int(e), "<30" if y else "NO")
        for e, y in zip(window["encounter_id"][:known], labels[:known], strict=True)
    ]
    record_outcomes(monitor.monitor_engine(settings), outcomes)
    result = run_monitor(settings)
    assert result.labelled_rows == known
    assert result.live_auc == pytest.approx(roc_auc_score(labels[:known], probabilities[:known]))
    live = result.figures["performance"]
    assert live["brier"] == pytest.approx(brier_score_loss(labels[:known], probabilities[:known]))
    assert live["observed_rate"] == pytest.approx(labels[:known].mean())
    assert live["mean_predicted"] == pytest.approx(probabilities[:known].mean())
    assert live["roc_auc_ci_low"] < result.live_auc < live["roc_auc_ci_high"]
    exported = samples(settings)
    assert exported["readmit_monitor_live_auc"] == pytest.approx(result.live_auc)
    assert exported["readmit_monitor_live_auc_ci_low"] == pytest.approx(live["roc_auc_ci_low"])
    assert exported["readmit_monitor_live_auc_ci_high"] == pytest.approx(live["roc_auc_ci_high"])
    assert exported["readmit_monitor_labelled_rows"] == known


def test_outcomes_the_model_ranks_backwards_are_degraded(monitored, tmp_path):
    settings = settings_for(monitored, f"sqlite:///{tmp_path}/monitor.db", **NO_DRIFT)
    window = steady(monitored)
    probabilities = log_scored(settings, monitored, window)
    # Readmitted: the tenth the model thought least likely, as many as it expects in total.
    readmitted = probabilities <= np.quantile(probabilities, 0.1)
    outcomes = [
        (int(e), "<30" if r else "NO")
        for e, r in zip(window["encounter_id"], readmitted, strict=True)
    ]
    record_outcomes(monitor.monitor_engine(settings), outcomes)
    result = run_monitor(settings)
    assert result.verdict == "degraded", result.reasons
    assert result.live_auc is not None and result.live_auc < 0.2
    assert any("below the floor" in reason for reason in result.reasons)


def test_an_empty_window_says_so(monitored, monitor_url):
    settings = settings_for(monitored, monitor_url)
    result = run_monitor(settings)
    assert result.verdict == "insufficient-data"
    assert (result.rows, result.labelled_rows, result.drift_detected) == (0, 0, False)
    assert any("0 predictions in the window" in reason for reason in result.reasons)
    assert latest(settings)["verdict"] == "insufficient-data"
    exported = samples(settings)
    assert exported['readmit_monitor_verdict{verdict="insufficient-data"}'] == 1
    assert "readmit_monitor_drift_share" not in exported


def test_other_versions_are_left_out_and_a_small_window_is_insufficient(monitored, tmp_path):
    settings = settings_for(monitored, f"sqlite:///{tmp_path}/monitor.db")
    log_scored(settings, monitored, steady(monitored).head(300), alias="production")
    result = run_monitor(settings, MonitorWindow(days=1, rows=100))
    assert (result.verdict, result.rows) == ("insufficient-data", 100)
    other = run_monitor(settings, MonitorWindow(days=1, model_version="999"))
    assert (other.rows, other.model_version) == (0, "999")
    assert any("300 predictions of other model versions left out" in r for r in other.reasons)


def test_mlflow_down_still_completes_from_the_cached_reference(monitored, tmp_path):
    settings = settings_for(monitored, f"sqlite:///{tmp_path}/monitor.db", data_dir=tmp_path)
    shifted = steady(monitored)
    shifted["a1cresult"] = ">7"
    log_scored(settings, monitored, shifted)
    assert run_monitor(settings.model_copy(update=NO_DRIFT)).verdict == "insufficient-data"
    assert not (tmp_path / "monitor-reference").exists()  # no drift judged, nothing fetched
    up = run_monitor(settings)  # fetches the reference and notes the version's run
    assert (up.verdict, up.drifted_features[0]) == ("drift", "a1cresult")
    down = settings.model_copy(update={"mlflow_tracking_uri": f"http://127.0.0.1:{free_port()}"})
    result = run_monitor(down)
    assert result.mlflow_run_id is None
    assert any(reason.startswith("MLflow unreachable") for reason in result.reasons)
    assert (result.verdict, result.drifted_features) == ("drift", up.drifted_features)
    assert latest(settings)["verdict"] == "drift"
    assert latest(settings)["mlflow_run_id"] is None


def test_cli_json_prints_one_object_with_the_documented_keys(monitored, tmp_path):
    url = f"sqlite:///{tmp_path}/monitor.db"
    settings = settings_for(monitored, url)
    log_scored(settings, monitored, steady(monitored).head(600))
    env = {
        "READMIT_DATA_DIR": str(settings.data_dir),
        "READMIT_MONITOR_DB_URL": url,
        "READMIT_MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_MODEL_NAME": settings.model_name,
        "READMIT_MONITOR_MIN_ROWS": "100000",
    }
    out = CliRunner().invoke(app, ["monitor", "--window", "1d", "--json"], env=env)
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    for key in ("verdict", "drift_detected", "drifted_features", "rows", "labelled_rows"):
        assert key in body
    assert (body["rows"], body["verdict"], body["live_auc"]) == (600, "insufficient-data", None)
    assert body["model_version"] == monitored.version
    bad = CliRunner().invoke(app, ["monitor", "--window", "7x"], env=env)
    assert bad.exit_code == 1
    assert "window: '7x' is not a positive duration" in bad.output


def test_runs_are_read_newest_first(monitored, monitor_url):
    settings = settings_for(monitored, monitor_url)
    first = run_monitor(settings)
    second = run_monitor(settings)
    engine = sa.create_engine(monitor_url)
    try:
        with engine.connect() as conn:
            runs = monitor.latest_runs(conn, 2)
    finally:
        engine.dispose()
    assert [r["id"] for r in runs] == [second.monitor_run_id, first.monitor_run_id]
