"""Subgroup audit and decision curve on synthetic encounters whose answers are computed here
from their definitions (masks, means, sklearn's AUC), not by the functions under test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from readmit.audit import AuditRules, audit_subgroups, subgroups, weighted_auc
from readmit.decision_curve import decision_curve, net_benefit, number_needed_to_evaluate

RULES = AuditRules(min_positives=40, max_auc_gap=0.05, max_calibration_gap=0.05)


def encounters(rows: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Raw fields as the model takes them, labels and scores with real signal (AUC ~0.75)."""
    rng = np.random.default_rng(seed)
    inputs = pd.DataFrame(
        {
            "race": rng.choice(
                ["Caucasian", "AfricanAmerican", "Asian", "?"], rows, p=[0.7, 0.2, 0.02, 0.08]
            ),
            "gender": rng.choice(
                ["Female", "Male", "Unknown/Invalid"], rows, p=[0.53, 0.469, 0.001]
            ),
            "age": rng.choice([f"[{10 * i}-{10 * (i + 1)})" for i in range(10)], rows),
            "payer_code": rng.choice(["MC", "SP", "?", "BC"], rows, p=[0.4, 0.1, 0.4, 0.1]),
            "admission_type_id": rng.choice([1, 2, 3, 5, 6, 7, 8], rows),
        }
    )
    labels = (rng.random(rows) < 0.12).astype(np.int64)
    margin = rng.normal(0, 1, rows) + 1.0 * labels
    probabilities = 1 / (1 + np.exp(-(margin - 2.5)))
    return inputs, labels, probabilities


def test_groups_come_from_the_raw_fields():
    frame = pd.DataFrame(
        {
            "race": ["?", "Asian"],
            "gender": ["Unknown/Invalid", "Male"],
            "age": ["[40-50)", "[80-90)"],
            "payer_code": ["SP", None],
            "admission_type_id": [6, 3],
        }
    )
    groups = subgroups(frame)
    assert groups.to_dict("records") == [
        {
            "race": "unknown",
            "gender": "unknown",
            "age_band": "0-49",
            "payer": "self-pay",
            "admission_type": "unknown",
        },
        {
            "race": "Asian",
            "gender": "Male",
            "age_band": "80+",
            "payer": "unknown",
            "admission_type": "elective",
        },
    ]
    assert subgroups(frame.assign(payer_code=["MC", "?"]))["payer"].tolist() == [
        "insured",
        "unknown",
    ]


def test_weighted_auc_matches_sklearn_with_ties_and_repeats():
    rng = np.random.default_rng(3)
    labels = (rng.random(800) < 0.2).astype(np.int64)
    scores = np.round(rng.random(800) + 0.3 * labels, 2)  # many ties
    weights = rng.integers(0, 4, 800)
    mask = weights > 0
    expected = roc_auc_score(labels[mask], scores[mask], sample_weight=weights[mask])
    assert weighted_auc(labels, scores, weights) == pytest.approx(expected, abs=1e-12)


def test_metricframe_figures_match_an_independent_computation_for_one_group():
    inputs, labels, probabilities = encounters()
    patients = np.arange(len(labels)) // 2
    audit = audit_subgroups(labels, probabilities, patients, inputs, 0.2, RULES, rounds=50)
    row = audit.table.set_index(["attribute", "group"]).loc[("race", "AfricanAmerican")]
    mask = (inputs["race"] == "AfricanAmerican").to_numpy()
    y, p = labels[mask], probabilities[mask]
    flagged = p >= 0.2
    assert row["encounters"] == mask.sum() and row["positives"] == y.sum()
    assert row["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert row["observed_rate"] == pytest.approx(y.mean(), abs=1e-12)
    assert row["mean_predicted"] == pytest.approx(p.mean(), abs=1e-12)
    assert row["calibration_gap"] == pytest.approx(y.mean() - p.mean(), abs=1e-12)
    assert row["sensitivity"] == pytest.approx(flagged[y == 1].mean(), abs=1e-12)
    assert row["ppv"] == pytest.approx(y[flagged].mean(), abs=1e-12)
    assert row["flagged_rate"] == pytest.approx(flagged.mean(), abs=1e-12)
    for name in ("roc_auc", "observed_rate", "sensitivity", "ppv", "flagged_rate"):
        assert row[f"{name}_ci_low"] <= row[name] <= row[f"{name}_ci_high"], name


def test_small_groups_are_marked_not_hidden_and_a_real_signal_passes():
    inputs, labels, probabilities = encounters()
    audit = audit_subgroups(labels, probabilities, np.arange(len(labels)), inputs, 0.2, RULES, 100)
    table = audit.table.set_index(["attribute", "group"])
    assert table.loc[("race", "Asian"), "small"]  # ~120 encounters, ~15 positives
    assert not table.loc[("race", "Caucasian"), "small"]
    assert table.loc[("gender", "unknown"), "encounters"] >= 1
    assert audit.passed, audit.failures


def test_scores_shuffled_within_one_group_fail_the_gate_for_that_group():
    inputs, labels, probabilities = encounters()
    mask = (inputs["race"] == "AfricanAmerican").to_numpy()
    broken = probabilities.copy()
    broken[mask] = np.random.default_rng(1).permutation(broken[mask])
    audit = audit_subgroups(labels, broken, np.arange(len(labels)), inputs, 0.2, RULES, 200)
    assert not audit.passed
    assert len(audit.failures) == 1
    assert audit.failures[0].startswith("race=AfricanAmerican")
    assert "wholly below" in audit.failures[0]


def test_a_miscalibrated_group_fails_the_gate():
    inputs, labels, probabilities = encounters()
    mask = (inputs["payer_code"] == "MC").to_numpy()
    shifted = probabilities.copy()
    shifted[mask] = np.clip(shifted[mask] + 0.15, 0, 1)  # ranks kept, risk overstated
    audit = audit_subgroups(labels, shifted, np.arange(len(labels)), inputs, 0.2, RULES, 200)
    assert any(f.startswith("payer=insured") and "calibration gap" in f for f in audit.failures)


def test_net_benefit_and_number_needed_to_evaluate_from_counts():
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.6, 0.7, 0.4, 0.1, 0.2, 0.3, 0.05, 0.5, 0.2])
    # At 0.5: flagged 0.9, 0.6, 0.7, 0.5 -> TP 2, FP 2.
    assert net_benefit(labels, scores, 0.5) == pytest.approx((2 - 2 * 1.0) / 10)
    assert number_needed_to_evaluate(labels, scores, 0.5) == pytest.approx(4 / 2)
    curve = decision_curve(labels, scores, chosen=0.25)
    chosen = curve[curve["chosen"]].iloc[0]
    assert chosen["threshold"] == 0.25
    assert chosen["net_benefit_treat_all"] == pytest.approx(0.3 - 0.7 * 0.25 / 0.75)
    assert (curve["net_benefit_treat_none"] == 0).all()
    assert curve["threshold"].is_monotonic_increasing
