"""The form is the schema: every input field, its categories, "?" where missing is allowed."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from readmit.schema import BY_FIELD, COLUMNS, HISTORY_FIELDS, INPUT_FIELDS, MISSING, Kind
from readmit.serving.schemas import EXAMPLE, Encounter
from readmit.ui import forms
from readmit.ui.display import HIGH, LOW, MEDIUM, exact, percent, risk_band


def test_the_sections_hold_every_input_field_once():
    placed = [f for _, fields in forms.sections() for f in fields]
    assert sorted(placed) == sorted([*INPUT_FIELDS, *HISTORY_FIELDS])


def test_defaults_and_the_example_are_valid_api_records():
    for values in (forms.default_values(), forms.example_values()):
        record = forms.to_record(values)
        assert forms.problems(record) == {}
        Encounter.model_validate(record)  # the API's own request model accepts it


def test_the_example_record_is_the_api_example_without_identifiers():
    record = forms.to_record(forms.example_values())
    expected = {k: v for k, v in EXAMPLE.items() if k not in ("encounter_id", "patient_nbr")}
    assert record == expected


def test_missing_becomes_null_and_bad_values_are_named():
    values = {**forms.default_values(), "weight": MISSING, "diag_1": "XYZ", "gender": "Robot"}
    record = forms.to_record(values)
    assert record["weight"] is None
    problems = forms.problems(record)
    assert set(problems) == {"diag_1", "gender"}
    assert "ICD-9" in problems["diag_1"]


def test_every_field_has_a_plain_label():
    for field in [*INPUT_FIELDS, *HISTORY_FIELDS]:
        assert (forms.label(field) and forms.label(field) != field) or field in ("race", "gender")
    assert forms.label("a1cresult") == "HbA1c result"
    assert forms.label("glyburide_metformin") == "Glyburide-metformin"
    assert forms.label("meds_changed").startswith("Diabetes medications")


@pytest.mark.parametrize(
    ("probability", "band"),
    [(0.0, LOW), (0.059, LOW), (0.06, MEDIUM), (0.119, MEDIUM), (0.12, HIGH), (0.9, HIGH)],
)
def test_risk_bands_are_relative_to_the_threshold(probability, band):
    assert risk_band(probability, 0.12) == band


def test_probabilities_are_written_one_way():
    assert percent(0.17062979) == "17.1%"
    assert exact(0.17062979) == "0.1706"


def _form_only() -> None:
    from readmit.ui import forms

    forms.patient_form()


def test_the_form_draws_one_widget_per_field_with_schema_choices():
    app = AppTest.from_function(_form_only).run()
    selects = {s.key: s for s in app.selectbox}
    numbers = {n.key: n for n in app.number_input}
    for column in COLUMNS:
        if not column.feature:
            continue
        key = f"patient.{column.field}"
        if column.kind is Kind.INTEGER:
            assert key in numbers
            assert numbers[key].min >= 0
        else:
            assert key in selects
        if column.kind is Kind.CATEGORY:
            expected = (["? (missing)"] if column.missing_allowed else []) + list(column.categories)
            assert selects[key].options == expected
        if column.kind in (Kind.CODE, Kind.TEXT) and column.missing_allowed:
            assert selects[key].options[0] == "? (missing)"
    assert all(f"patient.{name}" in numbers for name in HISTORY_FIELDS)
    assert BY_FIELD["race"].missing_allowed and selects["patient.race"].value == "Caucasian"


def test_the_form_sends_the_patient_number_and_leaves_the_history_to_the_lookup():
    record = forms.to_record(forms.example_values())
    looked_up = forms.with_patient(record, 55629189, lookup=True)
    assert looked_up["patient_nbr"] == 55629189
    assert not set(HISTORY_FIELDS) & set(looked_up)
    sent = forms.with_patient(record, 0, lookup=False)
    assert "patient_nbr" not in sent
    assert {n: sent[n] for n in HISTORY_FIELDS} == {n: record[n] for n in HISTORY_FIELDS}
    # No patient number: nothing to look up, the entered history goes even with lookup ticked.
    anonymous = forms.with_patient(record, 0, lookup=True)
    assert "patient_nbr" not in anonymous
    assert {n: anonymous[n] for n in HISTORY_FIELDS} == {n: record[n] for n in HISTORY_FIELDS}
