"""Training fails with a clear message, marks its run failed and leaves no half-registered model."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import readmit.pipeline.train as train_module
from readmit.cli import app
from readmit.errors import StorageError
from readmit.pipeline.train import train
from readmit.settings import Settings
from readmit.tracking import MlflowUnavailable


def test_unreachable_mlflow_is_a_clear_error_before_any_work(small_build, monkeypatch):
    settings = small_build.settings.model_copy(update={"mlflow_tracking_uri": "http://127.0.0.1:9"})
    loads = []
    real_load = train_module.load_training_data
    monkeypatch.setattr(
        train_module, "load_training_data", lambda *a, **k: loads.append(a) or real_load(*a, **k)
    )
    with pytest.raises(
        MlflowUnavailable, match=r"tracking server http://127\.0\.0\.1:9 is unreachable"
    ):
        train(settings)
    assert loads == []  # refused before the clean build was read


def test_unreachable_mlflow_from_the_cli(small_build):
    env = {
        "READMIT_DATA_DIR": str(small_build.settings.data_dir),
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
    }
    result = CliRunner().invoke(app, ["train"], env=env)
    assert result.exit_code == 1
    assert "error: mlflow: tracking server http://127.0.0.1:9 is unreachable" in result.output
    assert "Traceback" not in result.output


def test_empty_clean_db_is_a_clear_error(tmp_path):
    settings = Settings(data_dir=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(StorageError, match="no clean build yet; run `readmit clean` first"):
        train(settings)


def test_a_failure_after_registration_marks_the_run_failed_and_removes_the_version(
    small_build, tmp_path, monkeypatch
):
    settings = small_build.settings.model_copy(
        update={
            "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "model_name": "readmission_failing",
        }
    )

    def broken(*args, **kwargs):
        raise RuntimeError("comparison crashed (simulated)")

    monkeypatch.setattr(train_module, "compare_and_promote", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        train(settings, max_rounds=30, bootstrap_rounds=20)
    client = MlflowClient(settings.resolved_tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    parents = client.search_runs([experiment.experiment_id], "tags.mlflow.runName LIKE 'train-%'")
    assert [r.info.status for r in parents] == ["FAILED"]
    assert client.search_model_versions("name='readmission_failing'") == []
