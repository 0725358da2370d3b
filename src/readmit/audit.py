"""Subgroup audit: does the model rank and calibrate as well for each race, gender, age band,
payer and admission type as for the whole test split?

Point figures per group come from fairlearn's `MetricFrame`; their 95% intervals from the
same patient-level bootstrap as the headline ROC-AUC (`evaluation.patient_resamples`), one
resample of the whole test split per round shared by every group. Small groups are marked,
never hidden; only groups with enough positives can block a promotion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from readmit.evaluation import patient_resamples, percentile_interval
from readmit.schema import is_missing

ATTRIBUTES = ("race", "gender", "age_band", "payer", "admission_type")
SELF_PAY = "SP"  # the data set's payer code for self-pay
ADMISSION_TYPES = {"1": "emergency", "2": "urgent", "3": "elective", "7": "trauma center"}
UNKNOWN_ADMISSION = {"5", "6", "8"}  # not available, NULL, not mapped
AGE_BANDS = ((50, "0-49"), (60, "50-59"), (70, "60-69"), (80, "70-79"), (200, "80+"))
# Figures per group with a bootstrap interval (name -> column prefix in the table).
INTERVAL_METRICS = (
    "roc_auc",
    "observed_rate",
    "mean_predicted",
    "calibration_gap",
    "sensitivity",
    "ppv",
    "flagged_rate",
)


@dataclass(frozen=True)
class AuditRules:
    """When a subgroup blocks promotion (settings READMIT_AUDIT_*)."""

    min_positives: int
    max_auc_gap: float
    max_calibration_gap: float


@dataclass
class Audit:
    """One row per (attribute, group); `failures` name each group that breaks a rule."""

    table: pd.DataFrame
    overall_auc: float
    rules: AuditRules
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def reason(self) -> str:
        """Empty when passed; otherwise every failing group, in one line."""
        return "; ".join(self.failures)


def payer_group(code: object) -> str:
    """Insured (any payer code), self-pay, or unknown (no code recorded)."""
    if is_missing(code) or str(code).strip() == "":
        return "unknown"
    return "self-pay" if str(code) == SELF_PAY else "insured"


def age_band(bracket: object) -> str:
    """The data set's 10-year bracket ("[70-80)") folded into the audit's bands."""
    if is_missing(bracket):
        return "unknown"
    low = int(str(bracket).strip("[)").split("-")[0])
    return next(name for upper, name in AGE_BANDS if low < upper)


def admission_group(code: object) -> str:
    if is_missing(code):
        return "unknown"
    text = str(int(float(str(code))))
    if text in UNKNOWN_ADMISSION:
        return "unknown"
    return ADMISSION_TYPES.get(text, "other")


def subgroups(inputs: pd.DataFrame) -> pd.DataFrame:
    """The audit's group of each encounter, from its raw fields as the model takes them."""

    def known(value: object) -> str:
        return "unknown" if is_missing(value) or value == "Unknown/Invalid" else str(value)

    return pd.DataFrame(
        {
            "race": inputs["race"].map(known),
            "gender": inputs["gender"].map(known),
            "age_band": inputs["age"].map(age_band),
            "payer": inputs["payer_code"].map(payer_group),
            "admission_type": inputs["admission_type_id"].map(admission_group),
        },
        index=inputs.index,
    )


def _auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    y = np.asarray(y_true)
    return float(roc_auc_score(y, y_score)) if 0 < y.sum() < len(y) else float("nan")


def metric_frame(
    labels: np.ndarray, probabilities: np.ndarray, groups: pd.Series, threshold: float
) -> MetricFrame:
    """fairlearn's disaggregated figures of one attribute: scores in, the threshold applied
    inside the metrics that need a decision."""

    def flagged(p: np.ndarray) -> np.ndarray:
        return np.asarray(p) >= threshold

    def sensitivity(y: np.ndarray, p: np.ndarray) -> float:
        y = np.asarray(y)
        return float(flagged(p)[y == 1].mean()) if y.sum() else float("nan")

    def ppv(y: np.ndarray, p: np.ndarray) -> float:
        f = flagged(p)
        return float(np.asarray(y)[f].mean()) if f.any() else float("nan")

    metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "encounters": lambda y, p: float(len(y)),
        "positives": lambda y, p: float(np.sum(y)),
        "roc_auc": _auc,
        "observed_rate": lambda y, p: float(np.mean(y)),
        "mean_predicted": lambda y, p: float(np.mean(p)),
        "sensitivity": sensitivity,
        "ppv": ppv,
        "flagged_rate": lambda y, p: float(flagged(p).mean()),
    }
    return MetricFrame(
        metrics=metrics, y_true=labels, y_pred=probabilities, sensitive_features=groups
    )


class _GroupRows:
    """One group's rows, with its scores ranked once so each bootstrap round's weighted AUC
    is two bincounts (ties count one half, as in roc_auc_score)."""

    def __init__(self, rows: np.ndarray, labels: np.ndarray, scores: np.ndarray, flags: np.ndarray):
        self.rows = rows
        self.y = labels[rows].astype(np.float64)
        self.p = scores[rows]
        self.f = flags[rows].astype(np.float64)
        _, self.rank = np.unique(self.p, return_inverse=True)
        self.ranks = int(self.rank.max()) + 1 if len(rows) else 0

    def figures(self, weights: np.ndarray) -> dict[str, float]:
        w = weights[self.rows].astype(np.float64)
        total, pos = w.sum(), (w * self.y).sum()
        flagged = (w * self.f).sum()
        hits = (w * self.y * self.f).sum()
        observed = pos / total if total else np.nan
        predicted = (w * self.p).sum() / total if total else np.nan
        return {
            "roc_auc": self._auc(w, pos, total - pos),
            "observed_rate": observed,
            "mean_predicted": predicted,
            "calibration_gap": observed - predicted,
            "sensitivity": hits / pos if pos else np.nan,
            "ppv": hits / flagged if flagged else np.nan,
            "flagged_rate": flagged / total if total else np.nan,
        }

    def _auc(self, w: np.ndarray, pos: float, neg: float) -> float:
        if pos == 0 or neg == 0:
            return np.nan
        pos_w = np.bincount(self.rank, weights=w * self.y, minlength=self.ranks)
        neg_w = np.bincount(self.rank, weights=w * (1 - self.y), minlength=self.ranks)
        below = np.cumsum(neg_w) - neg_w
        return float((pos_w * (below + 0.5 * neg_w)).sum() / (pos * neg))


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """ROC-AUC with integer sample weights, by the audit's fast path."""
    rows = np.arange(len(labels))
    group = _GroupRows(rows, labels, scores, np.zeros(len(labels), dtype=bool))
    w = weights.astype(np.float64)
    pos = float((w * labels).sum())
    return group._auc(w, pos, float(w.sum()) - pos)


def audit_subgroups(
    labels: np.ndarray,
    probabilities: np.ndarray,
    patients: np.ndarray,
    inputs: pd.DataFrame,
    threshold: float,
    rules: AuditRules,
    rounds: int = 1000,
    seed: int = 0,
) -> Audit:
    """Every group's figures with their patient-bootstrap intervals, and the gate's verdict."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    groups = subgroups(inputs.reset_index(drop=True))
    rows: list[dict[str, object]] = []
    members: list[_GroupRows] = []
    flags = probabilities >= threshold
    for attribute in ATTRIBUTES:
        frame = metric_frame(labels, probabilities, groups[attribute], threshold)
        for group, figures in frame.by_group.iterrows():
            rows.append({"attribute": attribute, "group": str(group), **figures.to_dict()})
            where = np.flatnonzero(groups[attribute].to_numpy() == group)
            members.append(_GroupRows(where, labels, probabilities, flags))
    table = pd.DataFrame(rows)
    table["calibration_gap"] = table["observed_rate"] - table["mean_predicted"]
    _add_intervals(table, members, patients, rounds, seed)
    table["encounters"] = table["encounters"].astype(int)
    table["positives"] = table["positives"].astype(int)
    table["small"] = table["positives"] < rules.min_positives
    overall = float(roc_auc_score(labels, probabilities))
    return Audit(table, overall, rules, gate_failures(table, overall, rules))


def _add_intervals(
    table: pd.DataFrame, members: list[_GroupRows], patients: np.ndarray, rounds: int, seed: int
) -> None:
    draws: list[list[dict[str, float]]] = [[] for _ in members]
    for weights in patient_resamples(np.asarray(patients), rounds, seed):
        for found, member in zip(draws, members, strict=True):
            found.append(member.figures(weights))
    for name in INTERVAL_METRICS:
        bounds = [percentile_interval([d[name] for d in found]) for found in draws]
        table[f"{name}_ci_low"] = [low for low, _ in bounds]
        table[f"{name}_ci_high"] = [high for _, high in bounds]


def gate_failures(table: pd.DataFrame, overall_auc: float, rules: AuditRules) -> list[str]:
    """Groups with enough positives whose ROC-AUC interval lies wholly below the overall AUC
    minus the allowed gap, or whose calibration gap (observed minus mean predicted) lies
    wholly beyond the allowed gap on either side."""
    failures = []
    floor = overall_auc - rules.max_auc_gap
    gap = rules.max_calibration_gap
    for row in table.to_dict("records"):
        if int(row["positives"]) < rules.min_positives:
            continue
        name = f"{row['attribute']}={row['group']} ({int(row['positives'])} positives)"
        auc, low, high = (float(row[k]) for k in ("roc_auc", "roc_auc_ci_low", "roc_auc_ci_high"))
        if high < floor:
            failures.append(
                f"{name}: ROC-AUC {auc:.3f} [{low:.3f}, {high:.3f}] wholly below "
                f"overall {overall_auc:.3f} - {rules.max_auc_gap}"
            )
        value, low, high = (
            float(row[k])
            for k in ("calibration_gap", "calibration_gap_ci_low", "calibration_gap_ci_high")
        )
        if low > gap or high < -gap:
            failures.append(
                f"{name}: calibration gap {value:+.3f} [{low:+.3f}, {high:+.3f}] "
                f"wholly beyond ±{gap}"
            )
    return failures


def audit_plot(audit: Audit) -> Figure:
    """ROC-AUC and calibration gap per group with their intervals; small groups in grey."""
    import matplotlib.pyplot as plt

    table = audit.table.iloc[::-1].reset_index(drop=True)
    labels = [
        f"{a}: {g}{' (small)' if s else ''}"
        for a, g, s in zip(table["attribute"], table["group"], table["small"], strict=True)
    ]
    colours = ["grey" if s else "tab:blue" for s in table["small"]]
    y = np.arange(len(table))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 0.32 * len(table) + 1.5), sharey=True)
    for axes, name, title in (
        (left, "roc_auc", "ROC-AUC (95% CI)"),
        (right, "calibration_gap", "observed - mean predicted (95% CI)"),
    ):
        low = (table[name] - table[f"{name}_ci_low"]).clip(lower=0).fillna(0)
        high = (table[f"{name}_ci_high"] - table[name]).clip(lower=0).fillna(0)
        for i in range(len(table)):
            axes.errorbar(
                table[name][i], y[i], xerr=[[low[i]], [high[i]]], fmt="o", color=colours[i]
            )
        axes.set_title(title)
    left.axvline(audit.overall_auc, color="black", linestyle="--", label="overall")
    left.axvline(
        audit.overall_auc - audit.rules.max_auc_gap, color="red", linestyle=":", label="gate"
    )
    for edge in (-audit.rules.max_calibration_gap, audit.rules.max_calibration_gap):
        right.axvline(edge, color="red", linestyle=":")
    right.axvline(0, color="black", linestyle="--")
    left.set_yticks(y, labels)
    left.legend(loc="lower left")
    figure.suptitle("Subgroup audit, test split")
    figure.tight_layout()
    return figure
