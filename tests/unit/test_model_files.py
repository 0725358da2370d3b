"""The model's plain files: what is saved loads back to the same scores and the same facts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from readmit.dataset import typed_rows
from readmit.features import FittedTransform, clean_frame, prior_history
from readmit.model import MODEL_FILE, Calibration, ReadmissionModel, TrainingInfo
from readmit.pipeline.train import fit_lightgbm, fit_logistic, fit_xgboost
from readmit.registry import Tag, lineage_tags
from tests.synthetic import synthetic_rows

INFO = TrainingInfo(
    estimator="lightgbm",
    run_id="run-1",
    trained_at="2026-01-02T03:04:05+00:00",
    clean_build="build-7",
    raw_batches="1,2",
    dataset_sha256="ab12",
    git_commit="c0ffee",
    test_metrics={"roc_auc": 0.671, "brier": 0.09},
    validation_roc_auc=0.668,
)


@pytest.fixture(scope="module")
def data() -> tuple[FittedTransform, np.ndarray, np.ndarray, pd.DataFrame]:
    raw = typed_rows(synthetic_rows(1200, seed=3)).assign(row_hash=lambda f: f["encounter_id"])
    clean = clean_frame(raw)
    transform = FittedTransform.fit(clean, min_count=5)
    inputs = pd.concat([raw, prior_history(raw)], axis=1)
    x = transform.transform_frame(clean)
    # Synthetic outcomes are noise; these follow the inputs, so every learner has trees to grow.
    rng = np.random.default_rng(0)
    signal = x @ rng.normal(size=x.shape[1]) + rng.normal(size=len(x))
    return transform, x, (signal > np.median(signal)).astype(np.int64), inputs


def fitted(kind: str, x: np.ndarray, y: np.ndarray):
    half = len(x) // 2
    if kind == "logistic_regression":
        return fit_logistic(x, y, seed=0)[0]
    fit = fit_xgboost if kind == "xgboost" else fit_lightgbm
    return fit(x[:half], y[:half], x[half:], y[half:], seed=0, max_rounds=20)[0]


@pytest.mark.parametrize("kind", ["logistic_regression", "xgboost", "lightgbm"])
def test_a_saved_model_loads_to_the_same_scores_and_facts(kind, data, tmp_path):
    transform, x, y, inputs = data
    model = ReadmissionModel(transform, fitted(kind, x, y), Calibration(0.8, -0.3), 0.137, INFO)
    loaded = ReadmissionModel.load(model.save(tmp_path / "model"))
    assert loaded.estimator.kind == kind
    assert (loaded.calibration, loaded.threshold, loaded.info) == (
        Calibration(0.8, -0.3),
        0.137,
        INFO,
    )
    expected = model.predict_frame(inputs)
    assert len(np.unique(expected)) > 10  # a model that scores, not a constant
    np.testing.assert_array_equal(loaded.predict_frame(inputs), expected)
    record = inputs.iloc[5].to_dict()
    assert loaded.predict_record(record) == pytest.approx(expected[5], abs=1e-12)


def test_training_info_written_by_earlier_versions_is_read(tmp_path, data):
    """Models registered before the info was typed kept their lineage under its tag names."""
    transform, x, y, _ = data
    folder = ReadmissionModel(transform, fitted("logistic_regression", x, y), Calibration(), 0.2)
    folder = folder.save(tmp_path / "old")
    payload = json.loads((folder / MODEL_FILE).read_text())
    payload["info"] = {
        "readmit.clean_build": "build-3",
        "readmit.raw_batches": "1",
        "readmit.dataset_sha256": "ff",
        "readmit.git_commit": "abc",
        "estimator": "logistic_regression",
        "run_id": "r9",
        "trained_at": "2025-05-05T00:00:00+00:00",
        "test_metrics": {"roc_auc": "0.65"},
        "validation_roc_auc": 0.64,
        "a_key_from_the_future": 1,
    }
    (folder / MODEL_FILE).write_text(json.dumps(payload))
    info = ReadmissionModel.load(folder).info
    assert info.clean_build == "build-3" and info.raw_batches == "1" and info.git_commit == "abc"
    assert info.run_id == "r9" and info.test_roc_auc == 0.65
    assert lineage_tags(info) == {
        Tag.CLEAN_BUILD: "build-3",
        Tag.RAW_BATCHES: "1",
        Tag.DATASET_SHA256: "ff",
        Tag.GIT_COMMIT: "abc",
    }


def test_a_model_without_info_loads_with_empty_facts(tmp_path, data):
    transform, x, y, _ = data
    folder = ReadmissionModel(transform, fitted("logistic_regression", x, y), Calibration(), 0.2)
    loaded = ReadmissionModel.load(folder.save(tmp_path / "bare"))
    assert loaded.info == TrainingInfo() and loaded.info.test_roc_auc is None
    assert lineage_tags(loaded.info) == {}
