"""Train: three candidates on the latest clean build, the best by validation ROC-AUC evaluated
on test, logged to MLflow, registered, and promoted when it beats production.

Early stopping, model choice, calibration and the threshold use clean_validation only; the
test split is touched once, by the chosen model, through the registered artifact's own path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from types import MappingProxyType
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from readmit import plots
from readmit.errors import StorageError
from readmit.evaluation import (
    CalibrationChoice,
    choose_calibration,
    choose_threshold,
    evaluate_on_test,
)
from readmit.evidence import log_evidence
from readmit.explain import field_contributions
from readmit.features import FittedTransform
from readmit.model import (
    Estimator,
    LightGBMEstimator,
    LinearEstimator,
    ReadmissionModel,
    TrainingInfo,
    XGBoostEstimator,
)
from readmit.model_card import card_line
from readmit.monitoring.reference import log_reference
from readmit.registry import (
    Decision,
    Tag,
    compare_and_promote,
    discard_version,
    lineage_tags,
    register,
)
from readmit.repair import owner_tags, repair
from readmit.settings import Settings
from readmit.storage.clean import CleanBuild, open_clean_db, read_latest_build
from readmit.storage.raw import open_raw_db, read_model_inputs
from readmit.tracking import as_float_dict, configure, git_commit, log_figure, log_model
from readmit.tuning import TUNED, Tuning, log_tuning, tune

Report = Callable[[str], None]
log = logging.getLogger(__name__)
CANDIDATES = ("logistic_regression", "xgboost", "lightgbm")
PREDICTIONS_ARTIFACT = "predictions/test_predictions.csv"
MAX_ROUNDS = 2000  # boosting rounds at most; early stopping on validation ends sooner
EARLY_STOPPING_ROUNDS = 100
BOOTSTRAP_ROUNDS = 1000  # patient resamples of the test ROC-AUC interval

# Hyperparameters of the candidates (seed and round limits are added where they are fitted).
LOGISTIC_PARAMS: dict[str, Any] = {"C": 0.05, "max_iter": 3000}
XGBOOST_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_depth": 5,
    "min_child_weight": 10,
    "subsample": 0.8,
    "colsample_bytree": 0.5,
    "reg_lambda": 5.0,
    "max_bin": 64,
    "tree_method": "hist",
}
LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 5.0,
    "metric": "auc",
    "verbosity": -1,
    "num_threads": 2,
}


@dataclass
class TrainingData:
    """Clean rows per split, the model's raw inputs for test, and the build they came from."""

    build: CleanBuild
    frames: dict[str, pd.DataFrame]
    test_inputs: pd.DataFrame
    history_source: str = "clean-db"

    def encoded(self, split: str) -> np.ndarray:
        return self.build.transform.transform_frame(self.frames[split])

    def labels(self, split: str) -> np.ndarray:
        return self.frames[split]["label"].to_numpy(dtype=np.int64)

    @property
    def model_inputs(self) -> pd.DataFrame:
        """The test split's raw fields as the model takes them (no identifiers)."""
        return self.test_inputs.drop(columns=["encounter_id", "patient_nbr"])


@dataclass
class Candidate:
    name: str
    estimator: Estimator
    validation_auc: float
    params: dict[str, Any]
    best_iteration: int | None
    seconds: float
    tuning: Tuning | None = None


@dataclass
class TrainingOutcome:
    candidates: list[Candidate]
    chosen: Candidate
    calibration: CalibrationChoice
    model: ReadmissionModel
    test_metrics: dict[str, float]
    test_probabilities: np.ndarray = field(repr=False)


def load_training_data(settings: Settings, store_history: bool = False) -> TrainingData:
    """The latest clean build, with a clear error when clean-db is empty or missing.

    With `store_history` (training), the history features come from the feature store's
    point-in-time retrieval, as the API's come from its online side."""
    clean_engine = open_clean_db(settings)
    raw_engine = open_raw_db(settings)
    try:
        build, frames = read_latest_build(clean_engine)
        for split, frame in frames.items():
            if frame.empty or frame["label"].nunique() < 2:
                raise StorageError(
                    f"clean-db: clean_{split} of build {build.build_id} has {len(frame)} rows "
                    "and needs both outcomes; ingest more batches and run `readmit clean`"
                )
        source = "clean-db"
        if store_history:
            from readmit.feature_store.repo import training_history

            source = training_history(settings, frames, build.build_id)
        test_inputs = read_model_inputs(raw_engine, frames["test"], "test")
    finally:
        clean_engine.dispose()
        raw_engine.dispose()
    return TrainingData(build=build, frames=frames, test_inputs=test_inputs, history_source=source)


def fit_logistic(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[LinearEstimator, dict[str, Any]]:
    params = dict(LOGISTIC_PARAMS)
    fitted = LogisticRegression(**params, random_state=seed).fit(x, y)
    estimator = LinearEstimator(
        fitted.coef_[0].astype(np.float64),
        float(fitted.intercept_[0]),
        x.mean(axis=0).astype(np.float64),
    )
    return estimator, params


def fit_xgboost(
    x: np.ndarray,
    y: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    seed: int,
    max_rounds: int,
    overrides: Mapping[str, Any] = MappingProxyType({}),
    callbacks: Sequence[Any] = (),
) -> tuple[XGBoostEstimator, dict[str, Any], int]:
    import xgboost as xgb

    params = {
        **XGBOOST_PARAMS,
        **overrides,
        "n_estimators": max_rounds,
        "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
    }
    model = xgb.XGBClassifier(
        **params, eval_metric="auc", random_state=seed, n_jobs=2, callbacks=list(callbacks) or None
    )
    model.fit(x, y, eval_set=[(xv, yv)], verbose=False)
    best = int(model.best_iteration)
    booster = model.get_booster()[: best + 1]
    return XGBoostEstimator(booster), params, best + 1


def fit_lightgbm(
    x: np.ndarray,
    y: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    seed: int,
    max_rounds: int,
    overrides: Mapping[str, Any] = MappingProxyType({}),
    callbacks: Sequence[Any] = (),
) -> tuple[LightGBMEstimator, dict[str, Any], int]:
    import lightgbm as lgb

    params = {**LIGHTGBM_PARAMS, **overrides, "seed": seed}
    booster = lgb.train(
        params,
        lgb.Dataset(x, y),
        num_boost_round=max_rounds,
        valid_sets=[lgb.Dataset(xv, yv)],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False), *callbacks],
    )
    best = int(booster.best_iteration)
    trimmed = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return LightGBMEstimator(trimmed), {**params, "max_rounds": max_rounds}, best


BOOSTERS: dict[str, Callable[..., tuple[Estimator, dict[str, Any], int]]] = {
    "xgboost": fit_xgboost,
    "lightgbm": fit_lightgbm,
}


def fit_candidates(
    x: np.ndarray,
    y: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    seed: int,
    max_rounds: int,
    report: Report,
    tune_seconds: float = 0.0,
) -> list[Candidate]:
    """Fit every candidate; validation AUC from each estimator's own margin. With a budget,
    the boosters' parameters are searched on validation, half the budget each."""
    candidates = []
    for name in CANDIDATES:
        clock = time.perf_counter()
        best: int | None = None
        tuning: Tuning | None = None
        estimator: Estimator
        if name == "logistic_regression":
            estimator, params = fit_logistic(x, y, seed)
        elif tune_seconds > 0:
            fit = partial(BOOSTERS[name], x, y, xv, yv, seed, max_rounds)
            fixed = XGBOOST_PARAMS if name == "xgboost" else LIGHTGBM_PARAMS
            share = tune_seconds / len(TUNED)
            tuning = tune(name, fit, fixed, (xv, yv), share, seed, report)
            estimator, params, best = tuning.best.estimator, tuning.best.params, tuning.best.rounds
        else:
            estimator, params, best = BOOSTERS[name](x, y, xv, yv, seed, max_rounds)
        auc = float(roc_auc_score(yv, estimator.margin(xv)))
        seconds = time.perf_counter() - clock
        candidates.append(Candidate(name, estimator, auc, params, best, seconds, tuning))
        rounds = f", {best} rounds" if best else ""
        tuned = ""
        if tuning:
            fixed_auc = tuning.baseline.validation_auc
            tuned = f"; {tuning.n_trials} trials, fixed parameters {fixed_auc:.4f}"
        report(f"{name}: validation ROC-AUC {auc:.4f} ({seconds:.1f} s{rounds}{tuned})")
    return candidates


def fit_and_evaluate(
    data: TrainingData,
    seed: int,
    max_rounds: int = MAX_ROUNDS,
    bootstrap_rounds: int = BOOTSTRAP_ROUNDS,
    report: Report = lambda _: None,
    tune_seconds: float = 0.0,
) -> TrainingOutcome:
    """Everything but MLflow: fit, choose, calibrate, set the threshold, evaluate on test."""
    transform: FittedTransform = data.build.transform
    x, y = data.encoded("train"), data.labels("train")
    xv, yv = data.encoded("validation"), data.labels("validation")
    report(
        f"encoded {len(x):,} train and {len(xv):,} validation rows into {transform.width} columns"
    )
    if tune_seconds > 0:
        report(f"searching {' and '.join(TUNED)} parameters on validation for {tune_seconds:g} s")
    candidates = fit_candidates(x, y, xv, yv, seed, max_rounds, report, tune_seconds)
    return choose_and_evaluate(data, candidates, seed, bootstrap_rounds, report)


def choose_and_evaluate(
    data: TrainingData,
    candidates: list[Candidate],
    seed: int,
    bootstrap_rounds: int = BOOTSTRAP_ROUNDS,
    report: Report = lambda _: None,
) -> TrainingOutcome:
    """Choose the best candidate on validation, calibrate it, set the threshold, evaluate it
    once on test."""
    xv, yv = data.encoded("validation"), data.labels("validation")
    chosen = max(candidates, key=lambda c: c.validation_auc)
    margin_v = chosen.estimator.margin(xv)
    calibration = choose_calibration(margin_v, yv, seed)
    threshold = choose_threshold(yv, calibration.calibration.apply(margin_v))
    model = ReadmissionModel(
        transform=data.build.transform,
        estimator=chosen.estimator,
        calibration=calibration.calibration,
        threshold=threshold,
    )
    probabilities = model.predict_frame(data.test_inputs)
    groups = data.frames["test"]["patient_nbr"].to_numpy()
    metrics = evaluate_on_test(
        data.labels("test"), probabilities, groups, threshold, seed, bootstrap_rounds
    )
    report(
        f"chose {chosen.name}; test ROC-AUC {metrics['roc_auc']:.4f} "
        f"[{metrics['roc_auc_ci_low']:.4f}, {metrics['roc_auc_ci_high']:.4f}], "
        f"PR-AUC {metrics['pr_auc']:.4f}, Brier {metrics['brier']:.4f}, "
        f"calibration {'applied' if calibration.applied else 'not needed'}"
    )
    return TrainingOutcome(candidates, chosen, calibration, model, metrics, probabilities)


@dataclass
class TrainResult:
    run_id: str
    version: str
    decision: Decision
    chosen: str
    test_metrics: dict[str, float]
    seconds: float
    tuning: dict[str, dict[str, float]] = field(default_factory=dict)


def tuning_facts(candidates: list[Candidate]) -> dict[str, dict[str, float]]:
    """Per tuned candidate: trials, best and fixed-parameter validation ROC-AUC, seconds."""
    return {
        c.name: {
            "trials": c.tuning.n_trials,
            "best_validation_roc_auc": c.tuning.best.validation_auc,
            "fixed_validation_roc_auc": c.tuning.baseline.validation_auc,
            "seconds": c.tuning.seconds,
        }
        for c in candidates
        if c.tuning
    }


def lineage_of(build: CleanBuild, commit: str, history_source: str | None = None) -> TrainingInfo:
    """The data and code a model is trained from, before it is trained."""
    return TrainingInfo(
        clean_build=build.build_id,
        raw_batches=",".join(str(b) for b in build.raw_batches),
        dataset_sha256=",".join(build.source_sha256),
        git_commit=commit,
        history_source=history_source,
    )


def training_info(
    lineage: TrainingInfo, outcome: TrainingOutcome, run_id: str, trained_at: str
) -> TrainingInfo:
    """What the registered model carries about its training."""
    return replace(
        lineage,
        estimator=outcome.chosen.name,
        run_id=run_id,
        trained_at=trained_at,
        test_metrics=outcome.test_metrics,
        validation_roc_auc=outcome.chosen.validation_auc,
    )


def train(
    settings: Settings,
    report: Report = lambda _: None,
    max_rounds: int = MAX_ROUNDS,
    bootstrap_rounds: int = BOOTSTRAP_ROUNDS,
) -> TrainResult:
    """Train on the latest clean build, log to MLflow, register, and promote if better."""
    clock = time.perf_counter()
    experiment_id = configure(settings)
    for line in repair(settings):
        report(f"repaired: {line}")
    data = load_training_data(settings, store_history=True)
    build = data.build
    report(
        f"clean build {build.build_id}: " + ", ".join(f"{n:,} {s}" for s, n in build.rows.items())
    )
    report(f"patient history: {data.history_source}")
    lineage = lineage_of(build, git_commit(settings), data.history_source)
    run_tags = {**lineage_tags(lineage), **owner_tags()}
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"train-{build.build_id}", tags=run_tags
    ) as parent:
        run_id = parent.info.run_id
        outcome = fit_and_evaluate(
            data,
            settings.random_seed,
            max_rounds,
            bootstrap_rounds,
            report,
            settings.resolved_tune_seconds,
        )
        _log_candidates(outcome.candidates, experiment_id, run_tags)
        trained_at = pd.Timestamp.now(tz="UTC").isoformat()
        outcome.model.info = training_info(lineage, outcome, run_id, trained_at)
        _log_parent(outcome, data)
        evidence = log_evidence(settings, data, outcome, bootstrap_rounds, report)
        log_reference(
            settings, data.frames["train"], outcome.test_probabilities, data.labels("test")
        )
        version, decision = _register_and_decide(
            settings, outcome, data, run_id, report, evidence.audit.reason
        )
        mlflow.set_tags({Tag.MODEL_VERSION: version, Tag.DECISION: decision.outcome})
        report(card_line(settings, version))
        report(
            ("promoted to @production: " if decision.promoted else "kept in @staging: ")
            + decision.reason
        )
    log.info(
        "model trained",
        extra={
            "step": "train",
            "run_id": run_id,
            "model_version": version,
            "decision": decision.outcome,
            "clean_build": build.build_id,
            "raw_batches": build.raw_batches,
            "estimator": outcome.chosen.name,
            "test_roc_auc": round(outcome.test_metrics["roc_auc"], 6),
        },
    )
    return TrainResult(
        run_id=run_id,
        version=version,
        decision=decision,
        chosen=outcome.chosen.name,
        test_metrics=outcome.test_metrics,
        seconds=time.perf_counter() - clock,
        tuning=tuning_facts(outcome.candidates),
    )


def _log_candidates(
    candidates: list[Candidate], experiment_id: str, run_tags: dict[str, str]
) -> None:
    """One nested run per candidate: its parameters (the best trial's when tuned), validation
    AUC and fit time, and the table of its tuning trials."""
    for candidate in candidates:
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=candidate.name, nested=True, tags=run_tags
        ):
            mlflow.log_params({**candidate.params, "tuned": candidate.tuning is not None})
            mlflow.log_metrics(
                {"validation_roc_auc": candidate.validation_auc, "fit_seconds": candidate.seconds}
            )
            if candidate.best_iteration:
                mlflow.log_metric("best_iteration", candidate.best_iteration)
            if candidate.tuning:
                log_tuning(candidate.tuning)


def _register_and_decide(
    settings: Settings,
    outcome: TrainingOutcome,
    data: TrainingData,
    run_id: str,
    report: Report,
    audit_failure: str,
) -> tuple[str, Decision]:
    """Log and register the model at @staging, then promote it if it beats @production; a
    version whose decision fails is removed, so none is left half-done."""
    info = log_model(outcome.model, data.model_inputs.head(3))
    version = register(settings, info.model_uri, run_id, lineage_tags(outcome.model.info))
    report(f"registered {settings.model_name} version {version} at @staging")
    try:
        auc = outcome.test_metrics["roc_auc"]
        decision = compare_and_promote(
            settings, version, auc, data.model_inputs, data.labels("test"), audit_failure
        )
    except Exception:
        discard_version(settings, version)
        raise
    return version, decision


def _log_parent(outcome: TrainingOutcome, data: TrainingData) -> None:
    """Parameters, metrics and plots of the chosen model, on the parent run."""
    metrics = outcome.test_metrics
    labels = data.labels("test")
    probabilities = outcome.test_probabilities
    mlflow.log_params(
        {
            "chosen_estimator": outcome.chosen.name,
            "calibrated": outcome.calibration.applied,
            "threshold_rule": "max F1 on validation",
            "encoded_columns": data.build.transform.width,
        }
    )
    mlflow.log_metrics(as_float_dict(metrics, prefix="test_"))
    mlflow.log_metrics(
        {
            "validation_roc_auc": outcome.chosen.validation_auc,
            "validation_brier_raw": outcome.calibration.brier_raw,
            "validation_brier_calibrated": outcome.calibration.brier_calibrated,
            "test_rows": float(len(labels)),
        }
    )
    log_figure(plots.roc_plot(labels, probabilities, metrics["roc_auc"]), "roc.png")
    log_figure(plots.pr_plot(labels, probabilities, metrics["pr_auc"]), "pr.png")
    log_figure(plots.calibration_plot(labels, probabilities, metrics["brier"]), "calibration.png")
    log_figure(
        plots.confusion_plot(
            int(metrics["tp"]),
            int(metrics["fp"]),
            int(metrics["fn"]),
            int(metrics["tn"]),
            metrics["threshold"],
        ),
        "confusion_matrix.png",
    )
    sample = data.encoded("test")[:2000]
    contributions = field_contributions(outcome.model, sample)
    log_figure(
        plots.shap_summary_plot(contributions.values, contributions.fields), "shap_summary.png"
    )
    mlflow.log_text("\n".join(data.build.transform.columns), "features/encoded_columns.txt")
    mlflow.log_text("\n".join(contributions.fields), "features/input_fields.txt")
    mlflow.log_dict(outcome.test_metrics, "metrics/test_metrics.json")
    predictions = pd.DataFrame(
        {
            "encounter_id": data.frames["test"]["encounter_id"].to_numpy(),
            "label": labels,
            "probability": probabilities,
        }
    )
    mlflow.log_text(predictions.to_csv(index=False, float_format="%.17g"), PREDICTIONS_ARTIFACT)
