import numpy as np
import pandas as pd
import pytest

from readmit.dataset import typed_rows
from readmit.features import (
    CATEGORICAL_FEATURES,
    FEATURES,
    MISSING_TOKEN,
    OTHER_TOKEN,
    FittedTransform,
    admission_code,
    age_years,
    clean_frame,
    clean_record,
    history_through,
    icd9_group,
    prior_history,
)
from readmit.schema import HISTORY_FIELDS
from tests.synthetic import synthetic_rows


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("428", "circulatory"),
        ("785", "circulatory"),
        ("486", "respiratory"),
        ("250.83", "diabetes"),
        ("250", "diabetes"),
        ("V45", "other"),
        ("E909", "other"),
        ("996", "injury"),
        ("715", "musculoskeletal"),
        ("599", "genitourinary"),
        ("157", "neoplasms"),
        ("571", "digestive"),
        ("8", "other"),
        ("?", None),
    ],
)
def test_icd9_group(code, group):
    assert icd9_group(code) == group


def test_age_brackets_become_ordered_midpoints():
    assert age_years("[0-10)") == 5
    assert age_years("[70-80)") == 75
    assert age_years("[90-100)") == 95


def test_unknown_admission_codes_are_missing_and_codes_are_categories():
    assert admission_code("admission_type_id", 1) == "1"
    assert admission_code("admission_type_id", "6") is None
    assert admission_code("discharge_disposition_id", 25) is None
    assert admission_code("admission_source_id", "7") == "7"


def _history_raw() -> pd.DataFrame:
    """Patient 1: encounters 10 (<30, 3 days), 20 (>30, 5 days), 30 (NO, 2 days);
    patient 2: 5 (<30, 4 days), 11 (NO, 1 day). Rows shuffled, index not in order."""
    return pd.DataFrame(
        {
            "patient_nbr": [1, 2, 1, 1, 2],
            "encounter_id": [30, 11, 10, 20, 5],
            "readmitted": ["NO", "NO", "<30", ">30", "<30"],
            "time_in_hospital": [2, 1, 3, 5, 4],
        },
        index=[4, 3, 2, 1, 0],
    )


def test_history_counts_only_earlier_encounters_never_the_encounter_itself():
    history = prior_history(_history_raw())
    assert list(history.columns) == list(HISTORY_FIELDS)
    # Each expected row: earlier encounters, earlier <30, earlier readmissions, earlier days.
    assert history.loc[2].tolist() == [0, 0, 0, 0]  # patient 1, encounter 10: the first
    assert history.loc[1].tolist() == [1, 1, 1, 3]  # encounter 20 sees 10 only
    assert history.loc[4].tolist() == [2, 1, 2, 8]  # encounter 30 sees 10 and 20, not itself
    assert history.loc[0].tolist() == [0, 0, 0, 0]  # patient 2, encounter 5
    assert history.loc[3].tolist() == [1, 1, 1, 4]  # encounter 11 sees 5 only


def test_history_through_an_encounter_is_what_the_next_one_sees():
    raw = _history_raw()
    through = history_through(raw)
    assert through.loc[4].tolist() == [3, 1, 2, 10]  # all of patient 1
    assert through.loc[2].tolist() == prior_history(raw).loc[1].tolist()


def _raw_typed(n: int, seed: int = 0) -> pd.DataFrame:
    rows = typed_rows(synthetic_rows(n, seed))
    rows["row_hash"] = [f"h{i}" for i in range(len(rows))]
    return rows


def test_clean_frame_drops_death_and_hospice_and_labels_lt30():
    raw = _raw_typed(400)
    raw.loc[0, "discharge_disposition_id"] = 11
    raw.loc[1, "discharge_disposition_id"] = 13
    raw.loc[2, "readmitted"] = "<30"
    raw.loc[2, "discharge_disposition_id"] = 1
    raw.loc[3, "readmitted"] = ">30"
    raw.loc[3, "discharge_disposition_id"] = 1
    clean = clean_frame(raw).set_index("row_hash")
    assert "h0" not in clean.index and "h1" not in clean.index
    assert clean.loc["h2", "label"] == 1 and clean.loc["h3", "label"] == 0
    assert set(FEATURES) <= set(clean.columns)


def test_one_record_cleans_exactly_as_the_bulk_path():
    raw = _raw_typed(600, seed=3)
    bulk = clean_frame(raw).set_index("row_hash")
    history = prior_history(raw)
    for i, row in raw.iterrows():
        if row["row_hash"] not in bulk.index:
            continue
        record = {**row.to_dict(), **history.loc[i].astype(int).to_dict()}
        expected = {f: bulk.loc[row["row_hash"], f] for f in FEATURES}
        got = clean_record(record)
        assert {f: got[f] for f in FEATURES} == expected


def test_transform_encodes_a_record_and_a_frame_to_the_same_vector():
    clean = clean_frame(_raw_typed(2000, seed=5))
    transform = FittedTransform.fit(clean.iloc[:1500], min_count=5)
    bulk = transform.transform_frame(clean)
    for i, record in enumerate(clean.to_dict("records")):
        np.testing.assert_array_equal(transform.transform_record(record), bulk[i])


def test_transform_sends_rare_and_unseen_values_to_other():
    clean = clean_frame(_raw_typed(500, seed=1))
    transform = FittedTransform.fit(clean, min_count=5)
    record = clean.iloc[0].to_dict() | {"payer_code": "ZZ", "race": None}
    vector = transform.transform_record(record)
    assert vector[transform.columns.index(f"payer_code={OTHER_TOKEN}")] == 1.0
    assert vector.sum() == pytest.approx(
        vector[: len(transform.numeric)].sum() + len(CATEGORICAL_FEATURES)
    )


@pytest.mark.parametrize(("missing_rows", "column"), [(30, MISSING_TOKEN), (3, OTHER_TOKEN)])
def test_a_missing_race_has_its_own_column_only_when_common_in_training(missing_rows, column):
    """Missing is a value like any other: a column of its own when seen at least `min_count`
    times in training, else the rare-value column; in bulk and one record alike."""
    clean = clean_frame(_raw_typed(500, seed=1))
    clean["race"] = clean["race"].fillna("Caucasian")
    clean.loc[: missing_rows - 1, "race"] = None
    transform = FittedTransform.fit(clean, min_count=10)
    assert (MISSING_TOKEN in transform.vocabularies["race"]) is (column == MISSING_TOKEN)
    record = clean.iloc[0].to_dict()
    assert record["race"] is None
    expected = transform.columns.index(f"race={column}")
    race_columns = [i for i, f in enumerate(transform.column_field) if f == "race"]
    for vector in (transform.transform_record(record), transform.transform_frame(clean)[0]):
        assert [i for i in race_columns if vector[i] == 1.0] == [expected]


def test_transform_is_fitted_on_the_rows_given_only():
    clean = clean_frame(_raw_typed(1000, seed=2))
    train, other = clean.iloc[:700], clean.iloc[700:].copy()
    other["medical_specialty"] = "OnlyOutsideTrain"
    transform = FittedTransform.fit(train, min_count=1)
    assert "OnlyOutsideTrain" not in transform.vocabularies["medical_specialty"]
    i = transform.numeric.index("num_medications")
    assert transform.means[i] == pytest.approx(train["num_medications"].mean())
    restored = FittedTransform.from_dict(transform.to_dict())
    np.testing.assert_array_equal(restored.transform_frame(other), transform.transform_frame(other))
