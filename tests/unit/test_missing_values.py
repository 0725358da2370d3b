"""One definition of a missing value (schema.is_missing) for cleaning, the model's input and the
API: a frame as pandas gives it scores as the record the API takes, under either naming."""

from __future__ import annotations

import functools
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readmit.dataset import typed_rows
from readmit.features import (
    FittedTransform,
    admission_code,
    category,
    clean_frame,
    field_category,
    history_count,
    icd9_code3,
    icd9_group,
)
from readmit.inputs import InputError, model_frame
from readmit.model import Calibration, LinearEstimator, ReadmissionModel
from readmit.pyfunc_model import ReadmissionPyfunc
from readmit.schema import (
    BY_FIELD,
    COLUMNS,
    FIELD_OF_SOURCE,
    INPUT_FIELDS,
    SOURCE_OF_FIELD,
    check_value,
    is_missing,
)
from readmit.serving.schemas import Encounter
from tests.synthetic import synthetic_rows

MARKERS = (None, "?", float("nan"), np.nan, pd.NA, pd.NaT, np.float32("nan"))
NULLABLE = tuple(c.field for c in COLUMNS if c.feature and c.nullable)


def test_is_missing_knows_every_marker_and_nothing_else():
    assert all(is_missing(m) for m in MARKERS)
    values = ("None", "", "nan", 0, 0.0, False, np.int64(0), "Caucasian", [None], (np.nan,))
    assert not any(is_missing(v) for v in values)


@pytest.mark.parametrize("marker", MARKERS, ids=repr)
def test_cleaning_rules_read_every_marker_as_missing(marker):
    assert icd9_group(marker) is None  # float NaN used to raise "cannot convert float NaN"
    assert icd9_code3(marker) is None
    assert category(marker) is None  # and used to give the category "nan"
    assert admission_code("admission_type_id", marker) is None
    assert field_category("race", marker) is None
    assert field_category("max_glu_serum", marker) == "None"  # the data set's "not taken"
    assert field_category("a1cresult", marker) == "None"
    assert history_count(marker) == 0


def test_pandas_number_forms_of_codes_clean_as_their_text():
    assert icd9_group(428.0) == icd9_group("428") == "circulatory"
    assert icd9_code3(250.01) == icd9_code3("250.01") == "250"
    assert icd9_code3(8.0) == "8"
    assert admission_code("admission_source_id", 7.0) == admission_code("admission_source_id", 7)


def test_a_missing_lab_result_is_accepted_where_the_source_writes_none():
    assert check_value(BY_FIELD["a1cresult"], "?") is None
    assert check_value(BY_FIELD["gender"], "?") == "missing value '?' not allowed"


def test_the_name_mapping_covers_both_namings():
    assert FIELD_OF_SOURCE["A1Cresult"] == "a1cresult"
    assert FIELD_OF_SOURCE["glyburide-metformin"] == "glyburide_metformin"
    assert SOURCE_OF_FIELD["diabetesmed"] == "diabetesMed"
    assert all(FIELD_OF_SOURCE[SOURCE_OF_FIELD[f]] == f for f in INPUT_FIELDS)


@functools.cache
def _rows() -> pd.DataFrame:
    """Valid typed rows (field names), as raw-db holds them: '?' for missing, ints as ints."""
    return typed_rows(synthetic_rows(300, seed=3))


@functools.cache
def _model() -> ReadmissionModel:
    clean = clean_frame(_rows().assign(row_hash=[str(i) for i in range(len(_rows()))]))
    transform = FittedTransform.fit(clean, min_count=1)
    coef = np.random.default_rng(0).normal(size=transform.width)
    estimator = LinearEstimator(coef, -2.0, np.zeros(transform.width))
    return ReadmissionModel(transform, estimator, Calibration(0.9, -0.1), 0.2)


def _pyfunc() -> ReadmissionPyfunc:
    pyfunc = ReadmissionPyfunc()
    pyfunc.model = _model()
    return pyfunc


def _api_probability(record: dict) -> float:
    """What the API answers for the record: validated, then scored one by one."""
    return _model().predict_record(Encounter.model_validate(record).model_input())


def _records(rows: list[int]) -> list[dict]:
    frame = _rows().iloc[rows].drop(columns=["readmitted"])
    return [
        {
            k: (None if v == "?" else (int(v) if isinstance(v, np.integer) else v))
            for k, v in r.items()
        }
        for r in frame.to_dict("records")
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.integers(0, 299), min_size=1, max_size=6),
    data=st.data(),
    source_names=st.booleans(),
)
def test_any_missing_marker_in_any_nullable_field_scores_as_the_apis_null(rows, data, source_names):
    records = _records(rows)
    marked = []
    for record in records:
        chosen = data.draw(st.lists(st.sampled_from(NULLABLE), unique=True))
        markers = {f: data.draw(st.sampled_from(MARKERS)) for f in chosen}
        marked.append({**record, **markers})
        for f in chosen:
            record[f] = None
    frame = pd.DataFrame(marked)
    if source_names:
        frame = frame.rename(columns=SOURCE_OF_FIELD)
    scored = _pyfunc().predict(None, frame)["probability"].to_numpy()
    expected = [_api_probability(r) for r in records]
    np.testing.assert_allclose(scored, expected, rtol=0, atol=1e-12)
    # The API itself takes the markers in place of null, to the same answer.
    np.testing.assert_allclose([_api_probability(r) for r in marked], expected, rtol=0, atol=1e-12)


def test_numbers_may_come_as_numpy_ints_or_integral_floats():
    records = _records(list(range(20)))
    frame = pd.DataFrame(records)
    as_floats = frame.astype({"num_medications": "float64", "admission_type_id": "float64"})
    as_floats.loc[0, "race"] = np.nan
    expected = [
        _api_probability({**r, "race": None if i == 0 else r["race"]})
        for i, r in enumerate(records)
    ]
    scored = _pyfunc().predict(None, as_floats)["probability"].to_numpy()
    np.testing.assert_allclose(scored, expected, rtol=0, atol=1e-12)


def test_a_missing_required_column_is_named_with_both_its_names():
    frame = pd.DataFrame(_records([0, 1])).rename(columns=SOURCE_OF_FIELD)
    with pytest.raises(
        InputError, match=r"missing required column\(s\): race, a1cresult \(or A1Cresult\)"
    ):
        model_frame(frame.drop(columns=["race", "A1Cresult"]))
    with pytest.raises(InputError, match="'A1Cresult' and 'a1cresult' both give"):
        model_frame(frame.assign(a1cresult="None"))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("num_medications", 2.5, "2.5 is not a whole number"),
        ("num_medications", np.nan, "missing value, and this field is required"),
        ("gender", pd.NA, "missing value, and this field is required"),
        ("gender", "Robot", "'Robot' is not one of"),
        ("diag_1", "banana", "not an ICD-9 code"),
        ("number_inpatient", True, "not a non-negative integer"),
        ("time_in_hospital", -3, "not a non-negative integer"),
    ],
)
def test_a_bad_value_is_named_by_column_value_and_row(field, value, reason):
    frame = pd.DataFrame(_records(list(range(5)))).astype({field: object})
    frame.loc[3, field] = value
    expected = f"{re.escape(field)}: .*{re.escape(reason)}.*at index 3"
    with pytest.raises(InputError, match=expected):
        model_frame(frame)
