"""Batch: score a CSV of encounters through /predict-batch, chunk by chunk."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from readmit.ui.batch import (
    CHUNK_SIZE,
    BatchFormatError,
    BatchScores,
    ParsedBatch,
    parse_batch,
    results_csv,
    results_frame,
    score,
)
from readmit.ui.client import ApiClient, ApiError
from readmit.ui.display import exact, percent

RESULT = "batch_result"
UPLOAD = "batch_upload"


@st.cache_data(max_entries=2, show_spinner="Reading the file...")
def _parse(data: bytes) -> ParsedBatch:
    return parse_batch(data)


def risk_histogram(frame: pd.DataFrame, threshold: float) -> alt.LayerChart:
    """Distribution of the probabilities, with the model's threshold as a rule."""
    scored = frame.loc[frame["probability"].notna(), ["probability", "risk_band"]].astype(
        {"probability": "float64"}
    )
    bars = (
        alt.Chart(scored)
        .mark_bar()
        .encode(
            x=alt.X(
                "probability:Q",
                bin=alt.Bin(step=0.02),
                title="Probability of readmission within 30 days",
            ),
            y=alt.Y("count():Q", title="Encounters"),
            color=alt.Color(
                "risk_band:N",
                title="Risk band",
                scale=alt.Scale(
                    domain=["low", "medium", "high"], range=["#2ca02c", "#ff7f0e", "#d62728"]
                ),
            ),
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"threshold": [threshold]}))
        .mark_rule(strokeDash=[4, 4], color="black")
        .encode(x="threshold:Q")
    )
    return alt.LayerChart(layer=[bars, rule], height=260)


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns worth reading on screen: row, identifiers, the answer and any error."""
    table = pd.DataFrame({"row": range(1, len(frame) + 1)})
    for column in frame.columns:
        if column.lower() in ("encounter_id", "patient_nbr"):
            table[column] = frame[column].to_numpy()
    for column in ("probability", "readmitted_30d", "risk_band", "error"):
        table[column] = frame[column].to_numpy()
    return table


def show_results(result: dict[str, Any]) -> None:
    scores: BatchScores = result["scores"]
    frame: pd.DataFrame = result["frame"]
    flagged = int(frame["readmitted_30d"].fillna(False).sum())
    first, second, third, fourth = st.columns(4)
    first.metric("Scored", f"{scores.scored:,}")
    second.metric("Rejected", f"{scores.rejected:,}")
    third.metric("Flagged (high risk)", f"{flagged:,}")
    fourth.metric("Threshold", percent(scores.threshold))
    model = scores.model
    st.caption(
        f"Model {model.name if model else '?'} version {model.version if model else '?'}; "
        f"threshold {exact(scores.threshold)}."
    )
    if scores.rejected:
        st.warning(
            f"{scores.rejected:,} record(s) could not be scored; their `error` column says why."
        )
        errors = display_table(frame)
        st.dataframe(
            errors[errors["error"].notna()][["row", "error"]], hide_index=True, width="stretch"
        )
    if scores.scored:
        st.altair_chart(risk_histogram(frame, scores.threshold), width="stretch")
    probability = st.column_config.NumberColumn(format="%.4f")
    st.dataframe(
        display_table(frame),
        hide_index=True,
        width="stretch",
        column_config={"probability": probability},
    )
    st.download_button(
        "Download the results as CSV",
        data=results_csv(frame),
        file_name=f"{Path(result['name']).stem}-scored.csv",
        mime="text/csv",
        key="batch_download",
    )


def render(client: ApiClient) -> None:
    st.header("Batch scoring")
    st.write(
        "Upload a CSV in the data set's format (`diabetic_data.csv` columns such as "
        "`A1Cresult`, `glyburide-metformin`, `diabetesMed`; the API's field names work too). "
        "Other columns are ignored, `?` means missing. Records are sent "
        f"{CHUNK_SIZE:,} at a time."
    )
    upload = st.file_uploader("CSV of encounters", type=["csv"], key=UPLOAD)
    if upload is None:
        st.session_state.pop(RESULT, None)
        return
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    try:
        parsed = _parse(data)
    except BatchFormatError as exc:
        st.error(str(exc))
        return
    st.write(f"**{len(parsed.records):,}** encounters in `{upload.name}`.")
    if parsed.ignored:
        st.caption("Ignored columns: " + ", ".join(parsed.ignored))
    if st.button("Score the file", type="primary", key="batch_score"):
        bar = st.progress(0.0, text="Scoring...")

        def progress(done: int, total: int) -> None:
            bar.progress(done / total, text=f"Scored {done:,} of {total:,} encounters")

        try:
            scores = score(client, parsed.records, CHUNK_SIZE, progress)
        except ApiError as exc:
            st.session_state.pop(RESULT, None)
            st.error(exc.message)
            return
        st.session_state[RESULT] = {
            "digest": digest,
            "name": upload.name,
            "scores": scores,
            "frame": results_frame(parsed, scores),
        }
    result = st.session_state.get(RESULT)
    if isinstance(result, dict) and result.get("digest") == digest:
        show_results(result)
