"""Evaluation plots logged with every training run (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve


def roc_plot(labels: np.ndarray, probabilities: np.ndarray, auc: float) -> Figure:
    fpr, tpr, _ = roc_curve(labels, probabilities)
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot(fpr, tpr, label=f"model (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test split")
    axes.legend(loc="lower right")
    return figure


def pr_plot(labels: np.ndarray, probabilities: np.ndarray, pr_auc: float) -> Figure:
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot(recall, precision, label=f"model (AP {pr_auc:.3f})")
    axes.axhline(labels.mean(), linestyle="--", color="grey", label="prevalence")
    axes.set(xlabel="recall", ylabel="precision", title="Precision-recall, test split")
    axes.legend(loc="upper right")
    return figure


def calibration_plot(labels: np.ndarray, probabilities: np.ndarray, brier: float) -> Figure:
    observed, predicted = calibration_curve(labels, probabilities, n_bins=10, strategy="quantile")
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot(predicted, observed, marker="o", label=f"model (Brier {brier:.4f})")
    top = float(max(predicted.max(), observed.max())) * 1.1
    axes.plot([0, top], [0, top], linestyle="--", color="grey", label="perfect")
    axes.set(xlabel="predicted probability", ylabel="observed rate", title="Calibration, test")
    axes.legend(loc="upper left")
    return figure


def confusion_plot(tp: int, fp: int, fn: int, tn: int, threshold: float) -> Figure:
    matrix = np.array([[tn, fp], [fn, tp]])
    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        axes.text(j, i, f"{value:,}", ha="center", va="center", fontsize=12)
    axes.set_xticks([0, 1], ["predicted no", "predicted <30"])
    axes.set_yticks([0, 1], ["actual no", "actual <30"])
    axes.set_title(f"Confusion at threshold {threshold:.3f}")
    return figure


def shap_summary_plot(values: np.ndarray, fields: list[str]) -> Figure:
    """Mean |SHAP| per original field (one-hot columns summed back), top 20."""
    importance = np.abs(values).mean(axis=0)
    order = np.argsort(importance)[-20:]
    figure, axes = plt.subplots(figsize=(6, 6))
    axes.barh([fields[i] for i in order], importance[order])
    axes.set(xlabel="mean |SHAP| (log-odds)", title="What drives the predictions (test sample)")
    figure.tight_layout()
    return figure
