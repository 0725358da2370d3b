"""Synthetic encounters in the source format, for tests that must not depend on the real file."""

from __future__ import annotations

import random

import pandas as pd

from readmit.schema import COLUMNS, MISSING, Kind

_CODES = ("250.83", "428", "414", "V45", "E909", "786", "8", "996", "571", "38", "715", "157")
_TEXT = {"payer_code": ("MC", "BC", "HM"), "medical_specialty": ("Cardiology", "Surgery-General")}


def synthetic_rows(n: int, seed: int = 0, patients: int | None = None) -> pd.DataFrame:
    """`n` valid source rows as strings; encounter ids ascending, patients reused."""
    rng = random.Random(seed)
    patients = patients or max(1, n // 2)
    rows = []
    for i in range(n):
        row: dict[str, str] = {}
        for column in COLUMNS:
            if column.source == "encounter_id":
                value = str(1000 + i)
            elif column.source == "patient_nbr":
                value = str(500 + rng.randrange(patients))
            elif column.kind is Kind.INTEGER:
                value = str(rng.randint(1, 9))
            elif column.kind is Kind.CATEGORY:
                value = rng.choice(column.categories)
            elif column.kind is Kind.CODE:
                value = rng.choice((*_CODES, MISSING))
            else:
                value = rng.choice((*_TEXT[column.field], MISSING))
            row[column.source] = value
        rows.append(row)
    return pd.DataFrame(rows, columns=[c.source for c in COLUMNS])
