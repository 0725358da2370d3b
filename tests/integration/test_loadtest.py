"""A short headless Locust run against the real API process, and its SLO verdict."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from readmit import registry
from readmit.cli import app
from readmit.loadtest import LoadTestResult, figure, run
from readmit.settings import Settings
from readmit.stack.foreground import free_port, start_api
from tests.models import MODEL_INPUTS, log_and_register


def test_a_short_locust_run_reports_its_figures_and_verdict(
    small_build, small_data, lightgbm_model, tmp_path
):
    settings = small_build.settings.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "api_port": free_port()}
    )
    registry.promote(
        settings, log_and_register(settings, lightgbm_model, small_data.test_inputs[MODEL_INPUTS])
    )
    env = {
        "READMIT_DATA_DIR": str(settings.data_dir),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_API_PORT": str(settings.api_port),
        "READMIT_LOG_LEVEL": "WARNING",
    }
    api = start_api(settings, tmp_path / "api.log", env)
    try:
        result = run(settings, api.url, users=20, seconds=20)
    finally:
        api.stop()
    # Behaviour, not speed: every request answered, the figures are Locust's own, and the
    # verdict follows them. Whether this machine meets the p95 SLO is for bench/api.py and
    # `make loadtest`.
    assert result.requests > 0 and result.failures == 0, result.summary()
    stats = aggregated_row(result.report_dir / "locust_stats.csv")
    assert result.requests == int(stats["Request Count"])
    assert (result.p50_ms, result.p95_ms, result.p99_ms) == (
        float(stats["50%"]),
        float(stats["95%"]),
        float(stats["99%"]),
    )
    assert result.p50_ms <= result.p95_ms <= result.p99_ms
    verdict = "SLOs met" if result.p95_ms < 500 else "SLOs VIOLATED"
    assert verdict in result.summary() and f"p95 {result.p95_ms:.0f} ms" in result.summary()
    assert (result.report_dir / "report.html").exists()
    assert (result.report_dir / "payloads.jsonl").read_text().count("\n") > 1000  # real test rows


def aggregated_row(path: Path) -> dict[str, str]:
    """The "Aggregated" line of Locust's statistics CSV, read here with the csv module."""
    with path.open() as f:
        return next(row for row in csv.DictReader(f) if row["Name"] == "Aggregated")


def test_a_run_where_no_request_finished_is_a_violation_not_a_crash(tmp_path):
    """Locust writes N/A for the percentiles when no request finished (a slow start)."""
    assert figure("N/A") != figure("N/A") and figure("12.5") == 12.5
    result = LoadTestResult(0, 0, 0.0, figure("N/A"), figure("N/A"), figure("N/A"), tmp_path)
    assert not result.meets_slo and "SLOs VIOLATED" in result.summary()


@pytest.mark.parametrize(
    ("requests", "failures", "p95_ms", "met"),
    [
        (1000, 0, 499.0, True),
        (1000, 0, 500.0, False),  # p95 must be under 500 ms
        (1000, 9, 100.0, True),
        (1000, 10, 100.0, False),  # errors must be under 1 %
        (0, 0, 0.0, False),  # no request answered is no evidence
    ],
)
def test_the_slo_verdict(requests, failures, p95_ms, met, tmp_path):
    result = LoadTestResult(requests, failures, 10.0, p95_ms / 2, p95_ms, p95_ms, tmp_path)
    assert result.meets_slo is met
    assert ("SLOs met" if met else "SLOs VIOLATED") in result.summary()


def test_violated_slos_fail_the_command(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        api_port=free_port(),
    )
    env = {
        "READMIT_DATA_DIR": str(tmp_path),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_API_PORT": str(settings.api_port),
        "READMIT_LOG_LEVEL": "WARNING",
    }
    api = start_api(settings, tmp_path / "api.log", env)  # no model: every prediction is a 503
    try:
        result = CliRunner().invoke(
            app,
            ["loadtest", "--url", api.url, "--users", "5", "--seconds", "5"],
            env={"READMIT_DATA_DIR": str(tmp_path)},
        )
    finally:
        api.stop()
    assert result.exit_code == 1, result.output
    assert "SLOs VIOLATED" in result.output and "errors 100.00%" in result.output
