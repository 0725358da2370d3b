"""Drift of the logged inputs and of the predicted probabilities, measured with Evidently.

Methods and thresholds, chosen on purpose:
- Distances, not p-values. A window holds thousands of rows, where a test's p-value flags
  differences too small to matter and its meaning changes with the window size. A distance
  measures how far the distributions moved, so one threshold means the same at 2,000 and at
  50,000 rows.
- Counts (days in hospital, lab procedures, visits, prior encounters): Wasserstein distance
  normed by the reference's standard deviation (`wasserstein`), drifted at 0.2: the mass
  moved a fifth of a standard deviation on average. Evidently's default, 0.1, is what steady
  windows of 2,000 rows reach on the heavy-tailed visit counts (up to 0.10 on
  number_emergency over ten windows). A unit or feed error (a count x10) scores in the tens.
- Every other field is a category, the admission, discharge and source codes included (their
  numbers are labels): Jensen-Shannon distance (`jensenshannon`), drifted at 0.1. Two
  preparations keep the sampling noise of a 2,000-row window far below it: diagnosis codes
  (700+ ICD-9 codes, 0.2 on steady windows as they are) are compared by their clinical
  group (the model's own grouping), and a value seen in under 1% of reference rows (or never)
  counts as one value "__other__". Missing is a value of its own ("__missing__"; a lab test
  not taken is the data set's "None"), so a field suddenly recorded, or suddenly missing, is
  drift. Steady windows then score at most 0.04 on any category.
- The probability: normed Wasserstein distance against the test-split probabilities, drifted
  at 0.1 (a smooth, light-tailed distribution: its steady noise is far smaller).
Measured on the whole data set: ten steady windows of 2,000 test-split rows against the
training rows, no field drifted (bench/monitoring.py prints these figures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from readmit.features import COUNT_FIELDS, DIAG_FIELDS, icd9_group
from readmit.schema import BY_FIELD, INPUT_FIELDS, is_missing

NUMERIC_FIELDS = (*COUNT_FIELDS, "prior_encounters")
CATEGORY_FIELDS = tuple(f for f in INPUT_FIELDS if f not in NUMERIC_FIELDS)
DRIFT_FIELDS = (*NUMERIC_FIELDS, *CATEGORY_FIELDS)
NUMERIC_METHOD = "wasserstein"
CATEGORY_METHOD = "jensenshannon"
NUMERIC_THRESHOLD = 0.2
CATEGORY_THRESHOLD = 0.1
PREDICTION_METHOD = "wasserstein"
PREDICTION_THRESHOLD = 0.1
RARE_SHARE = 0.01
REFERENCE_ROWS = 20_000  # a seeded sample of the training rows: Evidently's cost grows with it
MISSING_VALUE = "__missing__"
OTHER_VALUE = "__other__"
PROBABILITY = "probability"


@dataclass
class ColumnDrift:
    method: str
    threshold: float
    score: float

    @property
    def drifted(self) -> bool:
        return self.score >= self.threshold  # as Evidently decides for distances


@dataclass
class DriftFigures:
    features: dict[str, ColumnDrift]
    prediction: ColumnDrift
    snapshots: list[Any] = field(default_factory=list, repr=False)

    @property
    def drifted_features(self) -> list[str]:
        """Drifted fields, the most drifted first (score over threshold)."""
        drifted = [(c.score / c.threshold, n) for n, c in self.features.items() if c.drifted]
        return [name for _, name in sorted(drifted, reverse=True)]

    @property
    def drift_share(self) -> float:
        return len(self.drifted_features) / max(len(self.features), 1)

    @property
    def drift_detected(self) -> bool:
        return bool(self.drifted_features) or self.prediction.drifted

    def as_json(self) -> dict[str, Any]:
        return {
            "drift_share": self.drift_share,
            "drifted_features": self.drifted_features,
            "prediction_drift": _column_json(self.prediction),
            "features": {n: _column_json(c) for n, c in self.features.items()},
        }

    def save_html(self, folder: Path) -> list[Path]:
        """Evidently's own HTML reports: inputs, then probabilities."""
        paths = []
        for name, snapshot in zip(("input_drift", "prediction_drift"), self.snapshots, strict=True):
            path = folder / f"{name}.html"
            snapshot.save_html(str(path))
            paths.append(path)
        return paths


def _column_json(column: ColumnDrift) -> dict[str, Any]:
    return {
        "method": column.method,
        "threshold": column.threshold,
        "score": column.score,
        "drifted": column.drifted,
    }


def _category_text(name: str, value: Any) -> str:
    if is_missing(value):
        return BY_FIELD[name].missing_as or MISSING_VALUE
    if name in DIAG_FIELDS:
        return icd9_group(value) or MISSING_VALUE
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """The drift fields of logged-form rows as Evidently compares them: counts as floats,
    everything else as text with missing as a value and diagnoses by group."""
    out = pd.DataFrame(index=range(len(frame)))
    for name in NUMERIC_FIELDS:
        out[name] = pd.to_numeric(frame[name].reset_index(drop=True), errors="coerce").astype(float)
    for name in CATEGORY_FIELDS:
        out[name] = _category_column(name, frame[name])
    return out


def _category_column(name: str, values: pd.Series) -> np.ndarray:
    """Each distinct value prepared once (a window has 50,000 rows and a few values per field);
    None and NaN get code -1, which picks the last text: the missing one."""
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    texts = [_category_text(name, value) for value in uniques]
    return np.array([*texts, _category_text(name, None)], dtype=object)[codes]


def lump_rare(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    """Values under RARE_SHARE of the reference (or absent from it) become OTHER_VALUE, in place."""
    for name in CATEGORY_FIELDS:
        shares = reference[name].value_counts(normalize=True)
        kept = set(shares.index[shares >= RARE_SHARE])
        for frame in (reference, current):
            frame[name] = frame[name].where(frame[name].isin(kept), OTHER_VALUE)


def feature_and_prediction_drift(
    reference_inputs: pd.DataFrame,
    current_inputs: pd.DataFrame,
    reference_probabilities: np.ndarray,
    current_probabilities: np.ndarray,
) -> DriftFigures:
    """Per-field and probability drift of the current window against the reference."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    if len(reference_inputs) > REFERENCE_ROWS:
        reference_inputs = reference_inputs.sample(REFERENCE_ROWS, random_state=0)
    reference, current = comparable(reference_inputs), comparable(current_inputs)
    lump_rare(reference, current)
    definition = DataDefinition(
        numerical_columns=list(NUMERIC_FIELDS), categorical_columns=list(CATEGORY_FIELDS)
    )
    preset = DataDriftPreset(
        columns=list(DRIFT_FIELDS),
        num_method=NUMERIC_METHOD,
        num_threshold=NUMERIC_THRESHOLD,
        cat_method=CATEGORY_METHOD,
        cat_threshold=CATEGORY_THRESHOLD,
    )
    inputs = Report([preset]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    scores = _value_drift_scores(inputs.dict())
    features = {
        name: ColumnDrift(
            NUMERIC_METHOD if name in NUMERIC_FIELDS else CATEGORY_METHOD,
            NUMERIC_THRESHOLD if name in NUMERIC_FIELDS else CATEGORY_THRESHOLD,
            scores[name],
        )
        for name in DRIFT_FIELDS
    }
    probability_definition = DataDefinition(numerical_columns=[PROBABILITY])
    predictions = Report(
        [ValueDrift(column=PROBABILITY, method=PREDICTION_METHOD, threshold=PREDICTION_THRESHOLD)]
    ).run(
        Dataset.from_pandas(
            pd.DataFrame({PROBABILITY: current_probabilities}),
            data_definition=probability_definition,
        ),
        Dataset.from_pandas(
            pd.DataFrame({PROBABILITY: reference_probabilities}),
            data_definition=probability_definition,
        ),
    )
    score = _value_drift_scores(predictions.dict())[PROBABILITY]
    prediction = ColumnDrift(PREDICTION_METHOD, PREDICTION_THRESHOLD, score)
    return DriftFigures(features, prediction, [inputs, predictions])


def _value_drift_scores(snapshot: dict[str, Any]) -> dict[str, float]:
    """Column -> score of every ValueDrift metric of an Evidently snapshot's dict."""
    scores = {}
    for metric in snapshot["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            scores[str(config["column"])] = float(metric["value"])
    return scores
