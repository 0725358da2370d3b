"""Settings the UI, the CLI and training read: only through `Settings`, from the environment."""

from __future__ import annotations

import os

import pytest
import typer

from readmit.cli import fails_cleanly
from readmit.settings import (
    DEFAULT_API_URL,
    MLFLOW_CLIENT_DEFAULTS,
    Settings,
    apply_mlflow_client_defaults,
)
from readmit.tracking import git_commit
from readmit.ui.client import api_url, prometheus_url


def test_ui_urls_come_from_the_environment_without_trailing_slash(monkeypatch):
    monkeypatch.setenv("READMIT_API_URL", "http://api.example:8000/")
    monkeypatch.setenv("READMIT_PROMETHEUS_URL", " http://prom.example:9090/ ")
    assert api_url() == "http://api.example:8000"
    assert prometheus_url() == "http://prom.example:9090"


def test_blank_ui_urls_mean_the_defaults(monkeypatch):
    monkeypatch.setenv("READMIT_API_URL", "")
    monkeypatch.setenv("READMIT_PROMETHEUS_URL", "  ")
    assert api_url() == DEFAULT_API_URL == "http://127.0.0.1:8000"
    assert prometheus_url() is None


def test_git_commit_setting_wins_over_git():
    assert git_commit(Settings(git_commit="0123abc")) == "0123abc"
    asked = git_commit(Settings(git_commit=None))
    assert asked != "0123abc" and asked.strip() == asked and asked


def _broken() -> None:
    raise RuntimeError("deep inside\nsecond line")


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch, capsys):
    monkeypatch.delenv("READMIT_DEBUG", raising=False)
    with pytest.raises(typer.Exit) as exit_info:
        fails_cleanly(_broken)()
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: deep inside" in err and "second line" not in err
    monkeypatch.setenv("READMIT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="deep inside"):
        fails_cleanly(_broken)()


def test_mlflow_client_defaults_leave_an_explicit_value(monkeypatch):
    for name in MLFLOW_CLIENT_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    apply_mlflow_client_defaults()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


def test_the_tuning_budget_is_short_in_the_embedded_mode_and_zero_turns_it_off(monkeypatch):
    monkeypatch.delenv("READMIT_TUNE_SECONDS", raising=False)
    monkeypatch.delenv("READMIT_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    embedded = Settings(_env_file=None).resolved_tune_seconds
    served = Settings(_env_file=None, mlflow_tracking_uri="http://mlflow:5000")
    assert 0 < embedded < served.resolved_tune_seconds
    monkeypatch.setenv("READMIT_TUNE_SECONDS", "0")
    assert Settings(_env_file=None, mlflow_tracking_uri="http://m:5000").resolved_tune_seconds == 0
