"""The hyperparameter search: off, it fits the fixed parameters exactly; on, it keeps the best
trial on validation and logs every trial to the candidate's MLflow run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from readmit.pipeline.train import (
    EARLY_STOPPING_ROUNDS,
    LIGHTGBM_PARAMS,
    XGBOOST_PARAMS,
    fit_candidates,
    train,
)
from readmit.tuning import TRIALS_ARTIFACT, TUNED

ROUNDS = 30
BUDGET = 4.0


@pytest.fixture(scope="module")
def tuned(small_build, tmp_path_factory):
    """A training of the small build with a search of a few seconds, and its candidate runs."""
    folder = tmp_path_factory.mktemp("tuned")
    settings = small_build.settings.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{folder}/mlflow.db", "tune_seconds": BUDGET}
    )
    result = train(settings, max_rounds=ROUNDS, bootstrap_rounds=20)
    client = MlflowClient(settings.resolved_tracking_uri)
    parent = client.get_run(result.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    tables = {
        c.info.run_name: client.load_table(
            parent.info.experiment_id, TRIALS_ARTIFACT, run_ids=[c.info.run_id]
        )
        for c in children
        if c.info.run_name in TUNED
    }
    return settings, result, {c.info.run_name: c for c in children}, tables


def test_no_budget_fits_the_fixed_parameters_and_the_search_starts_from_them(small_data, tuned):
    settings, result, _, tables = tuned
    x, y = small_data.encoded("train"), small_data.labels("train")
    xv, yv = small_data.encoded("validation"), small_data.labels("validation")
    untuned = {
        c.name: c
        for c in fit_candidates(
            x, y, xv, yv, settings.random_seed, ROUNDS, lambda _: None, tune_seconds=0
        )
    }
    assert untuned["xgboost"].params == {
        **XGBOOST_PARAMS,
        "n_estimators": ROUNDS,
        "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
    }
    assert untuned["lightgbm"].params == {
        **LIGHTGBM_PARAMS,
        "seed": settings.random_seed,
        "max_rounds": ROUNDS,
    }
    assert all(c.tuning is None for c in untuned.values())
    for name in TUNED:
        baseline = tables[name].iloc[0]
        assert bool(baseline["baseline"]) and baseline["state"] == "COMPLETE"
        fixed = XGBOOST_PARAMS if name == "xgboost" else LIGHTGBM_PARAMS
        searched = [c.removeprefix("param_") for c in tables[name] if c.startswith("param_")]
        assert searched
        for param in searched:
            assert baseline[f"param_{param}"] == pytest.approx(fixed[param]), (name, param)
        # the search's first trial is the untuned fit itself: the same score, to the last bit
        assert result.tuning[name]["fixed_validation_roc_auc"] == untuned[name].validation_auc
        assert baseline["validation_roc_auc"] == pytest.approx(untuned[name].validation_auc)
        assert baseline["rounds"] == untuned[name].best_iteration, name


def test_every_trial_is_logged_to_its_candidate_run(tuned):
    _, result, runs, tables = tuned
    for name in TUNED:
        table, run = tables[name], runs[name]
        assert len(table) >= 2 and list(table["trial"]) == list(range(len(table)))
        assert set(table["state"]) <= {"COMPLETE", "PRUNED"}
        assert run.data.params["tuned"] == "True"
        assert float(run.data.params["tune_budget_seconds"]) == BUDGET / len(TUNED)
        assert run.data.metrics["tune_trials"] == len(table) == result.tuning[name]["trials"]
    assert runs["logistic_regression"].data.params["tuned"] == "False"


def test_the_chosen_parameters_are_the_best_trials_on_validation(tuned):
    _, result, runs, tables = tuned
    for name in TUNED:
        table, run = tables[name], runs[name]
        scored = table[table["state"] == "COMPLETE"]
        best = scored.loc[scored["validation_roc_auc"].idxmax()]
        assert run.data.metrics["validation_roc_auc"] == pytest.approx(best["validation_roc_auc"])
        assert run.data.metrics["best_iteration"] == best["rounds"]
        for column in (c for c in table.columns if c.startswith("param_")):
            logged = run.data.params[column.removeprefix("param_")]
            assert float(logged) == pytest.approx(float(best[column])), (name, column)
        facts = result.tuning[name]
        assert facts["best_validation_roc_auc"] == pytest.approx(best["validation_roc_auc"])
        assert facts["fixed_validation_roc_auc"] == pytest.approx(table["validation_roc_auc"][0])
        assert facts["best_validation_roc_auc"] >= facts["fixed_validation_roc_auc"]
