from collections import Counter

import pytest

from readmit.schema import BY_FIELD, COLUMNS, FIELDS, INPUT_FIELDS, check_value
from readmit.split import SPLITS, assign_splits, split_of


def test_schema_declares_the_50_source_columns_with_unique_fields():
    assert len(COLUMNS) == 50
    assert len(set(FIELDS)) == 50
    assert "a1cresult" in FIELDS and "glyburide_metformin" in FIELDS
    assert "encounter_id" not in INPUT_FIELDS and "readmitted" not in INPUT_FIELDS


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("race", "?", True),
        ("gender", "?", False),
        ("max_glu_serum", "None", True),
        ("max_glu_serum", "High", False),
        ("time_in_hospital", "3", True),
        ("time_in_hospital", "-3", False),
        ("time_in_hospital", "3.5", False),
        ("time_in_hospital", "999999", False),
        ("encounter_id", "443867222", True),
        ("diag_1", "250.83", True),
        ("diag_1", "V45", True),
        ("diag_1", "E909", True),
        ("diag_1", "8", True),
        ("diag_1", "ABC", False),
        ("medical_specialty", "Surgery-General", True),
        ("medical_specialty", "x; drop table", False),
    ],
)
def test_check_value(field, value, ok):
    reason = check_value(BY_FIELD[field], value)
    assert (reason is None) is ok, reason


def test_split_is_stable_and_depends_on_the_salt():
    assert split_of(123, "a") == split_of("123", "a")
    moved = sum(split_of(p, "a") != split_of(p, "b") for p in range(2000))
    assert moved > 500  # another salt reshuffles patients


def test_split_fractions_are_near_70_15_15():
    counts = Counter(assign_splits(range(100_000), "salt"))
    assert set(counts) == set(SPLITS)
    assert abs(counts["train"] / 100_000 - 0.70) < 0.01
    assert abs(counts["validation"] / 100_000 - 0.15) < 0.01
    assert abs(counts["test"] / 100_000 - 0.15) < 0.01


def test_every_encounter_of_a_patient_gets_the_same_split():
    patients = [7, 8, 7, 9, 8, 7]
    splits = assign_splits(patients, "salt")
    by_patient = {}
    for patient, split in zip(patients, splits, strict=True):
        assert by_patient.setdefault(patient, split) == split
