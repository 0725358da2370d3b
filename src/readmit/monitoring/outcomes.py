"""Outcomes: what became of scored encounters (readmitted "<30", ">30" or "NO"), fed back by
the hospital through POST /outcomes or `readmit outcomes FILE.csv`.

Loads are idempotent: the same value again changes nothing, a different value replaces the
stored one and is recorded as a correction. An outcome for an encounter that was never scored
is kept (its prediction may be logged later, or came from elsewhere) and counted as unmatched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine

from readmit.errors import ReadmitError
from readmit.schema import ID_MAX
from readmit.settings import Settings
from readmit.storage import monitor
from readmit.storage.db import WRITE_FIRST, transaction
from readmit.storage.monitor import LABELS, OutcomeCounts

FILE_CHUNK = 10_000
FILE_COLUMNS = ("encounter_id", "readmitted")


class OutcomeFileError(ReadmitError):
    """An outcomes file that cannot be loaded; names the row and the field."""


def record_outcomes(engine: Engine, entries: Sequence[tuple[int, str]]) -> OutcomeCounts:
    """Store one set of outcomes in one transaction (StorageError when monitor-db fails)."""
    monitor.ensure_tables(engine)
    with transaction(engine.execution_options(**{WRITE_FIRST: True}), "monitor-db") as conn:
        return monitor.upsert_outcomes(conn, entries, datetime.now(UTC))


def read_outcomes_file(path: Path) -> list[tuple[int, str]]:
    """(encounter_id, readmitted) of every row of a CSV with those columns (others ignored,
    so the data set's own diabetic_data.csv works); every row is checked before any is kept."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise OutcomeFileError(f"{path}: cannot read a CSV: {exc}") from None
    missing = [c for c in FILE_COLUMNS if c not in frame.columns]
    if missing:
        raise OutcomeFileError(f"{path}: missing column(s) {', '.join(missing)}")
    entries = []
    for index, (encounter, label) in enumerate(
        zip(frame["encounter_id"], frame["readmitted"], strict=True)
    ):
        problem = _problem(encounter.strip(), label.strip())
        if problem:
            # Row numbers count data rows from 0, as the API's indices do; the line is +2.
            raise OutcomeFileError(f"{path}: row {index} (line {index + 2}): {problem}")
        entries.append((int(encounter), label.strip()))
    return entries


def _problem(encounter: str, label: str) -> str | None:
    if not encounter.isdigit() or int(encounter) > ID_MAX:
        return f"encounter_id: {encounter!r} is not an integer from 0 to {ID_MAX:,}"
    if label not in LABELS:
        return f"readmitted: {label!r} is not one of {', '.join(repr(v) for v in LABELS)}"
    return None


def load_outcomes_file(
    settings: Settings, path: Path, report: Callable[[int, int], None] | None = None
) -> OutcomeCounts:
    """Load a whole file in chunks (each chunk one transaction); `report(done, total)` after
    each. Safe to re-run after an interruption: chunks already stored come back unchanged."""
    entries = read_outcomes_file(path)
    engine = monitor.monitor_engine(settings)
    total = OutcomeCounts()
    try:
        for start in range(0, len(entries), FILE_CHUNK):
            total.add(record_outcomes(engine, entries[start : start + FILE_CHUNK]))
            if report is not None:
                report(min(start + FILE_CHUNK, len(entries)), len(entries))
    finally:
        engine.dispose()
    return total
