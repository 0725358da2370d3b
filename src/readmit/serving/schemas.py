"""Request and response bodies of the API, derived from the encounter schema.

`Encounter` is built from `readmit.schema.COLUMNS`: integer fields are strict non-negative
integers, categorical fields accept only their categories, diagnosis codes must look like
ICD-9 codes. Fields that may be missing accept null or any other missing marker (the source's
"?", NaN): see `readmit.schema.is_missing`. A missing lab result is the data set's "None".

A record may also name its fields as the data set does (`A1Cresult`, `diabetesMed`,
`glyburide-metformin`), carry the data set's `readmitted` (ignored) and give a diagnosis code as
a number (pandas reads an all-numeric code column so): a row of `diabetic_data.csv` as parsed
is accepted as it is (`as_fields`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    StrictInt,
    create_model,
    field_validator,
    model_validator,
)

from readmit.features import diagnosis_code
from readmit.schema import (
    COLUMNS,
    FIELD_OF_SOURCE,
    HISTORY_COLUMNS,
    HISTORY_FIELDS,
    ICD9_PATTERN,
    ID_MAX,
    MISSING,
    TEXT_PATTERN,
    Column,
    Kind,
    anchored,
    check_value,
    is_missing,
)

EXAMPLE: dict[str, Any] = {
    "encounter_id": 149190,
    "patient_nbr": 55629189,
    "race": "Caucasian",
    "gender": "Female",
    "age": "[70-80)",
    "weight": None,
    "admission_type_id": 1,
    "discharge_disposition_id": 1,
    "admission_source_id": 7,
    "time_in_hospital": 5,
    "payer_code": "MC",
    "medical_specialty": "InternalMedicine",
    "num_lab_procedures": 59,
    "num_procedures": 0,
    "num_medications": 18,
    "number_outpatient": 0,
    "number_emergency": 0,
    "number_inpatient": 2,
    "diag_1": "428",
    "diag_2": "250.01",
    "diag_3": "403",
    "number_diagnoses": 9,
    "max_glu_serum": "None",
    "a1cresult": ">7",
    "metformin": "Steady",
    "repaglinide": "No",
    "nateglinide": "No",
    "chlorpropamide": "No",
    "glimepiride": "No",
    "acetohexamide": "No",
    "glipizide": "No",
    "glyburide": "No",
    "tolbutamide": "No",
    "pioglitazone": "No",
    "rosiglitazone": "No",
    "acarbose": "No",
    "miglitol": "No",
    "troglitazone": "No",
    "tolazamide": "No",
    "examide": "No",
    "citoglipton": "No",
    "insulin": "Up",
    "glyburide_metformin": "No",
    "glipizide_metformin": "No",
    "glimepiride_pioglitazone": "No",
    "metformin_rosiglitazone": "No",
    "metformin_pioglitazone": "No",
    "change": "Ch",
    "diabetesmed": "Yes",
    "prior_encounters": 1,
    "prior_readmissions_30d": 0,
    "prior_readmissions_any": 1,
    "prior_days_in_hospital": 3,
}


RENAMED = {source: field for source, field in FIELD_OF_SOURCE.items() if source != field}
CODE_FIELDS = tuple(c.field for c in COLUMNS if c.kind is Kind.CODE)


def as_fields(record: Any) -> Any:
    """A record under the API's field names, its numeric diagnosis codes as text. Anything
    else (not a dict, a field given under both names) is returned as is, for validation to
    name."""
    if not isinstance(record, dict):
        return record
    if not RENAMED.keys().isdisjoint(record):
        renamed = {RENAMED.get(k, k): v for k, v in record.items()}
        if len(renamed) < len(record):
            return record
        record = renamed
    for field in CODE_FIELDS:
        value = record.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            record = {**record, field: diagnosis_code(value)}
    return record


def _source_rules(column: Column) -> AfterValidator:
    """The ingest's own check of a text value, so the API accepts exactly what ingest does."""

    def check(value: str) -> str:
        reason = check_value(column, value)
        if reason is not None:
            raise ValueError(reason)
        return value

    return AfterValidator(check)


def _documented(pattern: re.Pattern[str], about: str) -> Any:
    """The pattern in the JSON Schema; the check itself is `_source_rules`, with its reason."""
    return Field(description=about, json_schema_extra={"pattern": anchored(pattern)})


def _field(column: Column) -> tuple[Any, Any]:
    """The pydantic type and default of one source column."""
    about = column.description or column.source
    if column.source != column.field:
        about = f"{about} (also accepted under the data set's name, {column.source})"
    kind: Any
    if column.kind is Kind.INTEGER:
        kind = Annotated[StrictInt, Field(ge=0, le=column.maximum, description=about)]
    elif column.kind is Kind.CATEGORY:
        kind = Annotated[Literal[column.categories], Field(description=about)]
    elif column.kind is Kind.CODE:
        kind = Annotated[str, _documented(ICD9_PATTERN, about), _source_rules(column)]
    else:
        kind = Annotated[str, _documented(TEXT_PATTERN, about), _source_rules(column)]
    if not column.feature:
        return kind | None, None
    if column.nullable:
        return kind | None, ...
    return kind, ...


class _EncounterBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    @field_validator("*", mode="before")
    @classmethod
    def _missing_marker(cls, value: Any) -> Any:
        """Any missing marker ("?", NaN) is accepted for fields that may be missing, as null."""
        return None if is_missing(value) else value

    @model_validator(mode="before")
    @classmethod
    def _dataset_names(cls, data: Any) -> Any:
        renamed = as_fields(data)
        if renamed is data and isinstance(data, dict):
            twice = [s for s, f in RENAMED.items() if s in data and f in data]
            if twice:
                raise ValueError(f"{twice[0]} and {RENAMED[twice[0]]} name the same field")
        return renamed

    def model_input(self) -> dict[str, Any]:
        """The raw record the model takes: missing values back to the source's "?"."""
        record = self.model_dump(exclude={"encounter_id", "patient_nbr", "readmitted"})
        return {
            k: (MISSING if v is None and k not in HISTORY_FIELDS else v) for k, v in record.items()
        }


_fields: dict[str, Any] = {column.field: _field(column) for column in COLUMNS}
for _history in HISTORY_COLUMNS:
    _fields[_history.source] = (
        Annotated[
            StrictInt,
            Field(
                ge=0,
                le=_history.maximum,
                description=f"{_history.description}; when no history field is sent, looked up "
                "by patient_nbr (0 for a new patient)",
            ),
        ]
        | None,
        None,
    )
if TYPE_CHECKING:
    Encounter = _EncounterBase
else:
    Encounter = create_model(
        "Encounter",
        __base__=_EncounterBase,
        __doc__="The raw fields of one encounter, as in the data set (identifiers are optional "
        "and never used as features).",
        **_fields,
    )


class ModelRef(BaseModel):
    name: str
    version: str


HistorySource = Literal["store", "request", "new_patient", "unavailable"]
HISTORY_ABOUT = (
    "Where the patient history came from: `store` (looked up by patient_nbr, as of before this "
    "encounter), `request` (sent by the caller), `new_patient` (no earlier encounter known: "
    "zeros), `unavailable` (the store could not be read: zeros)."
)
ANSWERED_BY = "Which model answered: `champion` (@production) or `challenger` (canary mode)."


class Prediction(BaseModel):
    probability: float = Field(description="Probability of readmission within 30 days.")
    readmitted_30d: bool = Field(description="probability >= threshold")
    threshold: float
    model: ModelRef
    request_id: str
    history: HistorySource = Field(default="request", description=HISTORY_ABOUT)
    history_used: dict[str, int] = Field(
        default_factory=dict, description="The patient history the model was given."
    )
    variant: Literal["champion", "challenger"] = Field(default="champion", description=ANSWERED_BY)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Not validated here: each record is validated on its own, in the thread pool, so one bad
    # record does not fail the batch and a huge batch does not hold the event loop.
    records: SkipValidation[list[dict[str, Any]]] = Field(
        description="Encounters, as for /predict (at most READMIT_MAX_BATCH)."
    )


class RecordResult(BaseModel):
    index: int
    probability: float | None = None
    readmitted_30d: bool | None = None
    error: str | None = None
    history: HistorySource | None = Field(default=None, description=HISTORY_ABOUT)
    variant: Literal["champion", "challenger"] | None = Field(default=None, description=ANSWERED_BY)


class BatchPrediction(BaseModel):
    results: list[RecordResult]
    threshold: float
    model: ModelRef
    request_id: str
    scored: int
    rejected: int
    challenger: ModelRef | None = Field(
        default=None, description="The challenger, when it answered some records (canary)."
    )


class Contribution(BaseModel):
    field: str
    contribution: float = Field(description="SHAP value in log-odds")


class Explanation(BaseModel):
    probability: float
    base_value: float = Field(description="Expected log-odds before any field is seen")
    margin: float = Field(description="base_value + sum of all contributions (log-odds)")
    contributions: list[Contribution]
    model: ModelRef
    request_id: str


ChallengerMode = Literal["off", "shadow", "canary"]


class Health(BaseModel):
    status: Literal["ok", "not_ready"]
    live: bool
    ready: bool
    model: ModelRef | None
    detail: str
    challenger_mode: ChallengerMode = "off"
    challenger: ModelRef | None = Field(
        default=None, description="The @challenger version loaded (never needed for readiness)."
    )
    challenger_detail: str | None = None
    workers: dict[str, int] | None = Field(
        default=None,
        description=(
            "Under several workers: how many serve each @production version ('none': no model "
            "yet). A promotion has reached every worker when one version counts them all."
        ),
    )


class VariantInfo(BaseModel):
    name: str
    version: str
    alias: str
    run_id: str | None
    estimator: str | None
    trained_at: str | None
    clean_build: str | None
    test_metrics: dict[str, float]
    threshold: float
    features: list[str]
    loaded_at: str
    model_card: str | None = Field(
        default=None,
        description="Where the model card of the served version is (GET it; `?format=html` "
        "for the page); null when the model names no training run",
    )
    model_card_artifact: str | None = Field(
        default=None, description="The card's Markdown artifact in MLflow (runs:/...)"
    )


class ModelInfo(VariantInfo):
    """The champion's facts, and the challenger's beside them."""

    challenger_mode: ChallengerMode = "off"
    canary_percent: float | None = Field(
        default=None, description="Share of patients the challenger answers (canary mode)."
    )
    challenger: VariantInfo | None = None


class ReloadResult(BaseModel):
    changed: bool
    model: ModelRef | None
    detail: str
    challenger: ModelRef | None = None
    challenger_changed: bool = False


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    encounter_id: StrictInt = Field(ge=0, le=ID_MAX, description="The scored encounter")
    readmitted: Literal["<30", ">30", "NO"] = Field(
        description="What happened, as in the data set: within 30 days, later, or not at all"
    )


class OutcomesRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"outcomes": [{"encounter_id": 149190, "readmitted": ">30"}]}]
        },
    )
    outcomes: list[Outcome] = Field(description="At most READMIT_MAX_BATCH outcomes.")


class OutcomesResult(BaseModel):
    received: int
    inserted: int = Field(description="Outcomes new to monitor-db")
    updated: int = Field(description="Corrections: a different value replaced the stored one")
    unchanged: int = Field(description="The value stored already")
    unmatched: int = Field(description="Outcomes of encounters never scored (kept)")
