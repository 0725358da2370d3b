"""Model: what the API serves (/model-info), how it scored on its test split, the latest live
comparison of champion and challenger (monitor-db), and the evaluation plots of its training
run in MLflow."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from readmit.settings import Settings
from readmit.storage.db import safe_url
from readmit.ui.artifacts import (
    PLOTS,
    EvidenceFiles,
    Plots,
    fetch_evidence,
    fetch_plots,
    tracking_uri,
)
from readmit.ui.client import ApiClient, ApiError
from readmit.ui.display import exact
from readmit.ui.monitoring import MonitorUnavailable, comparison_table, latest_comparison

METRIC_LABELS: dict[str, str] = {
    "roc_auc": "ROC-AUC",
    "roc_auc_ci_low": "ROC-AUC, 95% interval low",
    "roc_auc_ci_high": "ROC-AUC, 95% interval high",
    "pr_auc": "PR-AUC (average precision)",
    "brier": "Brier score",
    "positive_rate": "Readmission rate",
    "threshold": "Threshold",
    "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity",
    "ppv": "Precision (PPV)",
    "flagged_rate": "Share flagged",
    "tp": "True positives",
    "fp": "False positives",
    "fn": "False negatives",
    "tn": "True negatives",
}
COUNTS = ("tp", "fp", "fn", "tn")


class PlotsUnavailable(Exception):
    """Raised (not returned) so that Streamlit does not cache a failed fetch."""


@st.cache_data(ttl=600, show_spinner="Fetching the plots from MLflow...")
def _plots(run_id: str, uri: str) -> Plots:
    plots = fetch_plots(run_id, uri)
    if plots.error:
        raise PlotsUnavailable(plots.error)
    return plots


@st.cache_data(ttl=600, show_spinner="Fetching the subgroup audit from MLflow...")
def _evidence(run_id: str, uri: str) -> EvidenceFiles:
    evidence = fetch_evidence(run_id, uri)
    if evidence.error:
        raise PlotsUnavailable(evidence.error)
    return evidence


SUBGROUP_COLUMNS = {
    "attribute": "Attribute",
    "group": "Group",
    "encounters": "Encounters",
    "positives": "Positives",
    "roc_auc": "ROC-AUC",
    "observed_rate": "Observed",
    "mean_predicted": "Predicted",
    "sensitivity": "Sensitivity",
    "ppv": "PPV",
    "flagged_rate": "Flagged",
}
INTERVALS = ("roc_auc", "sensitivity", "ppv", "flagged_rate")


def subgroup_table(csv_text: str) -> pd.DataFrame:
    """The audit's table as people read it: each figure with its 95% interval, small groups
    marked."""
    raw = pd.read_csv(io.StringIO(csv_text))
    table = raw[list(SUBGROUP_COLUMNS)].rename(columns=SUBGROUP_COLUMNS)
    for name in INTERVALS:
        table[f"{SUBGROUP_COLUMNS[name]} 95% CI"] = [
            f"{low:.3f}-{high:.3f}" if pd.notna(low) else "n/a"
            for low, high in zip(raw[f"{name}_ci_low"], raw[f"{name}_ci_high"], strict=True)
        ]
    table["Small"] = raw["small"].map(lambda s: "small" if str(s).lower() == "true" else "")
    return table


def show_evidence(client: ApiClient, info_card: str | None, run_id: str | None) -> None:
    """Subgroup audit and decision curve from the run, then the card the API links to."""
    st.subheader("Subgroup audit and decision curve")
    if run_id:
        try:
            evidence = _evidence(run_id, tracking_uri())
        except PlotsUnavailable as exc:
            st.error(str(exc))
        except Exception as exc:  # invalid settings in the environment or .env
            st.error(f"The MLflow tracking URI cannot be read from the settings: {exc}")
        else:
            if evidence.subgroups_csv is None:
                st.warning(f"Run {run_id} has no subgroup audit (trained before audits).")
            else:
                st.dataframe(subgroup_table(evidence.subgroups_csv), hide_index=True)
                st.caption(
                    "Test split; 95% patient-bootstrap intervals. Small groups have too few "
                    "readmissions to judge: shown, not gated."
                )
            if evidence.decision_curve is not None:
                st.image(evidence.decision_curve, caption="Decision curve (test split)")
    st.subheader("Model card")
    if not info_card:
        st.info("The served model names no training run, so it has no model card.")
        return
    try:
        card = client.model_card(info_card)
    except ApiError as exc:
        st.error(f"The model card could not be read: {exc.message}")
        return
    with st.expander("Model card", expanded=True):
        st.markdown(card)


def metrics_table(metrics: dict[str, float]) -> pd.DataFrame:
    """Test metrics with plain names; counts as integers, the rest with four decimals."""
    rows = [
        {
            "Metric": METRIC_LABELS.get(name, name),
            "Value": (f"{value:,.0f}" if name in COUNTS else f"{value:.4f}"),
        }
        for name, value in metrics.items()
    ]
    return pd.DataFrame(rows, columns=["Metric", "Value"])


def show_plots(run_id: str | None) -> None:
    st.subheader("Evaluation plots")
    if not run_id:
        st.warning("The served model names no training run, so its plots cannot be fetched.")
        return
    try:
        uri = tracking_uri()
    except Exception as exc:  # invalid settings in the environment or .env
        st.error(f"The MLflow tracking URI cannot be read from the settings: {exc}")
        return
    try:
        plots = _plots(run_id, uri)
    except PlotsUnavailable as exc:
        st.error(str(exc))
        return
    if not plots.images:
        st.warning(
            f"Run {run_id} in MLflow at {safe_url(uri)} has none of the plots ({', '.join(PLOTS)})."
        )
        return
    names = list(plots.images)
    for start in range(0, len(names), 2):
        for slot, name in zip(st.columns(2), names[start : start + 2], strict=False):
            slot.image(plots.images[name], caption=PLOTS[name], width="stretch")
    if plots.missing:
        st.caption(f"Not in the run: {', '.join(plots.missing)}.")
    st.caption(f"From run {run_id} in MLflow at {safe_url(uri)}.")


def show_comparison() -> None:
    """The latest live comparison of champion and challenger, read from monitor-db."""
    st.subheader("Champion vs challenger")
    try:
        comparison = latest_comparison(Settings())
    except (MonitorUnavailable, ValidationError) as exc:
        st.error(str(exc))
        return
    if comparison is None:
        st.info(
            "No live comparison yet: with a @challenger scoring in shadow or canary mode, "
            "`readmit compare` (or DAG 4) compares it with the champion once outcomes are in."
        )
        return
    figures = comparison.get("figures") or {}
    difference, low, high = (figures.get(k) for k in ("auc_difference", "ci_low", "ci_high"))
    first, second, third = st.columns(3)
    first.metric("Decision", comparison["decision"])
    second.metric(
        "ROC-AUC difference",
        "n/a" if difference is None else f"{difference:+.3f}",
        help="Live ROC-AUC of the challenger minus the champion's",
    )
    third.metric(
        "95% interval", "n/a" if low is None or high is None else f"[{low:+.3f}, {high:+.3f}]"
    )
    table = comparison_table(comparison)
    st.dataframe(table, hide_index=True)
    applied = "; applied" if comparison.get("applied") else ""
    st.caption(
        f"{comparison.get('mode') or 'no'} mode, {comparison['labelled']:,} labelled encounters, "
        f"compared at {comparison['run_at']:%Y-%m-%d %H:%M} UTC{applied}. "
        + " ".join(figures.get("reasons") or [])
    )


def render(client: ApiClient) -> None:
    st.header("Model")
    try:
        info = client.model_info()
    except ApiError as exc:
        st.error(exc.message)
        return
    metrics = info.test_metrics
    first, second, third, fourth = st.columns(4)
    first.metric("Model version", info.version, help=f"Registered model {info.name} @{info.alias}")
    second.metric("Estimator", info.estimator or "unknown")
    third.metric("Test ROC-AUC", f"{metrics['roc_auc']:.3f}" if "roc_auc" in metrics else "n/a")
    fourth.metric("Threshold", exact(info.threshold))
    facts = {
        "Registered model": f"{info.name} version {info.version} (@{info.alias})",
        "Training run": info.run_id or "unknown",
        "Trained at": info.trained_at or "unknown",
        "Clean build": info.clean_build or "unknown",
        "Loaded by the API at": info.loaded_at or "unknown",
        "Input fields": str(len(info.features)),
    }
    st.table(pd.DataFrame({"": list(facts), "Value": list(facts.values())}).set_index(""))
    st.subheader("Test metrics")
    if metrics:
        table = metrics_table(metrics)
        st.dataframe(table, hide_index=True, height=35 * (len(table) + 1) + 3)
    else:
        st.info("The served model carries no test metrics.")
    show_comparison()
    show_plots(info.run_id)
    show_evidence(client, info.model_card, info.run_id)
