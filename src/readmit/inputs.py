"""Encounters from outside the API, as a DataFrame however pandas read them, in the model's form.

The registered model also scores files: `pd.read_csv(path)` with pandas' defaults gives the data
set's column names (A1Cresult, glyburide-metformin), float NaN for "None" and empty cells, int64
or float64 columns for numbers, and floats for a diagnosis column holding only numbers.
`model_frame` takes any of that under either naming, checks each distinct value of a column
once with the schema's rules (as ingest and the API do), and returns the frame the model's
cleaning takes: field names, integers as int64, diagnosis codes as text, missing values as None.
A frame it cannot score raises `InputError`, naming the column, the value and the row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from readmit.errors import ReadmitError
from readmit.features import diagnosis_code
from readmit.schema import (
    BY_FIELD,
    FIELD_OF_NAME,
    HISTORY_BY_FIELD,
    HISTORY_FIELDS,
    INPUT_FIELDS,
    MODEL_FIELDS,
    SOURCE_OF_FIELD,
    Column,
    Kind,
    check_value,
    is_missing,
)

INPUT_COLUMNS: dict[str, Column] = {**BY_FIELD, **HISTORY_BY_FIELD}
INTEGER_INPUTS: tuple[str, ...] = tuple(
    f for f in MODEL_FIELDS if INPUT_COLUMNS[f].kind is Kind.INTEGER
)
MAX_PROBLEMS = 10  # an error message names at most this many bad columns


class InputError(ReadmitError, ValueError):
    """The encounters cannot be scored: a column is missing, or a value is not valid."""


def column_names(names: list[str]) -> dict[str, str]:
    """Field -> the input column it is read from; either the data set's or the API's name."""
    found: dict[str, str] = {}
    for name in names:
        field = FIELD_OF_NAME.get(name, name if name in HISTORY_BY_FIELD else "")
        if not field:
            continue  # identifiers, the label and anything else the model does not take
        if field in found:
            raise InputError(f"columns {found[field]!r} and {name!r} both give the field {field}")
        found[field] = name
    absent = [field for field in INPUT_FIELDS if field not in found]
    if absent:
        named = [f if SOURCE_OF_FIELD[f] == f else f"{f} (or {SOURCE_OF_FIELD[f]})" for f in absent]
        raise InputError(f"missing required column(s): {', '.join(named)}")
    return found


def model_value(column: Column, value: Any) -> Any:
    """One input value in the model's form; ValueError says why it is not valid."""
    if is_missing(value):
        if not column.nullable:
            raise ValueError("missing value, and this field is required")
        return None
    text: Any = value
    if column.kind is Kind.INTEGER:
        text = _integer_text(value)
    elif column.kind is Kind.CODE and isinstance(value, int | float | np.integer | np.floating):
        text = diagnosis_code(value)
    if not isinstance(text, str):
        raise ValueError(f"{value!r} is not text")
    reason = check_value(column, text)
    if reason:
        raise ValueError(reason)
    return int(text) if column.kind is Kind.INTEGER else text


def _integer_text(value: Any) -> Any:
    """An integer as its digits: ints, integral floats (from NaN-able columns), digit strings."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{value!r} is not a non-negative integer")
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not float(value).is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return str(int(value))
    return value


def _checked(column: Column, series: pd.Series, name: str) -> tuple[np.ndarray, str | None]:
    """The column's values in the model's form, and what is wrong with it (None when valid)."""
    codes, distinct = pd.factorize(series, use_na_sentinel=True)
    values = np.empty(len(distinct) + 1, dtype=object)  # the last one for pandas' NA values
    present = [*enumerate(distinct), *([(-1, None)] if (codes < 0).any() else [])]
    bad: list[tuple[int, str]] = []
    for code, value in present:
        try:
            values[code] = model_value(column, value)
        except ValueError as error:
            bad.append((code, str(error)))
    if not bad:
        return values[codes], None
    code, reason = bad[0]
    rows = np.flatnonzero(codes == code)
    more = f" and {len(rows) - 1} more rows" if len(rows) > 1 else ""
    others = f"; {len(bad) - 1} other bad values" if len(bad) > 1 else ""
    return values[codes], f"{name}: {reason} (at index {series.index[rows[0]]}{more}){others}"


def model_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The encounters of `frame` as the model takes them, or an InputError naming what is wrong."""
    if frame.columns.duplicated().any():
        twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise InputError(f"column(s) given more than once: {', '.join(twice)}")
    names = column_names([str(c) for c in frame.columns])
    out: dict[str, Any] = {}
    problems: list[str] = []
    for field in MODEL_FIELDS:
        if field not in names:
            continue
        column = INPUT_COLUMNS[field]
        values, problem = _checked(column, frame[names[field]], names[field])
        if problem:
            problems.append(problem)
        out[field] = values
    if problems:
        extra = len(problems) - MAX_PROBLEMS
        rest = f"; and {extra} more columns" if extra > 0 else ""
        raise InputError(f"cannot score: {'; '.join(problems[:MAX_PROBLEMS])}{rest}")
    for field in HISTORY_FIELDS:
        if field in out:
            out[field] = np.where(pd.isna(out[field]), 0, out[field])
    result = pd.DataFrame(out)
    for field in INTEGER_INPUTS:
        if field in result:
            result[field] = result[field].astype("int64")
    return result
