"""Single prediction: one encounter in a form, the probability and risk band out."""

from __future__ import annotations

from typing import Any

import streamlit as st

from readmit.serving.schemas import Prediction
from readmit.ui import forms
from readmit.ui.client import ApiClient, ApiError
from readmit.ui.display import BANDS, exact, percent, risk_band

PATIENT = "patient"  # the last record scored; the explanation page explains it
PREDICTION = "prediction"
PROBABILITY = "Readmission probability (30 days)"


def current_patient() -> tuple[dict[str, Any], bool]:
    """The record to explain and whether it is the last one scored (else the form's values)."""
    record = st.session_state.get(PATIENT)
    if isinstance(record, dict):
        return record, True
    return forms.to_record(forms.stored_values()), False


def show_prediction(result: Prediction) -> None:
    """The answer, stacked in a narrow column beside the form."""
    probability, threshold, model = result.probability, result.threshold, result.model
    band = risk_band(probability, threshold)
    st.metric(PROBABILITY, percent(probability))
    st.metric("Risk band", band.name.capitalize())
    st.markdown(f":{band.colour}[**{band.name.capitalize()} risk**]: {band.meaning}.")
    sources = {
        "store": "looked up in the feature store",
        "request": "as entered",
        "new_patient": "new patient (no earlier encounter known)",
        "unavailable": "feature store unavailable: scored without history",
    }
    st.markdown(f"**Patient history** ({sources.get(result.history, result.history)})")
    st.table(
        {forms.label(name): [value] for name, value in result.history_used.items()},
    )
    st.metric("Model threshold", percent(threshold))
    st.metric(
        "Model version",
        model.version,
        help=f"Registered model {model.name}",
    )
    st.caption(
        f"Probability {exact(probability)}; threshold {exact(threshold)}; flagged as a likely "
        f"readmission: {'yes' if result.readmitted_30d else 'no'}; model "
        f"{model.name} version {model.version}."
    )
    with st.expander("Risk bands"):
        for item in BANDS:
            st.markdown(f"- :{item.colour}[**{item.name.capitalize()}**]: {item.meaning}")


def render(client: ApiClient) -> None:
    st.header("Single prediction")
    st.write(
        "The raw fields of one inpatient encounter, as in the data set. The answer is the "
        "probability that the patient is readmitted within 30 days of discharge."
    )
    left, right, _ = st.columns([1, 1, 3])
    left.button(
        "Load an example patient", on_click=forms.load_values, args=(forms.example_values(),)
    )
    right.button(
        "Reset to typical values", on_click=forms.load_values, args=(forms.default_values(),)
    )
    form_column, result_column = st.columns([3, 1], gap="large")
    with form_column:
        record = forms.patient_form(columns=3)
    with result_column:
        st.subheader("Result")
        if record is not None:
            problems = forms.problems(record)
            if problems:
                lines = "\n".join(f"- {forms.label(f)}: {why}" for f, why in problems.items())
                st.session_state.pop(PREDICTION, None)
                st.error(f"Some fields need a valid value:\n{lines}")
            else:
                try:
                    result = client.predict(record)
                except ApiError as exc:
                    st.session_state.pop(PREDICTION, None)
                    st.error(exc.message)
                else:
                    st.session_state[PATIENT] = record
                    st.session_state[PREDICTION] = result
        shown = st.session_state.get(PREDICTION)
        if isinstance(shown, Prediction):
            show_prediction(shown)
        elif record is None:
            st.info("Fill in the form (or load the example patient) and press Predict.")
