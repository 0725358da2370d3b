"""Cleaning rules and the fitted transform, shared by the clean step, training and serving.

Every cleaning rule is a function of one value (or one record) written once. The bulk path
(`clean_frame`) applies the same functions to each distinct value of a column, so a record
cleaned alone (`clean_record`, used by the API) gets exactly what the clean step stored.

`FittedTransform` turns clean features into the model's numeric vector: numeric scaling and
per-field vocabularies, fitted on clean_train only. It encodes a DataFrame in bulk for training
and a single dict with plain Python for serving, to the same vector.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from readmit.schema import BY_FIELD, HISTORY_FIELDS, MEDICATION_FIELDS, is_missing

# Encounters that end in death or hospice cannot be readmitted: they leave the data.
DROPPED_DISPOSITIONS = frozenset({"11", "13", "14", "19", "20", "21"})
# Codes that the UCI mapping file describes as NULL, Not Available, Not Mapped or Unknown.
UNKNOWN_CODES: dict[str, frozenset[str]] = {
    "admission_type_id": frozenset({"5", "6", "8"}),
    "discharge_disposition_id": frozenset({"18", "25", "26"}),
    "admission_source_id": frozenset({"9", "15", "17", "20", "21"}),
}
CODE_FIELDS = tuple(UNKNOWN_CODES)
COUNT_FIELDS = (
    "time_in_hospital",
    "num_lab_procedures",
    "num_procedures",
    "num_medications",
    "number_outpatient",
    "number_emergency",
    "number_inpatient",
    "number_diagnoses",
)
PLAIN_CATEGORY_FIELDS = (
    "race",
    "gender",
    "weight",
    "payer_code",
    "medical_specialty",
    "max_glu_serum",
    "a1cresult",
    *MEDICATION_FIELDS,
    "change",
    "diabetesmed",
)
DIAG_FIELDS = ("diag_1", "diag_2", "diag_3")

NUMERIC_FEATURES: tuple[str, ...] = (
    "age_years",
    *COUNT_FIELDS,
    *HISTORY_FIELDS,
    "meds_active",
    "meds_changed",
)
CATEGORICAL_FEATURES: tuple[str, ...] = (
    *PLAIN_CATEGORY_FIELDS,
    *CODE_FIELDS,
    *(f"{d}_group" for d in DIAG_FIELDS),
    "diag_1_code3",
)
FEATURES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES
# The raw field each feature comes from, for explanations in the user's terms; the medication
# counts come from all 23 medication fields and keep their own names.
SOURCE_OF_FEATURE: dict[str, str] = {
    **{name: name for name in FEATURES},
    "age_years": "age",
    **{f"{d}_group": d for d in DIAG_FIELDS},
    "diag_1_code3": "diag_1",
}

# The data set has no dates. Its clock for history is the encounter order: encounter `e`
# happened at HISTORY_EPOCH + e.encounter_id seconds. Fixed per encounter (it does not move as
# batches arrive), ordered like `encounter_id`, and in the past, so a point-in-time join "as of
# just before encounter e" sees exactly the encounters with a smaller id.
HISTORY_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
HISTORY_COLUMNS_OUT = ("encounter_id", "patient_nbr", "event_timestamp", *HISTORY_FIELDS)

MISSING_TOKEN = "__missing__"
OTHER_TOKEN = "__other__"


# --- cleaning rules, one value at a time -------------------------------------------------


def category(value: Any) -> str | None:
    """A categorical source value; any missing marker and 'Unknown/Invalid' become missing."""
    if is_missing(value) or value == "Unknown/Invalid":
        return None
    return str(value)


def field_category(field_name: str, value: Any) -> str | None:
    """A categorical field's value: a missing lab result is the data set's 'None' (not taken)."""
    if is_missing(value):
        return BY_FIELD[field_name].missing_as
    return category(value)


def admission_code(field_name: str, value: Any) -> str | None:
    """Admission and discharge codes are categories, with their 'unknown' codes missing."""
    if is_missing(value):
        return None
    code = str(int(value))
    return None if code in UNKNOWN_CODES[field_name] else code


def history_count(value: Any) -> int:
    """A history count of the patient; a caller that cannot count it sends nothing (0)."""
    return 0 if is_missing(value) else int(value)


def age_years(bracket: str) -> int:
    """'[70-80)' -> 75: the bracket's midpoint keeps the order and a readable unit."""
    low, high = bracket.strip("[)").split("-")
    return (int(low) + int(high)) // 2


def diagnosis_code(value: Any) -> str | None:
    """A diagnosis code as its text: pandas reads an all-numeric column as floats (428.0)."""
    if is_missing(value):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def icd9_group(code: Any) -> str | None:
    """ICD-9 code to the clinical groups of Strack et al. (2014)."""
    text = diagnosis_code(code)
    if text is None:
        return None
    if text.startswith(("V", "E")):
        return "other"
    number = float(text)
    if int(number) == 250:
        return "diabetes"
    for low, high, name in _ICD9_RANGES:
        if low <= number < high:
            return name
    return "other"


_ICD9_RANGES = (
    (390, 460, "circulatory"),
    (785, 786, "circulatory"),
    (460, 520, "respiratory"),
    (786, 787, "respiratory"),
    (520, 580, "digestive"),
    (787, 788, "digestive"),
    (800, 1000, "injury"),
    (710, 740, "musculoskeletal"),
    (580, 630, "genitourinary"),
    (788, 789, "genitourinary"),
    (140, 240, "neoplasms"),
)


def icd9_code3(code: Any) -> str | None:
    """The 3-character ICD-9 category ('428.0' -> '428', 'V45.1' -> 'V45')."""
    text = diagnosis_code(code)
    return None if text is None else text.split(".")[0]


def is_dropped(discharge_disposition_id: Any) -> bool:
    return str(discharge_disposition_id) in DROPPED_DISPOSITIONS


def label_of(readmitted: str) -> int:
    return int(readmitted == "<30")


# --- whole records and whole frames ------------------------------------------------------


def clean_record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Clean features of one encounter given its raw fields (the serving path)."""
    out: dict[str, Any] = {"age_years": age_years(raw["age"])}
    for name in COUNT_FIELDS:
        out[name] = int(raw[name])
    for name in HISTORY_FIELDS:
        out[name] = history_count(raw.get(name))
    meds = [raw[m] for m in MEDICATION_FIELDS]
    out["meds_active"] = sum(v != "No" for v in meds)
    out["meds_changed"] = sum(v in ("Up", "Down") for v in meds)
    for name in PLAIN_CATEGORY_FIELDS:
        out[name] = field_category(name, raw[name])
    for name in CODE_FIELDS:
        out[name] = admission_code(name, raw[name])
    for name in DIAG_FIELDS:
        out[f"{name}_group"] = icd9_group(raw[name])
    out["diag_1_code3"] = icd9_code3(raw["diag_1"])
    return out


def _per_value(series: pd.Series, rule: Any) -> pd.Series:
    """Apply a one-value rule to each distinct value once: fast, and identical to the rule.

    pandas' own missing values (None, NaN, pd.NA, NaT) share one code and get `rule(None)`.
    """
    codes, distinct = pd.factorize(series, use_na_sentinel=True)
    results = np.empty(len(distinct) + 1, dtype=object)  # the last one for code -1 (NA)
    for code, value in enumerate(distinct):
        results[code] = rule(value)
    if (codes < 0).any():
        results[-1] = rule(None)
    return pd.Series(results[codes], index=series.index, dtype=object)


def history_steps(raw: pd.DataFrame) -> pd.DataFrame:
    """What each encounter adds to its patient's history, once its outcome is known."""
    return pd.DataFrame(
        {
            "prior_encounters": 1,
            "prior_readmissions_30d": (raw["readmitted"] == "<30").astype("int64"),
            "prior_readmissions_any": (raw["readmitted"] != "NO").astype("int64"),
            "prior_days_in_hospital": raw["time_in_hospital"].astype("int64"),
        },
        index=raw.index,
    )[list(HISTORY_FIELDS)]


def history_through(raw: pd.DataFrame) -> pd.DataFrame:
    """For each encounter, its patient's history up to and including it (`encounter_id` order):
    what a later encounter of the same patient sees. Aligned with `raw`'s index."""
    order = raw.sort_values(["patient_nbr", "encounter_id"], kind="stable")
    steps = history_steps(order)
    totals = steps.groupby(order["patient_nbr"].to_numpy(), sort=False).cumsum()
    return totals.reindex(raw.index).astype("int64")


def prior_history(raw: pd.DataFrame) -> pd.DataFrame:
    """For each encounter, its patient's history before it: earlier `encounter_id`s only.

    A count over the whole file would tell the model about the future: the readmission counts
    would include the encounter's own outcome and later ones (ROC-AUC well above 0.75).
    """
    return history_through(raw) - history_steps(raw)


def event_times(encounter_ids: pd.Series) -> pd.Series:
    """Each encounter's time on the encounter-order clock (see HISTORY_EPOCH)."""
    seconds = pd.to_timedelta(encounter_ids.astype("int64"), unit="s")
    return pd.Series(HISTORY_EPOCH + seconds, index=encounter_ids.index)


def history_table(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per encounter: the patient's history through it, stamped with its event time.

    The feature store's source. A row holds what any later encounter of the patient sees, so
    the history before encounter `e` is the patient's latest row strictly before e's time.
    Every raw encounter counts, those ending in death or hospice too.
    """
    out = history_through(raw)
    out.insert(0, "event_timestamp", event_times(raw["encounter_id"]))
    out.insert(0, "patient_nbr", raw["patient_nbr"].astype("int64"))
    out.insert(0, "encounter_id", raw["encounter_id"].astype("int64"))
    return out.sort_values("encounter_id").reset_index(drop=True)[list(HISTORY_COLUMNS_OUT)]


def clean_features(raw: pd.DataFrame) -> pd.DataFrame:
    """Clean features of many encounters given their raw fields and their history counts.

    The bulk twin of `clean_record`: the same rules, applied to each distinct value once.
    """
    out = pd.DataFrame({"age_years": _per_value(raw["age"], age_years).astype("int64")})
    for name in COUNT_FIELDS:
        out[name] = raw[name].astype("int64")
    for name in HISTORY_FIELDS:
        history = raw[name] if name in raw else pd.Series(0, index=raw.index)
        out[name] = _per_value(history, history_count).astype("int64")
    meds = raw[list(MEDICATION_FIELDS)]
    out["meds_active"] = (meds != "No").sum(axis=1).astype("int64")
    out["meds_changed"] = meds.isin(["Up", "Down"]).sum(axis=1).astype("int64")
    for name in PLAIN_CATEGORY_FIELDS:
        out[name] = _per_value(raw[name], lambda v, n=name: field_category(n, v))
    for name in CODE_FIELDS:
        out[name] = _per_value(raw[name], lambda v, n=name: admission_code(n, v))
    for name in DIAG_FIELDS:
        out[f"{name}_group"] = _per_value(raw[name], icd9_group)
    out["diag_1_code3"] = _per_value(raw["diag_1"], icd9_code3)
    return out


def clean_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Clean features, label and identifiers for many raw encounters (the clean step).

    `raw` holds every encounter known so far; the history is taken over all of them before
    encounters ending in death or hospice are dropped.
    """
    raw = raw.reset_index(drop=True)
    raw = pd.concat(
        [raw.drop(columns=list(HISTORY_FIELDS), errors="ignore"), prior_history(raw)], axis=1
    )
    raw = raw[~raw["discharge_disposition_id"].map(is_dropped)].reset_index(drop=True)
    ids = pd.DataFrame(
        {
            "encounter_id": raw["encounter_id"].astype("int64"),
            "patient_nbr": raw["patient_nbr"].astype("int64"),
            "row_hash": raw["row_hash"],
            "label": raw["readmitted"].map(label_of).astype("int64"),
        }
    )
    return pd.concat([ids, clean_features(raw)], axis=1)


# --- the fitted transform ----------------------------------------------------------------


@dataclass
class FittedTransform:
    """Numeric scaling and per-field vocabularies, fitted on clean_train, in column order.

    Columns: one per numeric feature (standardised), then for each categorical feature one
    per vocabulary token (which may include `__missing__`) and one `__other__` column for
    values rare in training or never seen.
    """

    numeric: list[str]
    means: list[float]
    scales: list[float]
    categorical: list[str]
    vocabularies: dict[str, list[str]]
    min_count: int
    fitted_rows: int
    columns: list[str] = field(default_factory=list)
    column_field: list[str] = field(default_factory=list)
    _index: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.columns = list(self.numeric)
        self.column_field = list(self.numeric)
        for name in self.categorical:
            index: dict[str, int] = {}
            for token in [*self.vocabularies[name], OTHER_TOKEN]:
                index[token] = len(self.columns)
                self.columns.append(f"{name}={token}")
                self.column_field.append(name)
            self._index[name] = index

    @classmethod
    def fit(cls, train: pd.DataFrame, min_count: int = 20) -> FittedTransform:
        """Fit on clean_train rows only; nothing here may see validation or test rows."""
        means, scales = [], []
        for name in NUMERIC_FEATURES:
            values = train[name].astype("float64")
            means.append(float(values.mean()))
            std = float(values.std(ddof=0))
            scales.append(std if std > 0 else 1.0)
        vocabularies = {}
        for name in CATEGORICAL_FEATURES:
            counts = train[name].fillna(MISSING_TOKEN).value_counts()
            vocabularies[name] = sorted(str(t) for t in counts[counts >= min_count].index)
        return cls(
            numeric=list(NUMERIC_FEATURES),
            means=means,
            scales=scales,
            categorical=list(CATEGORICAL_FEATURES),
            vocabularies=vocabularies,
            min_count=min_count,
            fitted_rows=len(train),
        )

    @property
    def width(self) -> int:
        return len(self.columns)

    def transform_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode many clean rows at once (training, evaluation, batch scoring)."""
        out = np.zeros((len(frame), self.width), dtype=np.float32)
        for i, name in enumerate(self.numeric):
            values = frame[name].astype("float64").to_numpy()
            out[:, i] = (values - self.means[i]) / self.scales[i]
        rows = np.arange(len(frame))
        for name in self.categorical:
            index = self._index[name]
            other = index[OTHER_TOKEN]
            tokens = frame[name].astype(object).where(frame[name].notna(), MISSING_TOKEN)
            lookup = {t: index.get(str(t), other) for t in tokens.unique()}
            out[rows, tokens.map(lookup).to_numpy(dtype=np.int64)] = 1.0
        return out

    def transform_record(self, record: Mapping[str, Any]) -> np.ndarray:
        """Encode one clean record with plain Python (the serving fast path)."""
        out = np.zeros(self.width, dtype=np.float32)
        for i, name in enumerate(self.numeric):
            out[i] = (float(record[name]) - self.means[i]) / self.scales[i]
        for name in self.categorical:
            index = self._index[name]
            value = record[name]
            token = MISSING_TOKEN if value is None else str(value)
            out[index.get(token, index[OTHER_TOKEN])] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for derived in ("columns", "column_field", "_index"):
            data.pop(derived)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FittedTransform:
        return cls(**data)
