"""The registry lifecycle against a real MLflow server (PostgreSQL store, S3 artifacts)."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import shap
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from readmit import registry
from readmit.cli import app
from readmit.features import NUMERIC_FEATURES
from readmit.model import MODEL_FILE, Calibration, ReadmissionModel
from readmit.pipeline.train import fit_logistic, fit_xgboost
from readmit.schema import HISTORY_FIELDS, INPUT_FIELDS
from readmit.stack.s3 import BUCKET
from tests.models import log_and_register

MODEL_INPUTS = [*INPUT_FIELDS, *HISTORY_FIELDS]


@pytest.fixture
def settings(mlflow_server, small_build):
    """A model name of its own per test: no test sees versions another one registered."""
    return small_build.settings.model_copy(
        update={
            **mlflow_server.client_settings,
            "model_name": f"readmission_{secrets.token_hex(4)}",
        }
    )


@pytest.fixture(scope="module")
def models(small_data):
    """Three linear models of known order: weak (one field), medium (numeric only), full."""
    x, y = small_data.encoded("train"), small_data.labels("train")
    full, _ = fit_logistic(x, y, seed=0)
    transform = small_data.build.transform
    numeric = np.zeros_like(full.coef)
    numeric[: len(NUMERIC_FEATURES)] = full.coef[: len(NUMERIC_FEATURES)]
    weak = np.zeros_like(full.coef)
    weak[transform.columns.index("number_inpatient")] = 1.0

    def model(coef: np.ndarray) -> ReadmissionModel:
        return ReadmissionModel(transform, replace(full, coef=coef), Calibration(), 0.5)

    return {"weak": model(weak), "medium": model(numeric), "full": model(full.coef)}


def _state(settings) -> dict[str, tuple[str, list[str]]]:
    client = MlflowClient(settings.resolved_tracking_uri)
    found = client.search_model_versions(f"name='{settings.model_name}'")
    versions = [client.get_model_version(settings.model_name, str(v.version)) for v in found]
    return {str(v.version): (v.current_stage, sorted(v.aliases)) for v in versions}


def test_the_registry_lifecycle(settings, models, small_data):
    inputs = small_data.test_inputs[MODEL_INPUTS]
    labels = small_data.labels("test")
    auc = {name: roc_auc_score(labels, m.predict_frame(inputs)) for name, m in models.items()}
    assert auc["weak"] + 0.002 < auc["medium"] and auc["medium"] + 0.002 < auc["full"], auc

    v1 = log_and_register(settings, models["medium"], inputs)
    assert _state(settings)[v1] == ("Staging", ["staging"])
    first = registry.compare_and_promote(settings, v1, auc["medium"], inputs, labels)
    assert first.promoted and first.production_version is None
    assert _state(settings)[v1] == ("Production", ["production"])

    v2 = log_and_register(settings, models["weak"], inputs)
    worse = registry.compare_and_promote(settings, v2, auc["weak"], inputs, labels)
    assert not worse.promoted
    assert worse.production_auc == pytest.approx(auc["medium"])
    assert _state(settings)[v2] == ("Staging", ["staging"])
    assert _state(settings)[v1] == ("Production", ["production"])
    tags = (
        MlflowClient(settings.resolved_tracking_uri).get_model_version(settings.model_name, v2).tags
    )
    assert tags["readmit.decision"] == "kept_in_staging"
    assert float(tags["readmit.candidate_test_auc"]) == pytest.approx(auc["weak"], abs=1e-6)
    assert float(tags["readmit.production_test_auc"]) == pytest.approx(auc["medium"], abs=1e-6)

    v3 = log_and_register(settings, models["full"], inputs)
    better = registry.compare_and_promote(settings, v3, auc["full"], inputs, labels)
    assert better.promoted and better.production_version == v1
    state = _state(settings)
    assert state[v3] == ("Production", ["production"])
    assert state[v1] == ("Archived", [])
    assert state[v2] == ("Staging", [])  # @staging moved to v3, then left with its promotion

    old, new = registry.rollback(settings)
    assert (old, new) == (v3, v1)
    state = _state(settings)
    assert state[v1] == ("Production", ["production"]) and state[v3] == ("Archived", [])

    with pytest.raises(
        registry.RegistryError,
        match=f"no version of {settings.model_name} was in production before",
    ):
        registry.rollback(settings)  # v3 was rolled back: it is not a target

    served = mlflow.pyfunc.load_model(registry.production_uri(settings)).predict(inputs.head(50))
    np.testing.assert_array_equal(
        served["probability"], models["medium"].predict_frame(inputs.head(50))
    )


def test_promote_and_rollback_from_the_cli(settings, models, small_data, mlflow_server):
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
        "READMIT_MODEL_NAME": settings.model_name,
        "READMIT_DATA_DIR": str(settings.data_dir),
    }
    cli_settings = settings
    inputs = small_data.test_inputs[MODEL_INPUTS]
    a = log_and_register(cli_settings, models["weak"], inputs)
    b = log_and_register(cli_settings, models["full"], inputs)
    runner = CliRunner()
    result = runner.invoke(app, ["promote", "--version", a], env=env)
    assert result.exit_code == 0 and f"v{a} is @production" in result.output, result.output
    result = runner.invoke(app, ["promote", "--version", b], env=env)
    assert f"v{a} archived" in result.output, result.output
    result = runner.invoke(app, ["rollback"], env=env)
    assert result.exit_code == 0 and f"v{b} -> v{a}" in result.output, result.output
    assert _state(cli_settings)[a][0] == "Production"
    result = runner.invoke(app, ["promote", "--version", "99"], env=env)
    assert result.exit_code == 1 and "has no version 99" in result.output


def test_shap_tree_explainer_works_on_a_registered_xgboost_model(settings, small_data):
    x, y = small_data.encoded("train"), small_data.labels("train")
    xv, yv = small_data.encoded("validation"), small_data.labels("validation")
    estimator, _, _ = fit_xgboost(x, y, xv, yv, seed=0, max_rounds=60)
    model = ReadmissionModel(small_data.build.transform, estimator, Calibration(), 0.5)
    version = log_and_register(settings, model, small_data.test_inputs[MODEL_INPUTS])
    folder = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{settings.model_name}/{version}", tracking_uri=settings.resolved_tracking_uri
        )
    )
    loaded = ReadmissionModel.load(next(folder.rglob(MODEL_FILE)).parent)
    sample = small_data.encoded("test")[:200]
    explainer = shap.TreeExplainer(loaded.estimator.booster)
    values = explainer.shap_values(sample)
    native = loaded.estimator.contributions(sample)
    np.testing.assert_allclose(values, native[:, :-1], atol=1e-5)
    margin = loaded.estimator.margin(sample)
    np.testing.assert_allclose(values.sum(axis=1) + explainer.expected_value, margin, atol=1e-4)


def test_artifacts_land_in_the_s3_bucket(settings, models, small_data, mlflow_server):
    import boto3

    from readmit.stack.s3 import s3_env

    env = s3_env(mlflow_server.s3_endpoint)
    s3 = boto3.client(
        "s3",
        endpoint_url=mlflow_server.s3_endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )

    def keys() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    before = keys()  # the bucket may be missing or hold other tests' models: only new keys count
    log_and_register(settings, models["weak"], small_data.test_inputs[MODEL_INPUTS])
    added = keys() - before
    assert any(k.endswith(MODEL_FILE) for k in added), sorted(added)[:20]
