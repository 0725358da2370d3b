"""Explanation: which fields pushed this patient's risk up or down, from /explain (SHAP)."""

from __future__ import annotations

import math

import altair as alt
import pandas as pd
import streamlit as st

from readmit.serving.schemas import Explanation
from readmit.ui import forms
from readmit.ui.client import ApiClient, ApiError
from readmit.ui.display import exact, percent
from readmit.ui.views.predict import PROBABILITY, current_patient

UP, DOWN = "raises the risk", "lowers the risk"


def contributions_frame(explanation: Explanation) -> pd.DataFrame:
    """One row per field, largest effect first, with its plain name and direction."""
    rows = [
        {
            "field": item.field,
            "name": forms.label(item.field),
            "contribution": item.contribution,
            "effect": UP if item.contribution > 0 else DOWN,
        }
        for item in explanation.contributions
    ]
    return pd.DataFrame(rows, columns=["field", "name", "contribution", "effect"])


def contributions_chart(frame: pd.DataFrame) -> alt.Chart:
    """Signed horizontal bars: red pushes towards readmission, blue away from it."""
    order = frame["name"].tolist()
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("contribution:Q", title="Contribution (log-odds)"),
            y=alt.Y("name:N", sort=order, title=None, axis=alt.Axis(labelLimit=260)),
            color=alt.Color(
                "effect:N",
                scale=alt.Scale(domain=[UP, DOWN], range=["#d62728", "#1f77b4"]),
                legend=alt.Legend(title=None, orient="top"),
            ),
            tooltip=["name", "field", alt.Tooltip("contribution:Q", format="+.4f")],
        )
        .properties(height=chart_height(len(frame)))
    )


def chart_height(bars: int) -> int:
    """Room for every bar's label: Vega-Lite drops labels that would overlap."""
    return max(160, 30 * bars)


def _probability(log_odds: float) -> float:
    return 1.0 / (1.0 + math.exp(-log_odds))


def render(client: ApiClient) -> None:
    st.header("Explanation")
    record, scored = current_patient()
    if scored:
        st.caption("The patient of the last prediction.")
    else:
        st.info(
            "No prediction yet: this explains the values now in the Single prediction form. "
            "Fill it in there (or load the example patient) and press Predict."
        )
    top = st.slider("Fields to show", min_value=3, max_value=30, value=10, key="explain_top")
    try:
        explanation = client.explain(record, top=top)
    except ApiError as exc:
        st.error(exc.message)
        return
    base, margin = explanation.base_value, explanation.margin
    first, second, third = st.columns(3)
    first.metric(PROBABILITY, percent(explanation.probability))
    second.metric(
        "Base value (log-odds)",
        f"{base:+.3f}",
        help="The model's average output before any field of this patient is seen.",
    )
    third.metric(
        "This patient (log-odds)",
        f"{margin:+.3f}",
        delta=f"{margin - base:+.3f}",
        delta_color="inverse",
    )
    frame = contributions_frame(explanation)
    if frame.empty:
        st.warning("The API returned no contributions.")
        return
    st.altair_chart(
        contributions_chart(frame), width="stretch", height=chart_height(len(frame)) + 90
    )
    st.caption(
        f"SHAP values in log-odds: the base value {base:+.3f} (a probability of about "
        f"{exact(_probability(base))} before calibration) plus every field's contribution gives "
        f"{margin:+.3f}. Red bars push towards a readmission, blue bars away from it. "
        f"Showing the {len(frame)} largest of all fields."
    )
    table = frame[["name", "field", "contribution"]].rename(
        columns={"name": "Field", "field": "API name", "contribution": "Contribution"}
    )
    st.dataframe(table, hide_index=True, width="stretch")
