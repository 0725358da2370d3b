"""Training on a small deterministic sample of the real data, end to end in embedded mode."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow.artifacts import list_artifacts
from mlflow.tracking import MlflowClient

from readmit.model import TrainingInfo
from readmit.model_card import (
    CARD_HTML,
    CARD_MARKDOWN,
    DECISION_CURVE_ARTIFACT,
    DECISION_CURVE_PLOT,
    SUBGROUPS_ARTIFACT,
    SUBGROUPS_PLOT,
)
from readmit.monitoring.reference import load_reference
from readmit.pipeline.train import CANDIDATES, PREDICTIONS_ARTIFACT, fit_and_evaluate, train
from readmit.registry import Tag, lineage_tags
from readmit.schema import HISTORY_FIELDS, INPUT_FIELDS

MODEL_INPUTS = [*INPUT_FIELDS, *HISTORY_FIELDS]


@pytest.fixture(scope="module")
def outcome(small_data):
    return fit_and_evaluate(small_data, seed=7, max_rounds=150, bootstrap_rounds=100)


def test_the_best_candidate_by_validation_is_evaluated_on_test(outcome):
    assert [c.name for c in outcome.candidates] == list(CANDIDATES)
    assert outcome.chosen.validation_auc == max(c.validation_auc for c in outcome.candidates)
    m = outcome.test_metrics
    assert 0.58 < m["roc_auc"] < 0.72  # above 0.72 would mean a leak
    assert m["roc_auc_ci_low"] < m["roc_auc"] < m["roc_auc_ci_high"]
    assert 0.0 < m["brier"] < 0.12 and 0.0 < m["pr_auc"] < 1.0
    assert 0.0 < m["threshold"] < 1.0
    for key in ("sensitivity", "specificity", "ppv"):
        assert 0.0 <= m[key] <= 1.0
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == len(outcome.test_probabilities)


def test_the_model_carries_the_calibration_and_threshold_chosen_on_validation(outcome, small_data):
    """The choice itself is unit-tested (tests/unit/test_evaluation.py); here the figures are
    recomputed from the chosen estimator's validation margins, and the model must use them."""
    margin = outcome.chosen.estimator.margin(small_data.encoded("validation"))
    labels = small_data.labels("validation")
    choice = outcome.calibration
    raw_brier = float(np.mean((1 / (1 + np.exp(-margin)) - labels) ** 2))
    assert choice.brier_raw == pytest.approx(raw_brier, rel=1e-9)
    assert outcome.model.calibration == choice.calibration
    probabilities = choice.calibration.apply(margin)
    f1 = {
        cut: 2
        * int(((probabilities >= cut) & (labels == 1)).sum())
        / (int((probabilities >= cut).sum()) + int(labels.sum()))
        for cut in np.unique(probabilities)
    }
    assert outcome.model.threshold == max(f1, key=f1.__getitem__)


def test_one_record_scores_exactly_as_the_bulk_path_on_thousands_of_rows(outcome, small_data):
    inputs = small_data.test_inputs[MODEL_INPUTS]
    bulk = outcome.model.predict_frame(inputs)
    singles = np.array([outcome.model.predict_record(r) for r in inputs.to_dict("records")])
    assert len(singles) > 2000
    np.testing.assert_array_equal(singles, bulk)


def test_every_estimator_scores_one_record_exactly_as_the_bulk_path(outcome, small_data):
    inputs = small_data.test_inputs[MODEL_INPUTS].head(500)
    for candidate in outcome.candidates:
        model = outcome.model
        model_for = type(model)(
            model.transform, candidate.estimator, model.calibration, model.threshold
        )
        bulk = model_for.predict_frame(inputs)
        singles = np.array([model_for.predict_record(r) for r in inputs.to_dict("records")])
        np.testing.assert_array_equal(singles, bulk, err_msg=candidate.name)


def loaded_batches(settings) -> list[int]:
    """Batch ids recorded as loaded in raw-db, read with SQL."""
    engine = sa.create_engine(settings.resolved_raw_db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select batch_id from batch_metadata where status = 'succeeded' order by batch_id"
            )
        ).all()
    engine.dispose()
    return [int(r[0]) for r in rows]


def latest_clean_build(settings) -> str:
    engine = sa.create_engine(settings.resolved_clean_db_url)
    with engine.connect() as conn:
        build = conn.execute(
            sa.text("select build_id from clean_build order by created_at desc limit 1")
        ).scalar_one()
    engine.dispose()
    return str(build)


def csv_sha256(path: str) -> str:
    """SHA-256 of the data set's CSV, inside its zip or as a plain file."""
    if not zipfile.is_zipfile(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("diabetic_data.csv"))
        return hashlib.sha256(archive.read(name)).hexdigest()


def source_commit() -> str:
    """The commit of the checked-out source, unless the environment names one (as images do)."""
    if commit := os.environ.get("READMIT_GIT_COMMIT"):
        return commit
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def trained(small_build, tmp_path_factory):
    settings = small_build.settings.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"}
    )
    first = train(settings, max_rounds=150, bootstrap_rounds=100)
    second = train(settings, max_rounds=150, bootstrap_rounds=100)
    return settings, first, second


def test_train_logs_a_parent_run_with_children_lineage_and_plots(trained):
    settings, first, _ = trained
    client = MlflowClient(settings.resolved_tracking_uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["readmit.raw_batches"] == ",".join(str(b) for b in loaded_batches(settings))
    assert tags["readmit.dataset_sha256"] == csv_sha256(settings.dataset_uri)
    assert tags["readmit.git_commit"] == source_commit()
    assert tags["readmit.clean_build"] == latest_clean_build(settings)
    offline = settings.data_dir / "feature-store" / "patient_history.parquet"
    assert tags["readmit.history_source"] == (
        f"feast readmit/patient_history point-in-time, offline store {offline}"
    )
    assert run.data.metrics["test_roc_auc"] == pytest.approx(first.test_metrics["roc_auc"])
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{first.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == sorted(CANDIDATES)
    assert all("validation_roc_auc" in c.data.metrics for c in children)
    plots = {a.path for a in client.list_artifacts(first.run_id, "plots")}
    assert plots == {
        f"plots/{n}"
        for n in (
            "roc.png",
            "pr.png",
            "calibration.png",
            "confusion_matrix.png",
            "shap_summary.png",
        )
    }
    source = client.get_model_version(settings.model_name, first.version).source
    model_files = {Path(a.path).name for a in list_artifacts(artifact_uri=source)}
    assert {"MLmodel", "requirements.txt", "input_example.json"} <= model_files
    assert not model_files & {"uv.lock", "pyproject.toml", ".python-version"}


def test_first_version_goes_to_production_and_an_equal_one_stays_in_staging(trained):
    settings, first, second = trained
    assert (first.version, first.decision.promoted) == ("1", True)
    assert (second.version, second.decision.promoted) == ("2", False)
    client = MlflowClient(settings.resolved_tracking_uri)
    assert client.get_model_version_by_alias(settings.model_name, "production").version in (1, "1")
    v2 = client.get_model_version(settings.model_name, "2")
    assert v2.current_stage == "Staging"
    assert v2.tags["readmit.decision"] == "kept_in_staging"
    assert float(v2.tags["readmit.production_test_auc"]) == pytest.approx(
        first.test_metrics["roc_auc"]
    )


def test_a_fresh_process_loads_production_and_reproduces_training_probabilities(
    trained, small_data, tmp_path
):
    settings, first, _ = trained
    inputs = tmp_path / "inputs.parquet"
    small_data.test_inputs[MODEL_INPUTS].to_parquet(inputs)
    script = (
        "import sys, mlflow, pandas as pd\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "model = mlflow.pyfunc.load_model('models:/readmission@production')\n"
        "out = model.predict(pd.read_parquet(sys.argv[2]))\n"
        "out.to_csv(sys.argv[3], index=False, float_format='%.17g')\n"
    )
    result = tmp_path / "out.csv"
    subprocess.run(
        [sys.executable, "-c", script, settings.resolved_tracking_uri, str(inputs), str(result)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    fresh = pd.read_csv(result, float_precision="round_trip")["probability"].to_numpy()
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    logged = mlflow.artifacts.load_text(f"runs:/{first.run_id}/{PREDICTIONS_ARTIFACT}")
    at_training = pd.read_csv(io.StringIO(logged), float_precision="round_trip")
    assert len(fresh) == len(at_training) > 2000
    np.testing.assert_array_equal(fresh, at_training["probability"].to_numpy())


def test_model_info_travels_with_the_registered_model(trained):
    settings, first, _ = trained
    path = mlflow.artifacts.download_artifacts(
        f"models:/{settings.model_name}/{first.version}",
        tracking_uri=settings.resolved_tracking_uri,
    )
    files = list(Path(path).rglob("readmit_model.json"))
    info = TrainingInfo.from_dict(json.loads(files[0].read_text())["info"])
    assert info.run_id == first.run_id
    run_tags = MlflowClient(settings.resolved_tracking_uri).get_run(first.run_id).data.tags
    for tag in (
        Tag.CLEAN_BUILD,
        Tag.RAW_BATCHES,
        Tag.DATASET_SHA256,
        Tag.GIT_COMMIT,
        Tag.HISTORY_SOURCE,
    ):
        assert lineage_tags(info)[tag] == run_tags[tag]
    assert info.test_metrics["roc_auc"] == pytest.approx(first.test_metrics["roc_auc"])


def test_train_stores_the_monitoring_reference_with_its_run(trained, small_data, tmp_path):
    settings, first, _ = trained
    reference = load_reference(settings.model_copy(update={"data_dir": tmp_path}), first.run_id)
    train_rows = small_data.frames["train"]
    assert list(reference.inputs.columns) == MODEL_INPUTS
    assert len(reference.inputs) == len(train_rows)
    assert not reference.inputs.isin(["?"]).any().any()  # missing values as the log holds them
    assert reference.inputs["race"].isna().any()
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    logged = mlflow.artifacts.load_text(f"runs:/{first.run_id}/{PREDICTIONS_ARTIFACT}")
    at_training = pd.read_csv(io.StringIO(logged), float_precision="round_trip")
    np.testing.assert_array_equal(reference.probabilities, at_training["probability"].to_numpy())
    np.testing.assert_array_equal(reference.labels, small_data.labels("test"))


def test_every_version_gets_a_model_card_naming_its_clean_build_and_metrics(trained):
    settings, first, second = trained
    client = MlflowClient(settings.resolved_tracking_uri)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    build = latest_clean_build(settings)
    for result in (first, second):
        card = mlflow.artifacts.load_text(f"runs:/{result.run_id}/{CARD_MARKDOWN}")
        page = mlflow.artifacts.load_text(f"runs:/{result.run_id}/{CARD_HTML}")
        m = client.get_run(result.run_id).data.metrics
        assert card.startswith(f"# Model card: {settings.model_name} v{result.version}\n")
        for text in (card, page):
            assert build in text and result.run_id in text
            assert f"{result.test_metrics['roc_auc']:.4f} [{m['test_roc_auc_ci_low']:.4f}" in text
            assert result.chosen in text
        assert f"| Raw batches | {','.join(map(str, loaded_batches(settings)))} |" in card
        assert csv_sha256(settings.dataset_uri) in card
        assert "| race: AfricanAmerican |" in card and "## Monitoring and update policy" in card
        assert page.startswith("<!doctype html>") and "<table>" in page
        assert page.count('src="data:image/png;base64,') == 2
    v2 = client.get_model_version(settings.model_name, second.version).tags
    card = mlflow.artifacts.load_text(f"runs:/{second.run_id}/{CARD_MARKDOWN}")
    assert (
        f"- Decision: {v2[Tag.DECISION]}" in card and f"- Subgroup audit: {v2[Tag.AUDIT]}" in card
    )


def test_training_logs_the_subgroup_audit_and_decision_curve(trained, small_data):
    settings, first, _ = trained
    client = MlflowClient(settings.resolved_tracking_uri)
    files = {a.path for a in client.list_artifacts(first.run_id, "evidence")}
    assert {
        SUBGROUPS_ARTIFACT,
        SUBGROUPS_PLOT,
        DECISION_CURVE_ARTIFACT,
        DECISION_CURVE_PLOT,
    } <= files
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    table = pd.read_csv(
        io.StringIO(mlflow.artifacts.load_text(f"runs:/{first.run_id}/{SUBGROUPS_ARTIFACT}"))
    )
    assert set(table["attribute"]) == {"race", "gender", "age_band", "payer", "admission_type"}
    for attribute, part in table.groupby("attribute"):
        assert part["encounters"].sum() == len(small_data.labels("test")), attribute
    assert client.get_model_version(settings.model_name, first.version).tags[Tag.AUDIT] == "passed"
    metrics = client.get_run(first.run_id).data.metrics
    assert metrics["test_number_needed_to_evaluate"] == pytest.approx(1 / first.test_metrics["ppv"])
