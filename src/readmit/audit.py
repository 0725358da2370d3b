"""Subgroup audit: does the model rank and calibrate as well for each race, gender, age band,
payer and admission type as for the whole test split?

Point figures per group come from fairlearn's `MetricFrame`; their 95% intervals from the
same patient-level bootstrap as the headline ROC-AUC (`evaluation.patient_resamples`), one
resample of the whole test split per round shared by every group. Small groups are marked,
never hidden; only groups with enough positives can block a promotion.
"""

from __future__ import annotations

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
CHUNK_ROUNDS = 50  # bootstrap rounds computed together (a rounds x rows weight matrix)
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


POINT_FIGURES = (
    "encounters",
    "positives",
    "roc_auc",
    "observed_rate",
    "mean_predicted",
    "sensitivity",
    "ppv",
    "flagged_rate",
)


def metric_frame(
    labels: np.ndarray, probabilities: np.ndarray, groups: pd.Series, threshold: float
) -> MetricFrame:
    """fairlearn's disaggregated figures of one attribute (POINT_FIGURES, in order, as one
    vector per group): scores in, the threshold applied where a decision is needed. One
    metric returning every figure, because MetricFrame re-stacks each column element by
    element on every metric call (eight metrics cost eight times as much)."""

    def figures(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
        y, p = np.asarray(y_true), np.asarray(y_score)
        flagged = p >= threshold
        positives = float(y.sum())
        return np.array(
            [
                float(len(y)),
                positives,
                _auc(y, p),
                float(y.mean()),
                float(p.mean()),
                float(flagged[y == 1].mean()) if positives else np.nan,
                float(y[flagged].mean()) if flagged.any() else np.nan,
                float(flagged.mean()),
            ]
        )

    return MetricFrame(
        metrics={"figures": figures},
        y_true=labels,
        y_pred=probabilities,
        sensitive_features=groups,
    )


def figures_by_group(frame: MetricFrame) -> pd.DataFrame:
    """The MetricFrame's vectors as one column per figure, a row per group."""
    by_group = frame.by_group["figures"]
    return pd.DataFrame(
        [list(v) for v in by_group.to_numpy()], index=by_group.index, columns=list(POINT_FIGURES)
    )


class _GroupRows:
    """One group's rows sorted by score once, so the figures of many bootstrap rounds are a
    few matrix operations (ties in the AUC count one half, as in roc_auc_score)."""

    def __init__(self, rows: np.ndarray, labels: np.ndarray, scores: np.ndarray, flags: np.ndarray):
        order = np.argsort(scores[rows], kind="stable")
        self.rows = rows[order]
        self.y = labels[self.rows].astype(np.float64)
        self.p = scores[self.rows].astype(np.float64)
        self.f = flags[self.rows].astype(np.float64)
        self.starts = np.r_[0, np.flatnonzero(np.diff(self.p)) + 1]

    def figures(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Each figure for each round (a row of `weights` per round, a column per test row)."""
        w = weights[:, self.rows].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            total, pos = w.sum(axis=1), w @ self.y
            flagged, hits = w @ self.f, w @ (self.y * self.f)
            observed, predicted = pos / total, (w @ self.p) / total
            return {
                "roc_auc": self.auc(w, pos, total - pos),
                "observed_rate": observed,
                "mean_predicted": predicted,
                "calibration_gap": observed - predicted,
                "sensitivity": hits / pos,
                "ppv": hits / flagged,
                "flagged_rate": flagged / total,
            }

    def auc(self, w: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
        pos_w = np.add.reduceat(w * self.y, self.starts, axis=1)
        neg_w = np.add.reduceat(w * (1 - self.y), self.starts, axis=1)
        below = np.cumsum(neg_w, axis=1) - neg_w
        with np.errstate(divide="ignore", invalid="ignore"):
            value = (pos_w * (below + 0.5 * neg_w)).sum(axis=1) / (pos * neg)
        return np.where((pos > 0) & (neg > 0), value, np.nan)


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """ROC-AUC with integer sample weights, by the audit's fast path."""
    group = _GroupRows(np.arange(len(labels)), labels, scores, np.zeros(len(labels), dtype=bool))
    return float(group.figures(np.asarray(weights)[None, :])["roc_auc"][0])


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
        for group, figures in figures_by_group(frame).iterrows():
            values = {str(k): v for k, v in figures.items()}
            rows.append({"attribute": attribute, "group": str(group), **values})
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
    draws: list[dict[str, list[np.ndarray]]] = [{n: [] for n in INTERVAL_METRICS} for _ in members]
    chunk: list[np.ndarray] = []
    resamples = patient_resamples(np.asarray(patients), rounds, seed)
    for i, weights in enumerate(resamples, start=1):
        chunk.append(weights)
        if len(chunk) == CHUNK_ROUNDS or i == rounds:
            batch = np.stack(chunk)
            chunk = []
            for found, member in zip(draws, members, strict=True):
                for name, values in member.figures(batch).items():
                    found[name].append(values)
    for name in INTERVAL_METRICS:
        bounds = [
            percentile_interval(np.concatenate(found[name]).tolist() if found[name] else [])
            for found in draws
        ]
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
