"""The encounter record: the 50 source columns, their types and allowed values.

This is the single source of truth for the raw data. Storage tables, validation, cleaning
inputs and the API's request model are all derived from `COLUMNS`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pandas as pd


class Kind(StrEnum):
    """How a source column is typed and checked."""

    INTEGER = "integer"  # non-negative whole number
    CATEGORY = "category"  # one of a closed set of strings
    CODE = "code"  # ICD-9 diagnosis code (numeric, V or E), or the missing marker
    TEXT = "text"  # free text from an open vocabulary (payer, specialty)


MISSING = "?"  # how the source writes a missing value
ID_MAX = 2**63 - 1  # identifiers are stored as BIGINT
# Whole-value patterns, applied with fullmatch (a `$` anchor would accept a trailing newline).
# ASCII classes only: `\d` would also match Arabic-Indic, full-width and other digits.
ICD9_PATTERN = re.compile(
    r"[0-9]{1,3}(\.[0-9]{1,2})?|V[0-9]{1,2}(\.[0-9]{1,2})?|E[0-9]{1,3}(\.[0-9]{1,2})?"
)
TEXT_PATTERN = re.compile(r"[A-Za-z0-9&/\-]{1,64}")
INTEGER_PATTERN = re.compile(r"[0-9]+")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

MED_VALUES = ("No", "Steady", "Up", "Down")
AGE_BRACKETS = tuple(f"[{10 * i}-{10 * (i + 1)})" for i in range(10))
WEIGHT_BRACKETS = (
    "[0-25)",
    "[25-50)",
    "[50-75)",
    "[75-100)",
    "[100-125)",
    "[125-150)",
    "[150-175)",
    "[175-200)",
    ">200",
)


def is_missing(value: Any) -> bool:
    """Whether `value` stands for a missing value, in any field and on every path.

    The source writes "?"; JSON and Python give None; pandas gives float NaN (object and float
    columns), pd.NA (nullable dtypes) or NaT. Everything else is a value, checked by its column.
    """
    if value is None:
        return True
    if isinstance(value, str):
        return value == MISSING
    if isinstance(value, int):  # the common case, and bool: never missing
        return False
    if isinstance(value, float):
        return math.isnan(value)
    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def field_name(name: str) -> str:
    """The API's name for a data set column: lower case, '-' to '_' (A1Cresult -> a1cresult)."""
    return name.lower().replace("-", "_")


@dataclass(frozen=True)
class Column:
    """One source column. `field` is its identifier in databases, Python and JSON."""

    source: str
    kind: Kind
    categories: tuple[str, ...] = ()
    missing_allowed: bool = False
    feature: bool = True
    maximum: int = 100_000  # the largest plausible value of an integer column
    description: str = ""
    missing_as: str | None = None  # the category a missing value stands for, if any

    @property
    def field(self) -> str:
        return field_name(self.source)

    @property
    def nullable(self) -> bool:
        """Whether a record may leave this field missing (None, "?", NaN, ...)."""
        return self.missing_allowed or self.missing_as is not None


def _med(name: str) -> Column:
    return Column(name, Kind.CATEGORY, MED_VALUES, description=f"{name} dosage change")


MEDICATIONS = (
    "metformin",
    "repaglinide",
    "nateglinide",
    "chlorpropamide",
    "glimepiride",
    "acetohexamide",
    "glipizide",
    "glyburide",
    "tolbutamide",
    "pioglitazone",
    "rosiglitazone",
    "acarbose",
    "miglitol",
    "troglitazone",
    "tolazamide",
    "examide",
    "citoglipton",
    "insulin",
    "glyburide-metformin",
    "glipizide-metformin",
    "glimepiride-pioglitazone",
    "metformin-rosiglitazone",
    "metformin-pioglitazone",
)

COLUMNS: tuple[Column, ...] = (
    Column("encounter_id", Kind.INTEGER, feature=False, maximum=ID_MAX, description="Encounter id"),
    Column("patient_nbr", Kind.INTEGER, feature=False, maximum=ID_MAX, description="Patient id"),
    Column(
        "race",
        Kind.CATEGORY,
        ("Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other"),
        missing_allowed=True,
    ),
    Column("gender", Kind.CATEGORY, ("Female", "Male", "Unknown/Invalid")),
    Column("age", Kind.CATEGORY, AGE_BRACKETS, description="Age bracket in years"),
    Column("weight", Kind.CATEGORY, WEIGHT_BRACKETS, missing_allowed=True),
    Column("admission_type_id", Kind.INTEGER, description="Admission type code (1-8)"),
    Column("discharge_disposition_id", Kind.INTEGER, description="Discharge disposition code"),
    Column("admission_source_id", Kind.INTEGER, description="Admission source code"),
    Column("time_in_hospital", Kind.INTEGER, description="Days in hospital"),
    Column("payer_code", Kind.TEXT, missing_allowed=True),
    Column("medical_specialty", Kind.TEXT, missing_allowed=True),
    Column("num_lab_procedures", Kind.INTEGER),
    Column("num_procedures", Kind.INTEGER),
    Column("num_medications", Kind.INTEGER),
    Column("number_outpatient", Kind.INTEGER, description="Outpatient visits, previous year"),
    Column("number_emergency", Kind.INTEGER, description="Emergency visits, previous year"),
    Column("number_inpatient", Kind.INTEGER, description="Inpatient visits, previous year"),
    Column("diag_1", Kind.CODE, missing_allowed=True, description="Primary diagnosis (ICD-9)"),
    Column("diag_2", Kind.CODE, missing_allowed=True, description="Secondary diagnosis"),
    Column("diag_3", Kind.CODE, missing_allowed=True, description="Additional diagnosis"),
    Column("number_diagnoses", Kind.INTEGER),
    # The data set writes "None" for a test that was not taken: a missing result is the same,
    # which is also what pandas makes of "None" when it reads the CSV with its defaults.
    Column(
        "max_glu_serum",
        Kind.CATEGORY,
        ("None", "Norm", ">200", ">300"),
        missing_as="None",
        description="Glucose serum test result ('None': not taken)",
    ),
    Column(
        "A1Cresult",
        Kind.CATEGORY,
        ("None", "Norm", ">7", ">8"),
        missing_as="None",
        description="HbA1c test result ('None': not taken)",
    ),
    *(_med(m) for m in MEDICATIONS),
    Column("change", Kind.CATEGORY, ("No", "Ch"), description="Any diabetic medication change"),
    Column("diabetesMed", Kind.CATEGORY, ("No", "Yes")),
    Column("readmitted", Kind.CATEGORY, ("NO", ">30", "<30"), feature=False),
)

SOURCE_NAMES: tuple[str, ...] = tuple(c.source for c in COLUMNS)
FIELDS: tuple[str, ...] = tuple(c.field for c in COLUMNS)
BY_FIELD: dict[str, Column] = {c.field: c for c in COLUMNS}
# The column-name mapping: the data set's names <-> the API's field names.
FIELD_OF_SOURCE: dict[str, str] = {c.source: c.field for c in COLUMNS}
SOURCE_OF_FIELD: dict[str, str] = {c.field: c.source for c in COLUMNS}
# Every name a column goes by (its source name and its field name), to its field.
FIELD_OF_NAME: dict[str, str] = {**FIELD_OF_SOURCE, **{c.field: c.field for c in COLUMNS}}
INPUT_FIELDS: tuple[str, ...] = tuple(c.field for c in COLUMNS if c.feature)
INTEGER_FIELDS: tuple[str, ...] = tuple(c.field for c in COLUMNS if c.kind is Kind.INTEGER)
MEDICATION_FIELDS: tuple[str, ...] = tuple(_med(m).field for m in MEDICATIONS)
# The patient's history before an encounter: counted by the clean step over earlier
# `encounter_id`s only, looked up by the API from the feature store, or sent by the caller.
# Not source columns: optional model inputs, 0 when absent.
HISTORY_COLUMNS: tuple[Column, ...] = (
    Column(
        "prior_encounters",
        Kind.INTEGER,
        missing_allowed=True,
        maximum=1_000,
        description="Earlier encounters of this patient",
    ),
    Column(
        "prior_readmissions_30d",
        Kind.INTEGER,
        missing_allowed=True,
        maximum=1_000,
        description="Earlier encounters of this patient followed by a readmission within 30 days",
    ),
    Column(
        "prior_readmissions_any",
        Kind.INTEGER,
        missing_allowed=True,
        maximum=1_000,
        description="Earlier encounters of this patient followed by a readmission (any delay)",
    ),
    Column(
        "prior_days_in_hospital",
        Kind.INTEGER,
        missing_allowed=True,
        maximum=100_000,
        description="Days in hospital over the earlier encounters of this patient",
    ),
)
HISTORY_FIELDS: tuple[str, ...] = tuple(c.source for c in HISTORY_COLUMNS)
HISTORY_BY_FIELD: dict[str, Column] = {c.source: c for c in HISTORY_COLUMNS}
# What the model takes: the source's feature columns, then the history.
MODEL_FIELDS: tuple[str, ...] = (*INPUT_FIELDS, *HISTORY_FIELDS)
LABEL_SOURCE = "readmitted"
POSITIVE_LABEL = "<30"


def anchored(pattern: re.Pattern[str]) -> str:
    """`pattern` as a whole-string regex for JSON Schema and pydantic (end of text, not line)."""
    return rf"^(?:{pattern.pattern})$"


def check_value(column: Column, value: str) -> str | None:
    """Return why `value` is not a valid source value of `column`, or None when it is.

    The one rule set for ingest and the API: ASCII digits only, whole-value matches, and no
    control characters anywhere (a NUL or newline would be stored truncated or split).
    """
    if is_missing(value):
        return None if column.nullable else f"missing value {value!r} not allowed"
    if CONTROL_CHARACTERS.search(value):
        return f"{value!r} contains a control character"
    if column.kind is Kind.INTEGER:
        if not INTEGER_PATTERN.fullmatch(value):
            return f"{value!r} is not a non-negative integer (ASCII digits)"
        # int() of a very long string is refused by Python itself: compare lengths first.
        if len(value.lstrip("0")) > len(str(column.maximum)) or int(value) > column.maximum:
            return f"{value[:40]} exceeds {column.maximum:,}"
        return None
    if column.kind is Kind.CATEGORY:
        if value not in column.categories:
            return f"{value!r} is not one of {', '.join(column.categories)}"
        return None
    if column.kind is Kind.CODE:
        return None if ICD9_PATTERN.fullmatch(value) else f"{value!r} is not an ICD-9 code"
    return None if TEXT_PATTERN.fullmatch(value) else f"{value!r} is not a plain code or name"
