"""The hyperparameter search: off, it fits the fixed parameters exactly; on, it keeps the best
trial on validation and logs every trial to the candidate's MLflow run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from readmit.pipeline.train import (
    EARLY_STOPPING_ROUNDS,
    LIGHTGBM_PARAMS,
    XGBOOST_PARAMS,
    Candidate,
    _log_candidates,
    fit_candidates,
    tuning_facts,
)
from readmit.settings import Settings
from readmit.tracking import configure
from readmit.tuning import TRIALS_ARTIFACT, TUNED

SEED = 42
ROUNDS = 30
BUDGET = 4.0


@dataclass
class Search:
    candidates: dict[str, Candidate]
    facts: dict[str, dict[str, float]]
    runs: dict[str, Run]
    tables: dict[str, pd.DataFrame]


def _fit(small_data: Any, tune_seconds: float) -> dict[str, Candidate]:
    x, y = small_data.encoded("train"), small_data.labels("train")
    xv, yv = small_data.encoded("validation"), small_data.labels("validation")
    fitted = fit_candidates(x, y, xv, yv, SEED, ROUNDS, lambda _: None, tune_seconds)
    return {c.name: c for c in fitted}


@pytest.fixture(scope="module")
def searched(small_data, tmp_path_factory) -> Search:
    """The candidates of the small build with a search of a few seconds, logged as training
    logs them, and what MLflow holds of them."""
    folder = tmp_path_factory.mktemp("tuned")
    settings = Settings(data_dir=folder, mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db")
    candidates = _fit(small_data, BUDGET)
    experiment = configure(settings)
    with mlflow.start_run(experiment_id=experiment) as parent:
        _log_candidates(list(candidates.values()), experiment, {})
    client = MlflowClient(settings.resolved_tracking_uri)
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    tables = {
        c.info.run_name: client.load_table(experiment, TRIALS_ARTIFACT, run_ids=[c.info.run_id])
        for c in children
        if c.info.run_name in TUNED
    }
    runs = {c.info.run_name: c for c in children}
    return Search(candidates, tuning_facts(list(candidates.values())), runs, tables)


def test_no_budget_fits_the_fixed_parameters_and_the_search_starts_from_them(small_data, searched):
    untuned = _fit(small_data, 0)
    assert untuned["xgboost"].params == {
        **XGBOOST_PARAMS,
        "n_estimators": ROUNDS,
        "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
    }
    assert untuned["lightgbm"].params == {**LIGHTGBM_PARAMS, "seed": SEED, "max_rounds": ROUNDS}
    assert all(c.tuning is None for c in untuned.values())
    xv = small_data.encoded("validation")
    for name in TUNED:
        first = searched.candidates[name].tuning.baseline
        # the search's first trial is the untuned fit itself, to the last bit
        assert first.params == untuned[name].params, name
        assert first.validation_auc == untuned[name].validation_auc, name
        np.testing.assert_array_equal(
            first.estimator.margin(xv), untuned[name].estimator.margin(xv)
        )
        table = searched.tables[name]
        assert bool(table["baseline"][0]) and table["state"][0] == "COMPLETE"
        assert table["validation_roc_auc"][0] == pytest.approx(first.validation_auc)
        fixed = XGBOOST_PARAMS if name == "xgboost" else LIGHTGBM_PARAMS
        columns = [c for c in table.columns if c.startswith("param_")]
        assert columns
        for column in columns:
            assert table[column][0] == pytest.approx(fixed[column.removeprefix("param_")])


def test_every_trial_is_logged_to_its_candidate_run(searched):
    for name in TUNED:
        table, run = searched.tables[name], searched.runs[name]
        assert len(table) >= 2 and list(table["trial"]) == list(range(len(table)))
        assert set(table["state"]) <= {"COMPLETE", "PRUNED"}
        assert run.data.params["tuned"] == "True"
        assert float(run.data.params["tune_budget_seconds"]) == BUDGET / len(TUNED)
        assert run.data.metrics["tune_trials"] == len(table) == searched.facts[name]["trials"]
    assert searched.runs["logistic_regression"].data.params["tuned"] == "False"


def test_the_chosen_parameters_are_the_best_trials_on_validation(small_data, searched):
    xv, yv = small_data.encoded("validation"), small_data.labels("validation")
    for name in TUNED:
        table, run, candidate = (
            searched.tables[name],
            searched.runs[name],
            searched.candidates[name],
        )
        scored = table[table["state"] == "COMPLETE"]
        best = scored.loc[scored["validation_roc_auc"].idxmax()]
        assert candidate.validation_auc == pytest.approx(best["validation_roc_auc"])
        assert run.data.metrics["validation_roc_auc"] == pytest.approx(best["validation_roc_auc"])
        assert run.data.metrics["best_iteration"] == best["rounds"] == candidate.best_iteration
        for column in (c for c in table.columns if c.startswith("param_")):
            logged = run.data.params[column.removeprefix("param_")]
            assert float(logged) == pytest.approx(float(best[column])), (name, column)
        # the score a trial is chosen by is the chosen booster's ROC-AUC on validation
        margin = candidate.estimator.margin(xv)
        ranks = pd.Series(margin).rank().to_numpy()
        positives = yv == 1
        auc = (ranks[positives].sum() - positives.sum() * (positives.sum() + 1) / 2) / (
            positives.sum() * (~positives).sum()
        )
        assert candidate.validation_auc == pytest.approx(auc, abs=1e-12)
        facts = searched.facts[name]
        assert facts["best_validation_roc_auc"] == candidate.validation_auc
        assert facts["best_validation_roc_auc"] >= facts["fixed_validation_roc_auc"]
