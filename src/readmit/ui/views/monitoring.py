"""Monitoring: the verdict of the latest monitoring run and why, drift per input field, live
ROC-AUC run after run, and where the run's report is."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from readmit.settings import Settings
from readmit.ui.client import ApiClient
from readmit.ui.monitoring import (
    MonitorUnavailable,
    auc_history,
    drift_table,
    recent_runs,
    report_location,
    runs_table,
)

RUNS_SHOWN = 30
VERDICT_TEXT = {
    "ok": "No drift, and live performance holds where outcomes came back.",
    "drift": "The logged inputs or predictions drifted from the model's reference: "
    "retraining was requested.",
    "degraded": "Live performance fell below the floor: retraining was requested.",
    "insufficient-data": "Too few predictions (or outcomes) in the window to judge.",
}


def _auc_chart(history: pd.DataFrame, floor: float) -> alt.LayerChart:
    base = alt.Chart(history).encode(x=alt.X("Run at:T", title="Run"))
    band = base.mark_area(opacity=0.25).encode(
        y=alt.Y("95% low:Q", title="Live ROC-AUC", scale=alt.Scale(zero=False)), y2="95% high:Q"
    )
    line = base.mark_line(point=True).encode(y="Live ROC-AUC:Q")
    rule = (
        alt.Chart(pd.DataFrame({"floor": [floor]})).mark_rule(strokeDash=[4, 4]).encode(y="floor:Q")
    )
    return band + line + rule


def _interval(performance: dict[str, float]) -> str:
    if not performance:
        return "Not enough outcomes in the window yet."
    low, high = performance["roc_auc_ci_low"], performance["roc_auc_ci_high"]
    return f"95% patient-level bootstrap interval {low:.3f} to {high:.3f}"


def render(client: ApiClient) -> None:
    del client  # the runs are read from monitor-db, not through the API
    st.header("Monitoring")
    settings = Settings()
    try:
        runs = recent_runs(settings, RUNS_SHOWN)
    except MonitorUnavailable as exc:
        st.error(str(exc))
        return
    if not runs:
        st.info(
            "No monitoring run yet: run `readmit monitor`, or let DAG 4 (4_monitor_and_retrain) "
            "run on its schedule."
        )
        return
    last = runs[0]
    performance = (last.get("figures") or {}).get("performance") or {}
    drift = (last.get("figures") or {}).get("drift") or {}
    first, second, third, fourth, fifth = st.columns(5)
    first.metric("Verdict", last["verdict"])
    second.metric("Rows", f"{int(last['rows']):,}")
    third.metric("Labelled rows", f"{int(last['labelled_rows']):,}")
    fourth.metric(
        "Live ROC-AUC",
        f"{performance['roc_auc']:.3f}" if performance else "n/a",
        help=_interval(performance),
    )
    fifth.metric("Drift share", f"{drift['drift_share']:.0%}" if drift else "n/a")
    st.write(VERDICT_TEXT.get(last["verdict"], ""))
    for reason in (last.get("figures") or {}).get("reasons") or []:
        st.markdown(f"- {reason}")
    st.caption(
        f"Run at {pd.Timestamp(last['run_at']):%Y-%m-%d %H:%M:%S} UTC over "
        f"{last.get('model_name') or 'the model'} version {last.get('model_version') or '?'}."
    )
    text, link = report_location(settings, last)
    st.caption(text)
    if link:
        st.link_button("Open the report in MLflow", link)

    st.subheader("Drift per input field")
    table = drift_table(last)
    if table.empty:
        st.info("The latest run could not judge drift (see its reasons).")
    else:
        st.dataframe(table, hide_index=True, width="stretch")

    st.subheader("Live ROC-AUC over time")
    history = auc_history(runs)
    if history.empty:
        st.info("No run has had enough outcomes to measure live performance yet.")
    else:
        st.altair_chart(_auc_chart(history, settings.monitor_auc_floor), width="stretch")
        st.dataframe(history, hide_index=True)

    st.subheader("Recent runs")
    st.dataframe(runs_table(runs), hide_index=True)
