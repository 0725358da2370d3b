"""Live performance of the served model, on the logged predictions whose outcome came back.

ROC-AUC with a 95% interval that resamples patients (their pseudonyms), as the test figures
do; the Brier score; and calibration in the large: the observed readmission rate beside the
mean predicted probability. A window without enough outcomes of both kinds has no figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from readmit.evaluation import bootstrap_auc_interval

MIN_PER_CLASS = 10  # readmitted and not readmitted, each, for an AUC worth reporting
BOOTSTRAP_ROUNDS = 1000


@dataclass
class LivePerformance:
    labelled_rows: int
    positives: int
    roc_auc: float
    roc_auc_ci_low: float
    roc_auc_ci_high: float
    brier: float
    observed_rate: float
    mean_predicted: float

    @property
    def calibration_gap(self) -> float:
        """Observed minus predicted: > 0 when the model underestimates readmissions."""
        return self.observed_rate - self.mean_predicted

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "calibration_gap": self.calibration_gap}


def enough_outcomes(labels: np.ndarray, minimum: int) -> str | None:
    """Why the labelled rows cannot be judged yet, or None when they can."""
    positives = int(labels.sum())
    if len(labels) < minimum:
        return f"{len(labels):,} predictions have an outcome; live performance needs {minimum:,}"
    if min(positives, len(labels) - positives) < MIN_PER_CLASS:
        return (
            f"{positives:,} of {len(labels):,} outcomes are readmissions; live performance "
            f"needs {MIN_PER_CLASS} of each outcome"
        )
    return None


def live_performance(
    labels: np.ndarray, probabilities: np.ndarray, patients: np.ndarray, seed: int
) -> LivePerformance:
    """Figures of labelled rows (`labels` 0/1; `patients` one key per row for the bootstrap)."""
    low, high = bootstrap_auc_interval(labels, probabilities, patients, BOOTSTRAP_ROUNDS, seed)
    return LivePerformance(
        labelled_rows=len(labels),
        positives=int(labels.sum()),
        roc_auc=float(roc_auc_score(labels, probabilities)),
        roc_auc_ci_low=low,
        roc_auc_ci_high=high,
        brier=float(brier_score_loss(labels, probabilities)),
        observed_rate=float(labels.mean()),
        mean_predicted=float(probabilities.mean()),
    )
