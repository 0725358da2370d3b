import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readmit.schema import BY_FIELD, COLUMNS, FIELDS, INPUT_FIELDS, Kind, check_value
from readmit.settings import Settings
from readmit.split import SPLITS, assign_splits, split_of
from tests.splits import DEFAULT_SALT, reference_split

# Patient numbers of the data set's first rows and the split each must get under the default
# salt: a change of the rule or the salt moves patients between splits of an existing raw-db.
PINNED = {
    8222157: "train",
    55629189: "train",
    89869032: "validation",
    77586282: "validation",
    85504905: "test",
    86328819: "test",
}


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
        # A `$` anchor accepts a trailing newline; `\\d` and str.isdigit accept other digits.
        ("diag_1", "428\n", False),
        ("payer_code", "MC\n", False),
        ("diag_1", "\uff14\uff12\uff18", False),  # full-width 428
        ("diag_1", "V\u0664\u0665", False),  # Arabic-Indic V45
        ("time_in_hospital", "\u0667", False),  # Arabic-Indic 7: int() reads it as 7
        ("time_in_hospital", "\u00b2", False),  # superscript 2: isdigit() but not int()
        ("time_in_hospital", "3\n", False),
        ("medical_specialty", "Nul\x00Byte", False),
        ("gender", "Male\x00", False),
        ("race", "?\n", False),
        ("encounter_id", "9" * 5000, False),  # too long for int() itself
        ("encounter_id", "0007", True),
    ],
)
def test_check_value(field, value, ok):
    reason = check_value(BY_FIELD[field], value)
    assert (reason is None) is ok, reason


def test_the_default_salt_is_the_one_the_pinned_splits_use():
    assert Settings().split_salt == DEFAULT_SALT


def test_known_patients_get_their_pinned_split():
    assert {p: reference_split(p, DEFAULT_SALT) for p in PINNED} == PINNED
    assert {p: split_of(p, DEFAULT_SALT) for p in PINNED} == PINNED
    assert assign_splits(list(PINNED), DEFAULT_SALT) == list(PINNED.values())


def test_split_follows_the_sha256_rule_for_many_patients():
    patients = range(1, 3000)
    assert [split_of(p, DEFAULT_SALT) for p in patients] == [
        reference_split(p, DEFAULT_SALT) for p in patients
    ]


def test_another_process_assigns_the_same_splits():
    """Batches are loaded by separate processes (DAG runs): the split must not depend on
    anything of the process, such as Python's per-process hash seed."""
    patients = [*PINNED, *range(1, 500)]
    script = (
        "import json, sys\n"
        "from readmit.split import assign_splits\n"
        "print(json.dumps(assign_splits(json.loads(sys.argv[1]), sys.argv[2])))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(patients), DEFAULT_SALT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(done.stdout) == assign_splits(patients, DEFAULT_SALT)


def test_split_is_stable_and_depends_on_the_salt():
    assert split_of(123, "a") == split_of("123", "a") == reference_split(123, "a")
    moved = sum(split_of(p, "a") != split_of(p, "b") for p in range(2000))
    assert moved > 500  # another salt reshuffles patients


def test_split_fractions_are_near_70_15_15():
    counts = Counter(assign_splits(range(100_000), "salt"))
    assert set(counts) == set(SPLITS)
    assert abs(counts["train"] / 100_000 - 0.70) < 0.01
    assert abs(counts["validation"] / 100_000 - 0.15) < 0.01
    assert abs(counts["test"] / 100_000 - 0.15) < 0.01


def test_every_encounter_of_a_patient_gets_the_same_split():
    patients = [7, 8, 7, 9, 8, 7, "7", 9]
    splits = assign_splits(patients, "salt")
    assert splits == [reference_split(int(p), "salt") for p in patients]
    assert len(set(splits)) > 1  # the patients chosen do not all share one split


@pytest.mark.parametrize("column", COLUMNS, ids=[c.field for c in COLUMNS])
def test_an_accepted_value_never_holds_a_control_character(column):
    for char in ("\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85"):
        for value in (*column.categories, "428", "7", "MC", "?"):
            assert check_value(column, value + char) is not None, repr(value + char)
            assert check_value(column, char + value) is not None, repr(char + value)


@given(value=st.text(max_size=12))
def test_an_accepted_integer_is_plain_ascii_digits_that_int_reads(value):
    for column in COLUMNS:
        if column.kind is Kind.INTEGER and check_value(column, value) is None:
            assert value.isascii() and value.isdigit()
            assert 0 <= int(value) <= column.maximum


@given(value=st.text(max_size=12))
def test_an_accepted_code_or_text_is_printable_ascii(value):
    for field in ("diag_1", "payer_code", "medical_specialty"):
        if check_value(BY_FIELD[field], value) is None:
            assert value.isascii() and value.isprintable(), repr(value)
