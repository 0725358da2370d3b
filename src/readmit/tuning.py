"""Hyperparameter search for the boosted candidates, on the validation split, within a budget.

Each booster's study starts with the fixed parameters as its first trial, fitted exactly as an
untuned training fits them, so a search never ends below them on validation. Later trials are
proposed by Optuna's TPE sampler, seeded, until the booster's share of the budget is spent; a
trial still fitting when the time runs out is cut and recorded as pruned. Every trial fits on
train with early stopping on validation and is scored by ROC-AUC on validation: this module is
given no test rows at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import roc_auc_score

from readmit.model import Estimator

TUNED = ("xgboost", "lightgbm")
TRIALS_ARTIFACT = "tuning/trials.json"

# A fit of one booster: parameter overrides and training callbacks in; the fitted estimator,
# its full parameters and its boosting rounds out.
Fit = Callable[[dict[str, Any], Sequence[Any]], tuple[Estimator, dict[str, Any], int]]


class OutOfTime(Exception):
    """Raised from a booster's callback when the search's time is up."""


def xgboost_space(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "max_depth": trial.suggest_int("max_depth", 3, 8),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 100.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.2, 0.9),
        "reg_lambda": trial.suggest_float("reg_lambda", 0.1, 50.0, log=True),
    }


def lightgbm_space(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.15, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 63, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 400, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.2, 0.9),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 0.1, 50.0, log=True),
    }


SPACES: dict[str, Callable[[optuna.trial.BaseTrial], dict[str, Any]]] = {
    "xgboost": xgboost_space,
    "lightgbm": lightgbm_space,
}


def deadline_callback(name: str, deadline: float) -> Any:
    """A training callback of `name`'s library that raises OutOfTime past `deadline`."""
    if name == "xgboost":
        import xgboost as xgb

        class XGBoostDeadline(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                if time.monotonic() > deadline:
                    raise OutOfTime
                return False

        return XGBoostDeadline()

    def lightgbm_deadline(env: Any) -> None:
        if time.monotonic() > deadline:
            raise OutOfTime

    return lightgbm_deadline


@dataclass
class Fitted:
    """One trial's fitted booster and how it did on validation."""

    estimator: Estimator
    params: dict[str, Any]
    rounds: int
    validation_auc: float


@dataclass
class Tuning:
    """What one booster's search tried and chose: `trials` has one row per trial."""

    budget_seconds: float
    trials: pd.DataFrame
    best: Fitted
    baseline: Fitted
    seconds: float

    @property
    def n_trials(self) -> int:
        return len(self.trials)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = [
        {
            "trial": t.number,
            "state": t.state.name,
            "baseline": bool(t.user_attrs.get("baseline", False)),
            "validation_roc_auc": t.value if t.value is not None else math.nan,
            "rounds": t.user_attrs.get("rounds"),
            "seconds": round(t.duration.total_seconds(), 3) if t.duration else None,
            **{f"param_{k}": v for k, v in t.params.items()},
        }
        for t in study.trials
    ]
    return pd.DataFrame(rows)


def tune(
    name: str,
    fit: Fit,
    fixed: Mapping[str, Any],
    validation: tuple[np.ndarray, np.ndarray],
    seconds: float,
    seed: int,
    report: Callable[[str], None] = lambda _: None,
) -> Tuning:
    """Search `name`'s parameters for `seconds` after fitting the `fixed` ones; keep the best
    booster by validation ROC-AUC (computed from its margin, as untuned candidates are)."""
    xv, yv = validation
    clock = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), study_name=name
    )
    fitted: dict[str, Fitted] = {}
    deadline = math.inf

    def objective(trial: optuna.Trial) -> float:
        overrides = SPACES[name](trial)
        if trial.user_attrs.get("baseline"):  # the fixed parameters, fitted exactly as untuned
            overrides, callbacks = {}, []
        else:
            callbacks = [deadline_callback(name, deadline)]
        try:
            estimator, params, rounds = fit(overrides, callbacks)
        except OutOfTime:
            raise optuna.TrialPruned("the tuning budget ran out during this fit") from None
        result = Fitted(estimator, params, rounds, float(roc_auc_score(yv, estimator.margin(xv))))
        trial.set_user_attr("rounds", rounds)
        if trial.user_attrs.get("baseline"):
            fitted["baseline"] = result
        if "best" not in fitted or result.validation_auc > fitted["best"].validation_auc:
            fitted["best"] = result
        report(
            f"{name} trial {trial.number}: validation ROC-AUC {result.validation_auc:.4f}, "
            f"{rounds} rounds (best {fitted['best'].validation_auc:.4f})"
        )
        return result.validation_auc

    searched = SPACES[name](optuna.trial.FixedTrial(dict(fixed)))
    study.enqueue_trial(searched, user_attrs={"baseline": True})
    study.optimize(objective, n_trials=1)
    deadline = time.monotonic() + seconds
    study.optimize(objective, timeout=seconds)
    return Tuning(
        budget_seconds=seconds,
        trials=trials_table(study),
        best=fitted["best"],
        baseline=fitted["baseline"],
        seconds=time.perf_counter() - clock,
    )


def log_tuning(tuning: Tuning) -> None:
    """On the active run (the candidate's): the trials table, the budget and what it found."""
    import mlflow

    mlflow.log_table(tuning.trials, TRIALS_ARTIFACT)
    mlflow.log_param("tune_budget_seconds", tuning.budget_seconds)
    mlflow.log_metrics(
        {
            "tune_trials": float(tuning.n_trials),
            "tune_seconds": tuning.seconds,
            "tune_fixed_validation_roc_auc": tuning.baseline.validation_auc,
        }
    )
