"""Scoring a CSV of encounters: read it, map its columns to API fields, score it in chunks.

The file may use the UCI data set's column names (`A1Cresult`, `glyburide-metformin`,
`diabetesMed`) or the API's field names (`a1cresult`, ...): both normalise to the same field.
Columns the API does not take (e.g. `readmitted`) are ignored, a missing input column is an
error naming it, and the source's "?" (or an empty cell) is sent as null.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from readmit import schema
from readmit.schema import BY_FIELD, HISTORY_FIELDS, INPUT_FIELDS, MISSING, Kind
from readmit.serving.schemas import ModelRef, RecordResult
from readmit.ui.client import ApiClient, ApiError
from readmit.ui.display import risk_band

CHUNK_SIZE = 500
OPTIONAL_FIELDS: tuple[str, ...] = ("encounter_id", "patient_nbr", *HISTORY_FIELDS)
INTEGER_TEXT = re.compile(r"^-?\d+(\.0*)?$")
RESULT_COLUMNS = ("probability", "readmitted_30d", "risk_band", "error")
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class BatchFormatError(ValueError):
    """The file cannot be scored at all: not a CSV, no rows, or required columns missing."""


@dataclass
class ParsedBatch:
    """The uploaded rows as read (all text) and the API records built from them."""

    frame: pd.DataFrame
    records: list[dict[str, Any]]
    columns: dict[str, str]  # API field -> column of the file it was read from
    ignored: list[str] = field(default_factory=list)


def field_name(column: str) -> str:
    """The API field a CSV header stands for, by the schema's rule (A1Cresult -> a1cresult)."""
    return schema.field_name(column.strip())


def read_csv(data: bytes) -> pd.DataFrame:
    """Every cell as text: "?" stays "?" and the category "None" is not taken for a null."""
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise BatchFormatError(f"The file is not a readable CSV: {exc}") from exc
    if frame.empty:
        raise BatchFormatError("The file has a header but no rows.")
    return frame


def map_columns(columns: Sequence[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(field -> file column, ignored columns, missing required fields by source name)."""
    wanted = set(INPUT_FIELDS) | set(OPTIONAL_FIELDS)
    used: dict[str, str] = {}
    ignored: list[str] = []
    for column in columns:
        name = field_name(str(column))
        if name in wanted and name not in used:
            used[name] = str(column)
        else:
            ignored.append(str(column))
    missing = [BY_FIELD[f].source for f in INPUT_FIELDS if f not in used]
    return used, ignored, missing


def _kind(name: str) -> Kind:
    return Kind.INTEGER if name in HISTORY_FIELDS else BY_FIELD[name].kind


def convert(name: str, text: str) -> Any:
    """One cell as the API expects it; a value that cannot be converted goes as it is, so the
    API names the field and the reason in that record's error."""
    value = text.strip()
    if value == "" or value == MISSING:
        return None
    if _kind(name) is Kind.INTEGER and INTEGER_TEXT.match(value):
        return int(value.split(".")[0])
    return value


def to_records(frame: pd.DataFrame, columns: dict[str, str]) -> list[dict[str, Any]]:
    """API records of the file's rows, in file order, with plain Python values (JSON-ready)."""
    names = list(columns)
    converted = [[convert(n, t) for t in frame[columns[n]].tolist()] for n in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*converted, strict=True)]


def parse_batch(data: bytes) -> ParsedBatch:
    """Read and map an uploaded CSV; BatchFormatError says what is wrong with the file."""
    frame = read_csv(data)
    used, ignored, missing = map_columns(list(frame.columns))
    if missing:
        raise BatchFormatError(
            f"The file lacks {len(missing)} required column(s): {', '.join(missing)}. "
            "Use the data set's column names (or the API's field names)."
        )
    return ParsedBatch(frame=frame, records=to_records(frame, used), columns=used, ignored=ignored)


Record = dict[str, Any]


def chunks(records: Sequence[Record], size: int = CHUNK_SIZE) -> Iterator[tuple[int, list[Record]]]:
    """(offset, records) pieces of at most `size` records, in order."""
    if size < 1:
        raise ValueError("chunk size must be positive")
    for start in range(0, len(records), size):
        yield start, list(records[start : start + size])


@dataclass
class BatchScores:
    """One result per record (index in the file's order), and the model that scored them."""

    results: list[RecordResult]
    threshold: float
    model: ModelRef | None

    @property
    def scored(self) -> int:
        return sum(r.error is None for r in self.results)

    @property
    def rejected(self) -> int:
        return len(self.results) - self.scored


class PartialBatchError(ApiError):
    """A chunk failed; `done` records were scored before it."""

    def __init__(self, message: str, done: int, total: int) -> None:
        super().__init__(f"{message} ({done:,} of {total:,} records were scored before this.)")
        self.done = done


def score(
    client: ApiClient,
    records: Sequence[dict[str, Any]],
    size: int = CHUNK_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> BatchScores:
    """Score every record through /predict-batch, `size` at a time; `progress(done, total)`
    after each chunk. Indexes in the results are positions in `records`."""
    total = len(records)
    results: list[RecordResult] = []
    threshold = 0.0
    model: ModelRef | None = None
    for start, piece in chunks(records, size):
        try:
            answer = client.predict_batch(piece)
        except ApiError as exc:
            raise PartialBatchError(exc.message, start, total) from exc
        threshold, model = answer.threshold, answer.model
        for item in answer.results:
            results.append(item.model_copy(update={"index": start + item.index}))
        if progress is not None:
            progress(min(start + len(piece), total), total)
    return BatchScores(results=results, threshold=threshold, model=model)


def results_frame(parsed: ParsedBatch, scores: BatchScores) -> pd.DataFrame:
    """The uploaded rows as read, with probability, class, risk band and error appended."""
    frame = parsed.frame.copy().reset_index(drop=True)
    for name in RESULT_COLUMNS:
        if name in frame.columns:
            frame = frame.rename(columns={name: f"{name}_input"})
    ordered = sorted(scores.results, key=lambda r: r.index)
    probabilities = [r.probability for r in ordered]
    frame["probability"] = pd.array(probabilities, dtype="Float64")
    frame["readmitted_30d"] = pd.array([r.readmitted_30d for r in ordered], dtype="boolean")
    frame["risk_band"] = [
        None if p is None else risk_band(p, scores.threshold).name for p in probabilities
    ]
    frame["error"] = [r.error for r in ordered]
    return frame


def neutralise(cell: object) -> object:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe, which
    makes it plain text; numbers (also written as text, like "-3") stay as they are."""
    if isinstance(cell, str) and cell.startswith(FORMULA_PREFIXES) and not NUMBER_TEXT.match(cell):
        return "'" + cell
    return cell


def results_csv(frame: pd.DataFrame) -> bytes:
    """The results as a CSV that is safe to open in a spreadsheet: the uploaded cells come back,
    but none of them as a formula."""
    safe = frame.copy()
    for name in safe.columns:
        if safe[name].dtype == object:
            safe[name] = safe[name].map(neutralise)
    safe.columns = [str(neutralise(str(c))) for c in safe.columns]
    # CRLF rows (RFC 4180) also get a cell holding a lone CR quoted, so it stays one cell.
    return safe.to_csv(index=False, lineterminator="\r\n").encode()
