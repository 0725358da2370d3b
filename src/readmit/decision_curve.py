"""Clinical usefulness: is acting on the model better than acting on everyone or on no one?

Net benefit (Vickers & Elkin, 2006) at a threshold probability t counts true positives and
charges each false positive t / (1 - t) of a true one: the exchange rate a clinician accepts
when choosing t. The number needed to evaluate is how many flagged patients are reviewed per
readmission found (1 / PPV).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

THRESHOLDS = np.round(np.arange(0.01, 0.61, 0.01), 2)


def net_benefit(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> float:
    """(TP - FP * t / (1 - t)) / n for the patients flagged at `threshold`."""
    labels = np.asarray(labels)
    flagged = np.asarray(probabilities) >= threshold
    tp = float((flagged & (labels == 1)).sum())
    fp = float((flagged & (labels == 0)).sum())
    return (tp - fp * threshold / (1 - threshold)) / len(labels)


def treat_all_benefit(prevalence: float, threshold: float) -> float:
    """Net benefit of flagging every patient."""
    return prevalence - (1 - prevalence) * threshold / (1 - threshold)


def number_needed_to_evaluate(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> float:
    """Flagged patients per true readmission among them (inf when none is found)."""
    flagged = np.asarray(probabilities) >= threshold
    hits = int(np.asarray(labels)[flagged].sum())
    return float(flagged.sum()) / hits if hits else float("inf")


def decision_curve(
    labels: np.ndarray, probabilities: np.ndarray, chosen: float | None = None
) -> pd.DataFrame:
    """Net benefit of the model, of treating all and of treating none at each threshold
    (the chosen one included), with the share flagged and the number needed to evaluate."""
    labels = np.asarray(labels, dtype=np.int64)
    cuts = sorted({*THRESHOLDS.tolist(), *([] if chosen is None else [chosen])})
    prevalence = float(labels.mean())
    rows = [
        {
            "threshold": t,
            "net_benefit_model": net_benefit(labels, probabilities, t),
            "net_benefit_treat_all": treat_all_benefit(prevalence, t),
            "net_benefit_treat_none": 0.0,
            "flagged_rate": float((np.asarray(probabilities) >= t).mean()),
            "number_needed_to_evaluate": number_needed_to_evaluate(labels, probabilities, t),
            "chosen": chosen is not None and t == chosen,
        }
        for t in cuts
    ]
    return pd.DataFrame(rows)


def decision_curve_plot(curve: pd.DataFrame) -> Figure:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.plot(curve["threshold"], curve["net_benefit_model"], label="model")
    axes.plot(curve["threshold"], curve["net_benefit_treat_all"], label="flag everyone")
    axes.axhline(0, color="grey", linestyle="--", label="flag no one")
    chosen = curve[curve["chosen"]]
    if not chosen.empty:
        axes.plot(
            chosen["threshold"],
            chosen["net_benefit_model"],
            "o",
            color="black",
            label=f"chosen threshold {float(chosen['threshold'].iloc[0]):.3f}",
        )
    top = float(max(curve["net_benefit_model"].max(), curve["net_benefit_treat_all"].max()))
    axes.set_ylim(-0.02, max(top * 1.2, 0.02))
    axes.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curve, test")
    axes.legend(loc="upper right")
    figure.tight_layout()
    return figure
