"""The encounter form, built from `readmit.schema.COLUMNS` so it always matches the API.

Categorical fields are dropdowns of the schema's categories (with "?" where the field may be
missing), integers are bounded number inputs, codes and free-text fields are dropdowns of
frequent values that also accept a typed value. Values live in session state under
`patient.<field>`, and a copy under `patient_values` survives switching to another page
(Streamlit drops the state of widgets that were not drawn).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from readmit.schema import (
    BY_FIELD,
    HISTORY_BY_FIELD,
    HISTORY_FIELDS,
    INPUT_FIELDS,
    MEDICATION_FIELDS,
    MISSING,
    Column,
    Kind,
    check_value,
)
from readmit.serving.schemas import EXAMPLE

KEY = "patient"
STORE = "patient_values"
FORM_FIELDS: tuple[str, ...] = (*INPUT_FIELDS, *HISTORY_FIELDS)
PATIENT_NUMBER = f"{KEY}.patient_nbr"
LOOKUP = f"{KEY}.lookup_history"

LABELS: dict[str, str] = {
    "race": "Race",
    "gender": "Gender",
    "age": "Age bracket (years)",
    "weight": "Weight bracket (lb)",
    "admission_type_id": "Admission type",
    "discharge_disposition_id": "Discharge disposition",
    "admission_source_id": "Admission source",
    "time_in_hospital": "Days in hospital",
    "payer_code": "Payer",
    "medical_specialty": "Admitting specialty",
    "num_lab_procedures": "Lab procedures",
    "num_procedures": "Procedures (other than lab)",
    "num_medications": "Distinct medications given",
    "number_outpatient": "Outpatient visits, previous year",
    "number_emergency": "Emergency visits, previous year",
    "number_inpatient": "Inpatient stays, previous year",
    "diag_1": "Primary diagnosis (ICD-9)",
    "diag_2": "Secondary diagnosis (ICD-9)",
    "diag_3": "Additional diagnosis (ICD-9)",
    "number_diagnoses": "Diagnoses entered",
    "max_glu_serum": "Max glucose serum",
    "a1cresult": "HbA1c result",
    "change": "Diabetes medication changed",
    "diabetesmed": "Diabetes medication prescribed",
    "prior_encounters": "Earlier encounters of this patient",
    "prior_readmissions_30d": "Earlier readmissions within 30 days",
    "prior_readmissions_any": "Earlier readmissions (any delay)",
    "prior_days_in_hospital": "Earlier days in hospital",
    # Engineered features that /explain reports under their own names.
    "meds_active": "Diabetes medications taken",
    "meds_changed": "Diabetes medications changed (up or down)",
}

# The data set covers stays of 1 to 14 days; the other bounds leave room above its maxima.
BOUNDS: dict[str, tuple[int, int]] = {
    "admission_type_id": (1, 8),
    "discharge_disposition_id": (1, 30),
    "admission_source_id": (1, 26),
    "time_in_hospital": (1, 14),
    "num_lab_procedures": (0, 200),
    "num_procedures": (0, 10),
    "num_medications": (0, 120),
    "number_outpatient": (0, 60),
    "number_emergency": (0, 100),
    "number_inpatient": (0, 30),
    "number_diagnoses": (1, 20),
    **{name: (0, HISTORY_BY_FIELD[name].maximum) for name in HISTORY_FIELDS},
}

# Code meanings from the data set's IDs_mapping.csv.
CODE_MEANINGS: dict[str, dict[int, str]] = {
    "admission_type_id": {
        1: "Emergency",
        2: "Urgent",
        3: "Elective",
        4: "Newborn",
        5: "Not available",
        6: "NULL",
        7: "Trauma center",
        8: "Not mapped",
    },
    "discharge_disposition_id": {
        1: "Home",
        2: "Short-term hospital",
        3: "SNF",
        4: "ICF",
        5: "Other inpatient care",
        6: "Home with home health",
        7: "Left AMA",
        11: "Expired",
        13: "Hospice / home",
        14: "Hospice / medical facility",
        18: "NULL",
        22: "Rehab facility",
        23: "Long-term care hospital",
        25: "Not mapped",
    },
    "admission_source_id": {
        1: "Physician referral",
        2: "Clinic referral",
        3: "HMO referral",
        4: "Transfer from a hospital",
        5: "Transfer from a SNF",
        6: "Transfer from another facility",
        7: "Emergency room",
        8: "Court/law enforcement",
        9: "Not available",
        17: "NULL",
        20: "Not mapped",
    },
}

# Frequent values in the UCI data, offered as suggestions; any valid value may be typed.
SUGGESTIONS: dict[str, dict[str, str]] = {
    "payer_code": {
        code: ""
        for code in (
            "MC",
            "HM",
            "SP",
            "BC",
            "MD",
            "CP",
            "UN",
            "CM",
            "OG",
            "PO",
            "DM",
            "CH",
            "WC",
            "OT",
            "MP",
            "SI",
            "FR",
        )
    },
    "medical_specialty": {
        name: ""
        for name in (
            "InternalMedicine",
            "Emergency/Trauma",
            "Family/GeneralPractice",
            "Cardiology",
            "Surgery-General",
            "Nephrology",
            "Orthopedics",
            "Orthopedics-Reconstructive",
            "Radiologist",
            "Pulmonology",
            "Psychiatry",
            "Urology",
            "ObstetricsandGynecology",
            "Surgery-Cardiovascular/Thoracic",
            "Gastroenterology",
            "Surgery-Vascular",
            "Surgery-Neuro",
            "PhysicalMedicineandRehabilitation",
            "Oncology",
            "Pediatrics",
            "Hematology/Oncology",
            "Neurology",
            "Otolaryngology",
            "Endocrinology",
        )
    },
}
ICD9_SUGGESTIONS: dict[str, str] = {
    "428": "heart failure",
    "414": "chronic ischemic heart disease",
    "786": "respiratory or chest symptoms",
    "410": "acute myocardial infarction",
    "486": "pneumonia",
    "427": "cardiac dysrhythmias",
    "491": "chronic bronchitis",
    "715": "osteoarthrosis",
    "682": "cellulitis",
    "434": "occlusion of cerebral arteries",
    "780": "general symptoms",
    "996": "complication of an implanted device",
    "276": "fluid or electrolyte disorder",
    "38": "septicemia",
    "250": "diabetes mellitus",
    "250.01": "diabetes, type I",
    "250.02": "diabetes, type II, uncontrolled",
    "250.6": "diabetes with neurological manifestations",
    "250.8": "diabetes with other manifestations",
    "401": "essential hypertension",
    "403": "hypertensive chronic kidney disease",
    "496": "chronic airway obstruction",
    "599": "urinary tract disorder",
    "584": "acute kidney failure",
    "585": "chronic kidney disease",
    "518": "other lung disease",
    "272": "disorder of lipid metabolism",
    "707": "chronic skin ulcer",
    "285": "other anemia",
    "425": "cardiomyopathy",
    "424": "heart valve disorder",
    "V57": "rehabilitation care",
    "V45": "postprocedural state",
}
for _diag in ("diag_1", "diag_2", "diag_3"):
    SUGGESTIONS[_diag] = ICD9_SUGGESTIONS

# Typical values: the most frequent category or the median count of the data set.
DEFAULTS: dict[str, Any] = {
    **{name: "No" for name in MEDICATION_FIELDS},
    "race": "Caucasian",
    "gender": "Female",
    "age": "[70-80)",
    "weight": MISSING,
    "admission_type_id": 1,
    "discharge_disposition_id": 1,
    "admission_source_id": 7,
    "time_in_hospital": 4,
    "payer_code": MISSING,
    "medical_specialty": MISSING,
    "num_lab_procedures": 44,
    "num_procedures": 1,
    "num_medications": 15,
    "number_outpatient": 0,
    "number_emergency": 0,
    "number_inpatient": 0,
    "diag_1": "428",
    "diag_2": "276",
    "diag_3": "250",
    "number_diagnoses": 8,
    "max_glu_serum": "None",
    "a1cresult": "None",
    "change": "No",
    "diabetesmed": "Yes",
    **dict.fromkeys(HISTORY_FIELDS, 0),
}

SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Patient", ("race", "gender", "age", "weight", "payer_code")),
    ("Patient history (earlier encounters)", HISTORY_FIELDS),
    (
        "Admission",
        (
            "admission_type_id",
            "admission_source_id",
            "discharge_disposition_id",
            "medical_specialty",
            "time_in_hospital",
        ),
    ),
    (
        "Care during the stay",
        ("num_lab_procedures", "num_procedures", "num_medications", "number_diagnoses"),
    ),
    ("Visits in the previous year", ("number_outpatient", "number_emergency", "number_inpatient")),
    ("Diagnoses", ("diag_1", "diag_2", "diag_3")),
    ("Lab results", ("max_glu_serum", "a1cresult")),
    ("Diabetes medications", ("diabetesmed", "change", *MEDICATION_FIELDS)),
)


def label(field: str) -> str:
    """The plain name of a field, for forms, tables and explanations."""
    if field in LABELS:
        return LABELS[field]
    column = BY_FIELD.get(field)
    if column is not None:
        return column.source[:1].upper() + column.source[1:]
    return field.replace("_", " ").capitalize()


def sections() -> list[tuple[str, tuple[str, ...]]]:
    """SECTIONS plus any schema field they do not name, so no input is ever left out."""
    named = {f for _, fields in SECTIONS for f in fields}
    rest = tuple(f for f in FORM_FIELDS if f not in named)
    return [*SECTIONS, ("Other fields", rest)] if rest else list(SECTIONS)


def _column(field: str) -> Column:
    return HISTORY_BY_FIELD.get(field) or BY_FIELD[field]


def default_values() -> dict[str, Any]:
    """A typical encounter; fields without a listed default take a valid first value."""
    values: dict[str, Any] = {}
    for field in FORM_FIELDS:
        column = _column(field)
        if field in DEFAULTS:
            values[field] = DEFAULTS[field]
        elif column.kind is Kind.INTEGER:
            values[field] = BOUNDS.get(field, (0, 0))[0]
        elif column.missing_allowed:
            values[field] = MISSING
        else:
            values[field] = column.categories[0] if column.categories else ""
    return values


def values_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """Form values of an API record (e.g. EXAMPLE): null becomes "?", unknown keys go."""
    values = default_values()
    for field in FORM_FIELDS:
        if field in record:
            value = record[field]
            values[field] = MISSING if value is None else value
    return values


def example_values() -> dict[str, Any]:
    return values_of(EXAMPLE)


def to_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """The /predict body of form values: "?" becomes null, numbers become ints."""
    record: dict[str, Any] = {}
    for field in FORM_FIELDS:
        value = values.get(field)
        column = _column(field)
        if value is None or value == MISSING or value == "":
            record[field] = None
        elif column.kind is Kind.INTEGER:
            record[field] = int(value)
        else:
            record[field] = str(value).strip()
    return record


def problems(record: Mapping[str, Any]) -> dict[str, str]:
    """Why each field of `record` would be refused, checked with the schema before sending."""
    found: dict[str, str] = {}
    for field in FORM_FIELDS:
        value = record.get(field)
        column = _column(field)
        text = MISSING if value is None else str(value)
        reason = check_value(column, text)
        if reason:
            found[field] = reason
    return found


def _key(field: str) -> str:
    return f"{KEY}.{field}"


def load_values(values: Mapping[str, Any]) -> None:
    """Put `values` into the form (used as a button callback, before the widgets exist)."""
    st.session_state[STORE] = dict(values)
    for field in FORM_FIELDS:
        st.session_state[_key(field)] = values[field]


def stored_values() -> dict[str, Any]:
    """The form's values as last submitted or loaded; the defaults before that."""
    stored = st.session_state.get(STORE)
    return dict(stored) if isinstance(stored, dict) else default_values()


def _format_choice(field: str, hints: Mapping[str, str]) -> Any:
    def show(value: Any) -> str:
        if value == MISSING:
            return "? (missing)"
        hint = hints.get(str(value))
        return f"{value} - {hint}" if hint else str(value)

    return show


def _widget(field: str) -> None:
    """One input, keyed `patient.<field>`; its value is read back from session state."""
    column = _column(field)
    key = _key(field)
    name = label(field)
    about = column.description or None
    if column.kind is Kind.INTEGER:
        low, high = BOUNDS.get(field, (0, column.maximum))
        meanings = CODE_MEANINGS.get(field)
        if meanings:
            about = "; ".join(f"{code} {text}" for code, text in meanings.items())
        st.number_input(name, min_value=low, max_value=high, step=1, key=key, help=about)
    elif column.kind is Kind.CATEGORY:
        options = [MISSING, *column.categories] if column.missing_allowed else column.categories
        st.selectbox(name, options, key=key, format_func=_format_choice(field, {}), help=about)
    else:
        hints = SUGGESTIONS.get(field, {})
        options = [MISSING] if column.missing_allowed else []
        options += [value for value in hints if value not in options]
        current = st.session_state.get(key)
        if current is not None and current not in options:
            options.append(current)
        st.selectbox(
            name,
            options,
            key=key,
            accept_new_options=True,
            format_func=_format_choice(field, hints),
            help=" ".join(filter(None, [about, "Pick a frequent value or type another."])),
        )


def patient_form(columns: int = 4) -> dict[str, Any] | None:
    """Draw the form; the record to score once "Predict" is pressed, else None."""
    stored = stored_values()
    for field in FORM_FIELDS:
        st.session_state.setdefault(_key(field), stored.get(field, default_values()[field]))
    st.session_state.setdefault(PATIENT_NUMBER, 0)
    st.session_state.setdefault(LOOKUP, True)
    with st.form("patient_form"):
        left, right = st.columns(2)
        left.number_input(
            "Patient number",
            min_value=0,
            step=1,
            key=PATIENT_NUMBER,
            help="The patient's number (patient_nbr); 0 for none.",
        )
        right.checkbox(
            "Look up the patient history by patient number",
            key=LOOKUP,
            help="The API reads the history from the feature store; unticked, the history "
            "fields below are sent as entered.",
        )
        for title, fields in sections():
            st.markdown(f"**{title}**")
            slots = st.columns(columns)
            for i, field in enumerate(fields):
                with slots[i % columns]:
                    _widget(field)
        submitted = st.form_submit_button("Predict", type="primary")
    if not submitted:
        return None
    values = {field: st.session_state[_key(field)] for field in FORM_FIELDS}
    st.session_state[STORE] = values
    return with_patient(
        to_record(values), int(st.session_state[PATIENT_NUMBER]), bool(st.session_state[LOOKUP])
    )


def with_patient(record: dict[str, Any], patient_nbr: int, lookup: bool) -> dict[str, Any]:
    """The record with its patient number; without its history fields when the API is to look
    the history up (a caller's history fields win over the store). Without a patient number
    there is nothing to look up, so the history fields go as entered."""
    out = dict(record)
    if patient_nbr <= 0:
        return out
    out["patient_nbr"] = patient_nbr
    if lookup:
        for name in HISTORY_FIELDS:
            out.pop(name, None)
    return out
