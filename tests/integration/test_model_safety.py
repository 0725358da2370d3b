"""Only versions that load from plain files and score their own input example are promoted,
swapped in or compared with; nothing from the registry is unpickled; downloads never pile up."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from readmit import registry
from readmit.cli import app
from readmit.features import FittedTransform
from readmit.model import ReadmissionModel
from readmit.pipeline.train import train
from readmit.pyfunc_model import ReadmissionPyfunc
from readmit.registered import ModelRefused
from readmit.serving.app import create_app
from readmit.serving.metrics import Metrics
from readmit.serving.model_store import ModelStore
from readmit.serving.schemas import EXAMPLE
from readmit.settings import Settings
from readmit.tracking import configure, signature
from tests.models import API_KEY, MODEL_INPUTS, log_and_register, records


class TouchOnUnpickle(PythonModel):
    """A crafted python_model.pkl: unpickling it creates `marker` (any code could run there)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))

    def predict(self, context, model_input, params=None):
        return model_input


def one_token_short(model: ReadmissionModel) -> ReadmissionModel:
    """The same booster behind a transform that lost one vocabulary token (one column fewer)."""
    t = model.transform
    name = next(n for n in t.categorical if len(t.vocabularies[n]) > 1)
    vocabularies = {**t.vocabularies, name: t.vocabularies[name][1:]}
    short = FittedTransform(
        t.numeric, t.means, t.scales, t.categorical, vocabularies, t.min_count, t.fitted_rows
    )
    assert short.width == t.width - 1
    return ReadmissionModel(short, model.estimator, model.calibration, model.threshold, model.info)


def register_python_model(
    settings: Settings, python_model: PythonModel, folder: Path | None, inputs: pd.DataFrame
) -> str:
    """Log any pyfunc (with a readmit model folder as artifact, or none) and register it."""
    experiment = configure(settings)
    artifacts = {"readmit_model": str(folder)} if folder is not None else None
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            artifacts=artifacts,
            signature=signature(),
            input_example=inputs.head(3),
        )
    return registry.register(settings, info.model_uri, run.info.run_id, {})


def broken_booster_folder(model: ReadmissionModel, tmp: Path) -> Path:
    folder = model.save(tmp / "readmit_model")
    (folder / "lightgbm.txt").write_text("tree\nnot a booster\n")
    return folder


def force_production(settings: Settings, version: str) -> None:
    """Move @production the way any registry client can, with no readmit check on the way."""
    client = MlflowClient(settings.resolved_tracking_uri)
    client.set_registered_model_alias(settings.model_name, registry.PRODUCTION, version)


def sqlite_settings(folder: Path, model_name: str) -> Settings:
    return Settings(
        data_dir=folder,
        mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db",
        api_key=API_KEY,
        model_poll_seconds=3600,
        model_name=model_name,
    )


@pytest.fixture(scope="module")
def inputs(small_data) -> pd.DataFrame:
    return small_data.test_inputs[MODEL_INPUTS]


def test_a_version_that_cannot_predict_is_refused_and_the_old_model_keeps_serving(
    tmp_path, lightgbm_model, inputs
):
    settings = sqlite_settings(tmp_path, "readmission_checked")
    good = log_and_register(settings, lightgbm_model, inputs)
    registry.promote(settings, good)
    bad = log_and_register(settings, one_token_short(lightgbm_model), inputs)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").json()["model"]["version"] == good
        force_production(settings, bad)
        reload = client.post("/reload-model", headers={"X-API-Key": API_KEY}).json()
        assert reload["changed"] is False and reload["model"]["version"] == good
        assert f"v{bad} refused (still serving v{good})" in reload["detail"]
        assert "scoring its input example failed" in reload["detail"]
        assert "485" in reload["detail"] or "features" in reload["detail"]
        for path, body in [
            ("/predict", EXAMPLE),
            ("/explain", EXAMPLE),
            ("/predict-batch", {"records": records(inputs.head(5))}),
        ]:
            response = client.post(path, json=body)
            assert response.status_code == 200, (path, response.text)
            assert response.json()["model"]["version"] == good
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["model"]["version"] == good
        assert f"v{bad} refused" in health.json()["detail"]
        client.post("/reload-model", headers={"X-API-Key": API_KEY})  # still refused, counted
        text = client.get("/metrics").text
        assert 'readmit_model_reload_failures_total{step="check"} 2.0' in text
        assert f'readmit_model_info{{name="readmission_checked",version="{good}"}} 1.0' in text
    with TestClient(create_app(settings)) as fresh:  # started while @production is refused
        health = fresh.get("/health")
        assert health.status_code == 503 and f"v{bad} refused" in health.json()["detail"]


def test_promote_refuses_a_version_that_cannot_predict_in_one_line(
    tmp_path, lightgbm_model, inputs
):
    settings = sqlite_settings(tmp_path, "readmission_cli_checked")
    good = log_and_register(settings, lightgbm_model, inputs)
    bad = log_and_register(settings, one_token_short(lightgbm_model), inputs)
    env = {
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_DATA_DIR": str(tmp_path),
        "READMIT_MODEL_NAME": settings.model_name,
    }
    runner = CliRunner()
    assert runner.invoke(app, ["promote", "--version", good], env=env).exit_code == 0
    result = runner.invoke(app, ["promote", "--version", bad], env=env)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith(
        f"error: registry: readmission_cli_checked v{bad} refused: "
        "scoring its input example failed: "
    )
    holder = registry.by_alias(registry.client_for(settings), settings.model_name, "production")
    assert holder is not None and str(holder.version) == good


def test_comparing_with_the_champion_never_unpickles_it(
    tmp_path, lightgbm_model, inputs, small_data
):
    settings = sqlite_settings(tmp_path, "readmission_pickles")
    labels = small_data.labels("test")
    auc = float(roc_auc_score(labels, lightgbm_model.predict_frame(inputs)))
    marker = tmp_path / "unpickled"
    pickle_only = register_python_model(settings, TouchOnUnpickle(marker), None, inputs)
    folder = lightgbm_model.save(tmp_path / "plain" / "readmit_model")
    with_files = register_python_model(settings, TouchOnUnpickle(marker), folder, inputs)
    marker.unlink(missing_ok=True)  # logging may have loaded it once; from here on, never

    force_production(settings, pickle_only)
    candidate = log_and_register(settings, lightgbm_model, inputs)
    decision = registry.compare_and_promote(settings, candidate, auc, inputs, labels)
    assert not marker.exists()
    assert decision.promoted and decision.production_auc is None
    assert decision.reason.startswith(f"no comparable champion: production v{pickle_only} refused")
    tags = (
        MlflowClient(settings.resolved_tracking_uri)
        .get_model_version(settings.model_name, candidate)
        .tags
    )
    assert "not a readmit model" in tags["readmit.champion_problem"]
    with pytest.raises(ModelRefused, match="not a readmit model: its MLmodel names no"):
        registry.promote(settings, pickle_only)
    assert not marker.exists()

    force_production(settings, with_files)  # a readmit model folder beside a crafted pickle
    candidate = log_and_register(settings, lightgbm_model, inputs)
    decision = registry.compare_and_promote(settings, candidate, auc, inputs, labels)
    assert not marker.exists()
    assert decision.production_auc == pytest.approx(auc, abs=1e-12)
    assert not decision.promoted  # the same model gains nothing


def test_training_completes_and_says_why_when_the_champion_is_broken(
    small_build, tmp_path, lightgbm_model, inputs
):
    settings = small_build.settings.model_copy(
        update={
            "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "model_name": "readmission_broken_champion",
        }
    )
    folder = broken_booster_folder(lightgbm_model, tmp_path)
    broken = register_python_model(settings, ReadmissionPyfunc(), folder, inputs)
    force_production(settings, broken)
    result = train(settings, max_rounds=30, bootstrap_rounds=20)
    assert result.decision.promoted
    assert result.decision.reason.startswith(
        f"no comparable champion: production v{broken} refused: its model files do not load"
    )
    tags = (
        MlflowClient(settings.resolved_tracking_uri)
        .get_model_version(settings.model_name, result.version)
        .tags
    )
    assert tags["readmit.champion_problem"].startswith("refused: its model files do not load")
    assert tags["readmit.decision"] == "promoted"


def test_failed_and_successful_loads_leave_no_download_behind(
    tmp_path, lightgbm_model, inputs, monkeypatch
):
    settings = sqlite_settings(tmp_path / "store", "readmission_downloads")
    good = log_and_register(settings, lightgbm_model, inputs)
    broken = register_python_model(
        settings, ReadmissionPyfunc(), broken_booster_folder(lightgbm_model, tmp_path), inputs
    )
    downloads = tmp_path / "tmp"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    force_production(settings, broken)
    for _ in range(3):  # as three restarts would: each store fetches the version again
        store = ModelStore(settings, Metrics())
        assert store.refresh() is False
        assert list(downloads.iterdir()) == []
        assert "refused" in (store.last_error or "")
    force_production(settings, good)
    assert store.refresh() is True
    assert list(downloads.iterdir()) == []  # the loaded model lives in memory only
    force_production(settings, broken)
    assert store.refresh() is False and store.current.version == good
    store.stop()
    assert list(downloads.iterdir()) == []
