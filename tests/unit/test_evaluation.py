"""Calibration, bootstrap interval and threshold choice on data whose answer is known.

Each expected figure is computed here from its definition (Brier score as a mean of squares,
F1 from counts, AUC of a binormal model), not by the functions under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from readmit.evaluation import bootstrap_auc_interval, choose_calibration, choose_threshold


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((probabilities - labels) ** 2))


def calibrated_buckets() -> tuple[np.ndarray, np.ndarray]:
    """Margins on a few values, each with exactly sigmoid(margin) of its rows positive.

    The raw probability of every row is its bucket's positive rate, the best any function of
    the margin can do for the Brier score: Platt scaling cannot help.
    """
    margins, labels = [], []
    for rate in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7):
        rows, positives = 400, round(400 * rate)
        margins += [math.log(rate / (1 - rate))] * rows
        labels += [1] * positives + [0] * (rows - positives)
    order = np.random.default_rng(0).permutation(len(labels))
    return np.array(margins)[order], np.array(labels)[order]


def test_calibration_is_applied_when_the_margins_are_overconfident():
    rng = np.random.default_rng(1)
    margin = rng.normal(0.0, 3.0, 6000)
    labels = (rng.random(6000) < sigmoid(0.4 * margin - 2.0)).astype(int)
    choice = choose_calibration(margin, labels)
    assert choice.brier_raw == pytest.approx(brier(sigmoid(margin), labels), rel=1e-12)
    assert choice.applied
    assert choice.calibration.slope == pytest.approx(0.4, abs=0.05)
    assert choice.calibration.intercept == pytest.approx(-2.0, abs=0.15)
    fitted = sigmoid(choice.calibration.slope * margin + choice.calibration.intercept)
    assert brier(fitted, labels) < choice.brier_raw - 0.05  # a large, real improvement
    assert choice.brier_calibrated == pytest.approx(brier(fitted, labels), abs=2e-3)


def test_calibration_is_not_applied_when_the_margins_are_already_calibrated():
    margin, labels = calibrated_buckets()
    best = sum(r * (1 - r) * 400 for r in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)) / len(labels)
    choice = choose_calibration(margin, labels)
    assert choice.brier_raw == pytest.approx(best, rel=1e-9)
    assert choice.brier_calibrated > choice.brier_raw
    assert not choice.applied
    assert (choice.calibration.slope, choice.calibration.intercept) == (1.0, 0.0)


def binormal_sample(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, ...]:
    labels = (rng.random(n) < 0.3).astype(int)
    scores = rng.normal(0.0, 1.0, n) + shift * labels
    return labels, scores


def _coverage(level: float, seed: int, trials: int = 25) -> tuple[int, list[float]]:
    """How many of `trials` intervals at `level` cover the true AUC, and their widths.
    Binormal scores with unit variances: the true AUC is Phi(shift / sqrt(2))."""
    shift = 1.0
    true_auc = 0.5 * (1 + math.erf(shift / 2))  # Phi(shift / sqrt 2)
    rng = np.random.default_rng(seed)
    covered, widths = 0, []
    for trial in range(trials):
        labels, scores = binormal_sample(rng, 400, shift)
        low, high = bootstrap_auc_interval(
            labels, scores, np.arange(400), rounds=100, seed=trial, level=level
        )
        covered += low <= true_auc <= high
        widths.append(high - low)
    return covered, widths


def test_bootstrap_interval_covers_the_true_auc_at_about_its_level():
    covered, widths = _coverage(0.95, seed=2)
    assert covered >= 21, covered  # nominal 95 %: about 24 of 25
    assert 0.05 < np.mean(widths) < 0.2, widths  # not covering by being uselessly wide


def test_a_half_level_interval_covers_about_half_the_time():
    """The level is used: a 50 % interval misses the true AUC about half the time (a 95 % one
    in its place would cover about 24 of 25)."""
    covered, _ = _coverage(0.5, seed=4)
    assert 6 <= covered <= 19, covered  # nominal 12.5 of 25, sd 2.5


def test_bootstrap_resamples_patients_not_encounters():
    """Five identical encounters per patient carry no more information than one: the interval
    must equal the one of the de-duplicated data, not be sqrt(5) times narrower."""
    rng = np.random.default_rng(3)
    labels, scores = binormal_sample(rng, 300, 1.0)
    single = bootstrap_auc_interval(labels, scores, np.arange(300), rounds=100, seed=5)
    repeated = bootstrap_auc_interval(
        np.repeat(labels, 5), np.repeat(scores, 5), np.repeat(np.arange(300), 5), rounds=100, seed=5
    )
    assert repeated == pytest.approx(single, abs=1e-12)
    by_encounter = bootstrap_auc_interval(
        np.repeat(labels, 5), np.repeat(scores, 5), np.arange(1500), rounds=100, seed=5
    )
    assert by_encounter[1] - by_encounter[0] < 0.7 * (single[1] - single[0])


def best_f1_by_brute_force(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """Every distinct probability tried as the cut `p >= t`: the best F1 and its cut."""
    best = (-1.0, 0.0)
    for cut in sorted(set(probabilities.tolist())):
        flagged = probabilities >= cut
        tp = int((flagged & (labels == 1)).sum())
        fp = int((flagged & (labels == 0)).sum())
        fn = int((~flagged & (labels == 1)).sum())
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best[0]:
            best = (f1, cut)
    return best


def f1_at(labels: np.ndarray, probabilities: np.ndarray, cut: float) -> float:
    flagged = probabilities >= cut
    tp = int((flagged & (labels == 1)).sum())
    return 2 * tp / (int(flagged.sum()) + int(labels.sum()))


def test_threshold_on_a_small_hand_made_case():
    labels = np.array([1, 1, 0, 1, 0, 0, 0])
    probabilities = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1, 0.05])
    # Cut at 0.6: 3 flagged true, 1 false -> F1 6/7, better than 0.8 (4/5) or 0.9 (1/2).
    assert choose_threshold(labels, probabilities) == 0.6


@pytest.mark.parametrize("seed", range(5))
def test_threshold_maximises_f1_with_ties_cut_only_between_distinct_values(seed):
    rng = np.random.default_rng(seed)
    probabilities = np.round(rng.random(500), 2)  # many ties
    labels = (rng.random(500) < probabilities * 0.5).astype(int)
    best_f1, best_cut = best_f1_by_brute_force(labels, probabilities)
    chosen = choose_threshold(labels, probabilities)
    assert chosen in set(probabilities.tolist())
    assert f1_at(labels, probabilities, chosen) == pytest.approx(best_f1, abs=1e-12)
    assert chosen == best_cut


def test_the_threshold_is_never_inside_a_run_of_equal_probabilities():
    """In sorted order the first 0.5 is a positive: stopping there would score F1 = 1, but a
    cut at 0.5 flags all five rows of 0.5, F1 = 0.5. The cut at 0.9 (F1 = 2/3) is the best."""
    labels = np.array([1, 1, 0, 0, 0, 0, 0])
    probabilities = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1])
    assert f1_at(labels, probabilities, 0.9) == pytest.approx(2 / 3)
    assert f1_at(labels, probabilities, 0.5) == pytest.approx(0.5)
    assert choose_threshold(labels, probabilities) == 0.9
