"""The check a candidate passes before it is promoted or swapped in (registered.check_scores):
both scoring paths give one finite probability in [0, 1] per row of its input example."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from readmit.dataset import typed_rows
from readmit.features import FittedTransform, clean_frame
from readmit.model import Calibration, LinearEstimator, ReadmissionModel
from readmit.registered import check_scores
from readmit.schema import INPUT_FIELDS
from tests.synthetic import synthetic_rows


@functools.cache
def _rows() -> pd.DataFrame:
    return typed_rows(synthetic_rows(200, seed=5))


def _model() -> ReadmissionModel:
    rows = _rows()
    clean = clean_frame(rows.assign(row_hash=[str(i) for i in range(len(rows))]))
    transform = FittedTransform.fit(clean, min_count=1)
    coef = np.random.default_rng(1).normal(size=transform.width)
    estimator = LinearEstimator(coef, -2.0, np.zeros(transform.width))
    return ReadmissionModel(transform, estimator, Calibration(1.0, 0.0), 0.2)


def _example(rows: int = 5) -> pd.DataFrame:
    return _rows().head(rows)[list(INPUT_FIELDS)]


def test_a_sound_model_passes_on_its_example():
    assert check_scores(_model(), _example()) is None


def test_an_empty_example_proves_nothing():
    assert check_scores(_model(), _example().head(0)) == "its input example has no rows"


def test_a_transform_that_no_longer_fits_the_estimator_is_named():
    model = _model()
    model.estimator = LinearEstimator(model.estimator.coef[:-1], -2.0, np.zeros(1))
    reason = check_scores(model, _example())
    assert reason is not None and reason.startswith("scoring its input example failed: ")


@pytest.mark.parametrize(
    ("bulk", "expected"),
    [
        (lambda n: np.full(n + 1, 0.5), "bulk scoring gave shape ({n1},) for {n} example rows"),
        (lambda n: np.full((n, 2), 0.5), "bulk scoring gave shape ({n}, 2) for {n} example rows"),
        (lambda n: np.full(n, np.nan), "bulk scoring gave probabilities outside [0, 1]"),
        (lambda n: np.full(n, 1.5), "bulk scoring gave probabilities outside [0, 1]"),
        (lambda n: np.full(n, -0.1), "bulk scoring gave probabilities outside [0, 1]"),
    ],
    ids=["one too many", "two columns", "NaN", "over one", "negative"],
)
def test_bulk_scores_of_the_wrong_shape_or_range_are_refused(monkeypatch, bulk, expected):
    model = _model()
    n = len(_example())
    monkeypatch.setattr(model, "predict_frame", lambda frame: bulk(len(frame)))
    reason = check_scores(model, _example())
    assert reason is not None and reason.startswith(expected.format(n=n, n1=n + 1)), reason


def test_one_record_scores_out_of_range_are_refused_even_when_bulk_is_sound(monkeypatch):
    model = _model()
    monkeypatch.setattr(model, "predict_record", lambda row: float("inf"))
    reason = check_scores(model, _example())
    assert reason is not None
    assert reason.startswith("one-record scoring gave probabilities outside [0, 1]")
