"""A short headless Locust run against the real API process, and its SLO verdict."""

from __future__ import annotations

from typer.testing import CliRunner

from readmit import registry
from readmit.cli import app
from readmit.loadtest import run
from readmit.services import free_port, start_api
from readmit.settings import Settings
from tests.models import MODEL_INPUTS, log_and_register


def test_a_short_locust_run_meets_the_slos_and_writes_its_reports(
    small_build, small_data, lightgbm_model, tmp_path
):
    settings = small_build.settings.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "api_port": free_port()}
    )
    registry.promote(
        settings, log_and_register(settings, lightgbm_model, small_data.test_inputs[MODEL_INPUTS])
    )
    env = {"READMIT_DATA_DIR": str(settings.data_dir), "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
           "READMIT_API_PORT": str(settings.api_port), "READMIT_LOG_LEVEL": "WARNING"}  # fmt: skip
    api = start_api(settings, tmp_path / "api.log", env)
    try:
        result = run(settings, api.url, users=20, seconds=20)
    finally:
        api.stop()
    assert result.requests > 100 and result.failures == 0, result.summary()
    assert result.meets_slo and result.p50_ms <= result.p95_ms <= result.p99_ms
    assert (result.report_dir / "report.html").exists()
    assert (result.report_dir / "locust_stats.csv").exists()
    assert (result.report_dir / "payloads.jsonl").read_text().count("\n") > 1000  # real test rows


def test_violated_slos_fail_the_command(tmp_path):
    settings = Settings(data_dir=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                        api_port=free_port())  # fmt: skip
    env = {"READMIT_DATA_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
           "READMIT_API_PORT": str(settings.api_port), "READMIT_LOG_LEVEL": "WARNING"}  # fmt: skip
    api = start_api(settings, tmp_path / "api.log", env)  # no model: every prediction is a 503
    try:
        result = CliRunner().invoke(app, ["loadtest", "--url", api.url, "--users", "5", "--seconds", "5"],
                                    env={"READMIT_DATA_DIR": str(tmp_path)})  # fmt: skip
    finally:
        api.stop()
    assert result.exit_code == 1, result.output
    assert "SLOs VIOLATED" in result.output and "errors 100.00%" in result.output
