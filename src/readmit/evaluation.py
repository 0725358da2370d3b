"""Metrics that a hospital can act on: discrimination with its uncertainty, calibration, and
the operating point. Accuracy is deliberately absent: nine in ten patients are negatives.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from readmit.model import Calibration


def patient_resamples(groups: np.ndarray, rounds: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap weights per row: each round draws patients (not encounters) with
    replacement, and a row counts as often as its patient was drawn (0 when not drawn)."""
    patient_codes, codes = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        draws = np.bincount(
            rng.integers(0, len(patient_codes), len(patient_codes)), minlength=len(patient_codes)
        )
        yield draws[codes]


def bootstrap_auc_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    rounds: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ROC-AUC, resampling patients (not encounters) with replacement."""
    values = []
    for weights in patient_resamples(groups, rounds, seed):
        mask = weights > 0
        if labels[mask].min() == labels[mask].max():
            continue
        values.append(roc_auc_score(labels[mask], scores[mask], sample_weight=weights[mask]))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The central `level` share of bootstrap values (NaN, NaN when none is finite)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


class WeightedAuc:
    """ROC-AUC of fixed labels and scores under changing row weights, in linear time: the
    scores are ranked once, so a thousand bootstrap rounds cost a thousand bincounts."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        _, self.rank = np.unique(scores, return_inverse=True)
        self.levels = int(self.rank.max()) + 1 if len(scores) else 0
        self.positive = np.asarray(labels, dtype=np.float64)

    def __call__(self, weights: np.ndarray) -> float:
        """Weighted AUC (ties count half); NaN when the weights leave one class only."""
        w = np.asarray(weights, dtype=np.float64)
        pos = np.bincount(self.rank, w * self.positive, self.levels)
        neg = np.bincount(self.rank, w * (1 - self.positive), self.levels)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


@dataclass
class AucDifference:
    """ROC-AUC of arm 1 minus that of arm 0, with a percentile interval."""

    difference: float
    ci_low: float
    ci_high: float
    rounds_used: int


def bootstrap_auc_difference(
    labels: np.ndarray,
    scores: np.ndarray,
    arm: np.ndarray,
    groups: np.ndarray,
    rounds: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> AucDifference:
    """AUC(arm 1) - AUC(arm 0), resampling patients over both arms at once.

    An encounter scored by both models is two rows with the same patient, so the resample is
    paired (the two scores move together); arms with different patients (a canary) give the
    unpaired interval from the same code. Rounds that leave an arm with one class are dropped.
    """
    first, second = arm == 0, arm == 1
    auc0 = WeightedAuc(labels[first], scores[first])
    auc1 = WeightedAuc(labels[second], scores[second])
    ones0, ones1 = np.ones(int(first.sum())), np.ones(int(second.sum()))
    difference = auc1(ones1) - auc0(ones0)
    values = []
    for weights in patient_resamples(groups, rounds, seed):
        value = auc1(weights[second]) - auc0(weights[first])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return AucDifference(difference, float("nan"), float("nan"), 0)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return AucDifference(float(difference), float(low), float(high), len(values))


@dataclass
class CalibrationChoice:
    calibration: Calibration
    brier_raw: float
    brier_calibrated: float
    applied: bool


def choose_calibration(margin: np.ndarray, labels: np.ndarray, seed: int = 0) -> CalibrationChoice:
    """Platt scaling on validation, kept only if it lowers the out-of-fold Brier score."""
    raw = Calibration().apply(margin)
    out_of_fold = np.zeros_like(raw)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    x = margin.reshape(-1, 1)
    for fit_rows, score_rows in folds.split(x, labels):
        platt = LogisticRegression(C=1e6).fit(x[fit_rows], labels[fit_rows])
        out_of_fold[score_rows] = platt.predict_proba(x[score_rows])[:, 1]
    brier_raw = float(brier_score_loss(labels, raw))
    brier_cal = float(brier_score_loss(labels, out_of_fold))
    if brier_cal < brier_raw:
        platt = LogisticRegression(C=1e6).fit(x, labels)
        fitted = Calibration(float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        return CalibrationChoice(fitted, brier_raw, brier_cal, applied=True)
    return CalibrationChoice(Calibration(), brier_raw, brier_cal, applied=False)


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The probability cut that maximises F1 on validation: flags enough patients to matter."""
    order = np.argsort(-probabilities, kind="stable")
    sorted_p, sorted_y = probabilities[order], labels[order]
    true_pos = np.cumsum(sorted_y)
    flagged = np.arange(1, len(sorted_y) + 1)
    f1 = 2 * true_pos / (flagged + sorted_y.sum())
    # Only cut between distinct probabilities, so the threshold means what it says.
    distinct = np.r_[sorted_p[1:] != sorted_p[:-1], True]
    best = int(np.argmax(np.where(distinct, f1, -1)))
    return float(sorted_p[best])


def operating_point(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, float]:
    flagged = probabilities >= threshold
    tp = int((flagged & (labels == 1)).sum())
    fp = int((flagged & (labels == 0)).sum())
    fn = int((~flagged & (labels == 1)).sum())
    tn = int((~flagged & (labels == 0)).sum())
    return {
        "sensitivity": tp / max(tp + fn, 1),
        "specificity": tn / max(tn + fp, 1),
        "ppv": tp / max(tp + fp, 1),
        "flagged_rate": (tp + fp) / max(len(labels), 1),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def evaluate_on_test(
    labels: np.ndarray,
    probabilities: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    seed: int = 0,
    bootstrap_rounds: int = 1000,
) -> dict[str, float]:
    """The headline metrics of a model on the test split."""
    low, high = bootstrap_auc_interval(labels, probabilities, groups, bootstrap_rounds, seed)
    metrics = {
        "roc_auc": float(roc_auc_score(labels, probabilities)),
        "roc_auc_ci_low": low,
        "roc_auc_ci_high": high,
        "pr_auc": float(average_precision_score(labels, probabilities)),
        "brier": float(brier_score_loss(labels, probabilities)),
        "positive_rate": float(labels.mean()),
        "threshold": threshold,
    }
    metrics.update(operating_point(labels, probabilities, threshold))
    return metrics
