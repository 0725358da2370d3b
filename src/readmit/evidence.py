"""The evidence each training run logs beside its metrics: the subgroup audit, the decision
curve, and the facts the model card is generated from (rows per split, cohort rules, the
gate's settings). Everything here goes to the active MLflow run; the card reads it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from readmit.audit import Audit, AuditRules, audit_plot, audit_subgroups
from readmit.decision_curve import (
    decision_curve,
    decision_curve_plot,
    net_benefit,
    number_needed_to_evaluate,
)
from readmit.model import ReadmissionModel
from readmit.model_card import (
    AUDIT_ARTIFACT,
    COHORT_ARTIFACT,
    DECISION_CURVE_ARTIFACT,
    DECISION_CURVE_PLOT,
    SUBGROUPS_ARTIFACT,
    SUBGROUPS_PLOT,
)
from readmit.settings import Settings
from readmit.split import FRACTIONS
from readmit.storage.clean import CleanBuild


class TrainingData(Protocol):
    """What the evidence reads of a training's data (the pipeline's TrainingData)."""

    build: CleanBuild
    frames: dict[str, pd.DataFrame]
    test_inputs: pd.DataFrame

    def labels(self, split: str) -> np.ndarray: ...


class TrainingOutcome(Protocol):
    """What the evidence reads of a training's outcome: the chosen model and its test scores."""

    model: ReadmissionModel
    test_probabilities: np.ndarray


@dataclass
class Evidence:
    audit: Audit
    curve: pd.DataFrame
    net_benefit: float
    number_needed_to_evaluate: float


def audit_rules(settings: Settings) -> AuditRules:
    return AuditRules(
        min_positives=settings.audit_min_positives,
        max_auc_gap=settings.audit_max_gap,
        max_calibration_gap=settings.audit_max_calibration_gap,
    )


def collect_evidence(
    settings: Settings, data: TrainingData, outcome: TrainingOutcome, rounds: int
) -> Evidence:
    """Audit and decision curve of the chosen model on the test split (no MLflow)."""
    labels = data.labels("test")
    probabilities = outcome.test_probabilities
    threshold = outcome.model.threshold
    audit = audit_subgroups(
        labels,
        probabilities,
        data.frames["test"]["patient_nbr"].to_numpy(),
        data.test_inputs,
        threshold,
        audit_rules(settings),
        rounds,
        settings.random_seed,
    )
    return Evidence(
        audit=audit,
        curve=decision_curve(labels, probabilities, threshold),
        net_benefit=net_benefit(labels, probabilities, threshold),
        number_needed_to_evaluate=number_needed_to_evaluate(labels, probabilities, threshold),
    )


def log_evidence(
    settings: Settings,
    data: TrainingData,
    outcome: TrainingOutcome,
    rounds: int,
    report: Callable[[str], None],
) -> Evidence:
    """Compute the evidence and log it, with the cohort facts, to the active run."""
    evidence = collect_evidence(settings, data, outcome, rounds)
    audit = evidence.audit
    mlflow.log_text(audit.table.to_csv(index=False, float_format="%.6g"), SUBGROUPS_ARTIFACT)
    _log_figure(audit_plot(audit), SUBGROUPS_PLOT)
    mlflow.log_dict(
        {
            "passed": audit.passed,
            "failures": audit.failures,
            "overall_roc_auc": audit.overall_auc,
            "min_positives": audit.rules.min_positives,
            "max_auc_gap": audit.rules.max_auc_gap,
            "max_calibration_gap": audit.rules.max_calibration_gap,
            "bootstrap_rounds": rounds,
        },
        AUDIT_ARTIFACT,
    )
    curve_csv = evidence.curve.to_csv(index=False, float_format="%.6g")
    mlflow.log_text(curve_csv, DECISION_CURVE_ARTIFACT)
    _log_figure(decision_curve_plot(evidence.curve), DECISION_CURVE_PLOT)
    metrics = {"test_net_benefit": evidence.net_benefit, "audit_failures": len(audit.failures)}
    if np.isfinite(evidence.number_needed_to_evaluate):
        metrics["test_number_needed_to_evaluate"] = evidence.number_needed_to_evaluate
    mlflow.log_metrics(metrics)
    mlflow.log_dict(cohort_facts(settings, data), COHORT_ARTIFACT)
    small = audit.table[audit.table["small"]]
    chosen = evidence.curve["chosen"]
    report(
        f"subgroup audit: {len(audit.table)} groups ({len(small)} under "
        f"{audit.rules.min_positives} positives, marked small), "
        + ("passed" if audit.passed else f"failed: {audit.reason}")
    )
    report(
        f"decision curve: net benefit {evidence.net_benefit:.4f} at threshold "
        f"{outcome.model.threshold:.3f} (flag everyone: "
        f"{float(evidence.curve.loc[chosen, 'net_benefit_treat_all'].iloc[0]):.4f}), "
        f"{evidence.number_needed_to_evaluate:.1f} flagged patients evaluated per readmission found"
    )
    return evidence


def _log_figure(figure: Figure, path: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, path)
    plt.close(figure)


def cohort_facts(settings: Settings, data: TrainingData) -> dict[str, object]:
    """Who is in the data the model learnt from, and how it was split, as the build says."""
    build = data.build
    frames = data.frames
    return {
        "clean_build": build.build_id,
        "raw_batches": build.raw_batches,
        "dataset_sha256": build.source_sha256,
        "rows": build.rows,
        "positives": {s: int(frames[s]["label"].sum()) for s in frames},
        "patients": {s: int(frames[s]["patient_nbr"].nunique()) for s in frames},
        "split_fractions": dict(zip(("train", "validation", "test"), FRACTIONS, strict=True)),
        "split_salt": build.params.get("split_salt", settings.split_salt),
        "dropped_dispositions": build.params.get("dropped_dispositions", ""),
        "encoded_columns": build.transform.width,
        "promote_min_delta": settings.promote_min_delta,
        "monitor_window_days": settings.monitor_window_days,
        "monitor_window_rows": settings.monitor_window_rows,
    }
