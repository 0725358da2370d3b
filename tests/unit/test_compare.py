"""Champion against challenger on live outcomes: which rows are compared, the figures against an
independent computation on the same rows, and the decision rule.

The log windows are made here with known signal: labels drawn first, then each model's score
as label x skill + noise, so a model with more skill ranks better by construction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score
from typer.testing import CliRunner

from readmit.cli import app
from readmit.monitoring.compare import (
    KEEP,
    PROMOTE,
    WAIT,
    compare_rows,
    compared_rows,
    decide,
    labels_needed,
)

ROUNDS = 200
SEED = 7


def _window(
    patients: int,
    champion_skill: float,
    challenger_skill: float,
    mode: str = "shadow",
    seed: int = 0,
    labelled_share: float = 1.0,
    shared_noise: float = 0.0,
) -> pd.DataFrame:
    """A prediction-log window: each patient has 1-3 encounters; shadow: a champion and a shadow
    row per encounter; canary: one row per encounter, the arm fixed per patient (one in five
    patients on the challenger)."""
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 4, patients)
    patient = np.repeat(np.arange(patients), per_patient)
    n = len(patient)
    encounter = np.arange(10_000, 10_000 + n)
    label = (rng.random(n) < 0.15).astype(int)
    has_label = rng.random(n) < labelled_share
    common = rng.normal(0, shared_noise, n)  # what both models get wrong about an encounter
    rows = []
    for variant, version, skill in (
        ("champion", "3", champion_skill),
        ("shadow" if mode == "shadow" else "challenger", "4", challenger_skill),
    ):
        score = 1 / (1 + np.exp(-(label * skill + common + rng.normal(0, 1, n) - 2)))
        keep = np.ones(n, dtype=bool)
        if mode == "canary":
            on_challenger = (patient % 5) == 0
            keep = on_challenger if variant == "challenger" else ~on_challenger
        rows.append(
            pd.DataFrame(
                {
                    "row_id": [f"{variant}-{e}" for e in encounter[keep]],
                    "scored_at": pd.Timestamp("2026-01-01", tz="UTC")
                    + pd.to_timedelta(np.arange(n)[keep], unit="s"),
                    "model_name": "readmission",
                    "model_version": version,
                    "variant": variant,
                    "encounter_id": encounter[keep],
                    "patient_key": [f"p{p:05d}" for p in patient[keep]],
                    "probability": score[keep],
                    "label": np.where(has_label, label, -1)[keep],  # -1: no outcome yet
                }
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    frame = frame[frame["label"] != -1].astype({"label": "int64", "encounter_id": "int64"})
    return frame.sort_values(["scored_at", "row_id"], ignore_index=True)  # as read_labelled


def _independent_interval(rows: pd.DataFrame, rounds: int, seed: int) -> tuple[float, float]:
    """The patient bootstrap written out: draw patients, stack each drawn patient's rows (both
    arms) once per draw, and take sklearn's AUC of each arm on the stacked rows."""
    keys = rows["patient"].to_numpy(object)
    patients = np.unique(keys)
    positions = {p: np.flatnonzero(keys == p) for p in patients}
    labels, scores, arm = (rows[c].to_numpy() for c in ("label", "probability", "arm"))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        drawn = patients[rng.integers(0, len(patients), len(patients))]
        stacked = np.concatenate([positions[p] for p in drawn])
        y, s, a = labels[stacked], scores[stacked], arm[stacked]
        if len(set(y[a == 0])) < 2 or len(set(y[a == 1])) < 2:
            continue
        values.append(roc_auc_score(y[a == 1], s[a == 1]) - roc_auc_score(y[a == 0], s[a == 0]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def test_shadow_rows_are_the_labelled_encounters_both_models_scored_newest_score_each():
    window = _window(300, 1.0, 1.0, labelled_share=0.6)
    # A score of an older challenger version, a repeated score, and a lone champion row.
    old = window[window["variant"] == "shadow"].head(20).assign(model_version="2")
    old["scored_at"] -= pd.Timedelta(days=1)
    old["row_id"] = "old-" + old["row_id"]
    again = window[window["variant"] == "champion"].head(5).copy()
    again["scored_at"] += pd.Timedelta(days=1)
    again["row_id"] += "-again"
    again["probability"] = 0.999
    lone = window[window["variant"] == "champion"].tail(1).copy()
    lone["encounter_id"] = 1
    lone["row_id"] = "lone"
    logged = pd.concat([old, window, again, lone], ignore_index=True)
    logged = logged.sort_values(["scored_at", "row_id"], ignore_index=True)

    mode, champion, challenger, rows = compared_rows(logged)

    assert mode == "shadow"
    assert (champion.model_version, challenger.model_version) == ("3", "4")
    assert set(rows["encounter_id"]) == set(window["encounter_id"])
    assert all(sorted(arms) == [0, 1] for arms in rows.groupby("encounter_id")["arm"].agg(list))
    newest = rows[(rows["arm"] == 0) & rows["encounter_id"].isin(again["encounter_id"])]
    assert len(newest) == len(again) and (newest["probability"] == 0.999).all()


def test_the_paired_comparison_matches_an_independent_computation_on_the_same_rows():
    logged = _window(600, 1.2, 2.0, seed=1)
    result = compare_rows(logged, min_labels=100, seed=SEED, rounds=ROUNDS)
    _, _, _, rows = compared_rows(logged)
    a, b = rows[rows["arm"] == 0], rows[rows["arm"] == 1]
    assert (a["encounter_id"].to_numpy() == b["encounter_id"].to_numpy()).all()

    champion_auc = roc_auc_score(a["label"], a["probability"])
    challenger_auc = roc_auc_score(b["label"], b["probability"])
    assert result.champion.roc_auc == pytest.approx(champion_auc, abs=1e-12)
    assert result.challenger.roc_auc == pytest.approx(challenger_auc, abs=1e-12)
    assert result.auc_difference == pytest.approx(challenger_auc - champion_auc, abs=1e-12)
    assert result.champion.brier == pytest.approx(
        float(np.mean((a["probability"] - a["label"]) ** 2)), abs=1e-12
    )
    assert result.challenger.brier == pytest.approx(
        brier_score_loss(b["label"], b["probability"]), abs=1e-12
    )
    assert result.labelled == len(a) == len(set(logged["encounter_id"]))
    low, high = _independent_interval(rows, ROUNDS, SEED)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-12)
    assert result.ci_low < result.auc_difference < result.ci_high


def test_the_paired_interval_is_narrower_than_an_unpaired_one_on_the_same_scores():
    """Pairing is what the shadow mode buys: both scores of an encounter share its noise, and
    resampling them together cancels it."""
    logged = _window(600, 2.0, 2.0, seed=2, shared_noise=2.0)
    paired = compare_rows(logged, min_labels=100, seed=SEED, rounds=ROUNDS)
    apart = logged.copy()  # the same scores, the challenger's rows under other patients
    shadow = apart["variant"] == "shadow"
    apart.loc[shadow, "patient_key"] = "other-" + apart.loc[shadow, "patient_key"]
    unpaired = compare_rows(apart, min_labels=100, seed=SEED, rounds=ROUNDS)
    assert paired.auc_difference == pytest.approx(unpaired.auc_difference, abs=1e-12)
    assert paired.ci_high - paired.ci_low < 0.6 * (unpaired.ci_high - unpaired.ci_low)


def test_canary_arms_are_compared_unpaired_and_match_an_independent_computation():
    logged = _window(1000, 1.0, 2.5, mode="canary", seed=3)
    result = compare_rows(logged, min_labels=100, seed=SEED, rounds=ROUNDS)
    mode, _, _, rows = compared_rows(logged)
    assert mode == result.mode == "canary"
    a, b = rows[rows["arm"] == 0], rows[rows["arm"] == 1]
    assert not set(a["patient"]) & set(b["patient"])
    assert result.labelled == len(a) + len(b)
    assert result.auc_difference == pytest.approx(
        roc_auc_score(b["label"], b["probability"]) - roc_auc_score(a["label"], a["probability"]),
        abs=1e-12,
    )
    low, high = _independent_interval(rows, ROUNDS, SEED)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-12)


@pytest.mark.parametrize(
    ("champion_skill", "challenger_skill", "min_labels", "decision"),
    [
        (1.0, 2.5, 500, PROMOTE),  # clearly better, enough labels
        (1.5, 1.5, 500, KEEP),  # the same skill
        (2.5, 1.0, 500, KEEP),  # clearly worse
        (1.0, 2.5, 100_000, WAIT),  # clearly better, too few labels
    ],
)
def test_the_decision(champion_skill, challenger_skill, min_labels, decision):
    logged = _window(800, champion_skill, challenger_skill, seed=4)
    result = compare_rows(logged, min_labels=min_labels, seed=SEED, rounds=ROUNDS)
    assert result.decision == decision, result.reasons
    if decision == PROMOTE:
        assert result.ci_low > 0
    if challenger_skill < champion_skill:
        assert result.ci_high < 0 and "below zero" in result.reasons[-1]


def test_no_challenger_or_one_sided_outcomes_wait_without_figures():
    only_champion = _window(200, 1.0, 1.0)
    only_champion = only_champion[only_champion["variant"] == "champion"]
    result = compare_rows(only_champion, min_labels=10, seed=SEED, rounds=ROUNDS)
    assert result.decision == WAIT and result.mode is None
    assert result.reasons == ["no labelled challenger scores in the window"]
    assert result.auc_difference is None

    few = _window(200, 1.0, 1.0, labelled_share=0.05, seed=5)
    result = compare_rows(few, min_labels=10, seed=SEED, rounds=ROUNDS)
    assert result.decision == WAIT and result.auc_difference is None
    assert "each outcome needs 10" in result.reasons[0]


def test_the_rule_and_the_labels_needed():
    assert decide(999, 0.01, 0.03, 0.02, 1000)[0] == WAIT
    assert decide(1000, 0.01, 0.03, 0.02, 1000)[0] == PROMOTE
    assert decide(1000, 0.0, 0.03, 0.015, 1000)[0] == KEEP  # touches zero: not above it
    assert decide(1000, -0.03, -0.01, -0.02, 1000)[0] == KEEP
    # Width 0.04 around +0.01 at 1,000 labels: the half-width must shrink 2x, so 4x the labels.
    assert labels_needed(1000, 0.01, -0.01, 0.03) == 4000
    assert labels_needed(1000, -0.01, -0.03, 0.01) is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--window", "7x"], "window: '7x' is not a positive duration"),
        (["--window", "-3d"], "window: '-3d' is not a positive duration"),
    ],
)
def test_bad_arguments_get_one_line(tmp_path, args, fragment):
    result = CliRunner().invoke(app, ["compare", *args], env={"READMIT_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.output


def test_a_bad_minimum_setting_gets_one_line(tmp_path):
    result = CliRunner().invoke(
        app,
        ["compare"],
        env={"READMIT_DATA_DIR": str(tmp_path), "READMIT_COMPARE_MIN_LABELS": "0"},
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "READMIT_COMPARE_MIN_LABELS" in errors[0], result.output
