"""Ingest: the next pending batch of source rows (or all of them) into raw-db.

A batch is one transaction: its rows land whole, with its batch_metadata row, or not at all.
Rows already present (same `row_hash`) are skipped and counted; rows that fail validation are
kept in raw_rejected with the field and the reason, and counted. One ingest at a time runs on
a raw-db: a second one waits for the first to finish, then loads what is still pending.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from readmit.dataset import Dataset, load_dataset, typed_rows
from readmit.errors import ReadmitError, StorageError, first_line
from readmit.schema import COLUMNS, SOURCE_NAMES, check_value
from readmit.settings import Settings
from readmit.split import SPLITS, assign_splits
from readmit.storage import raw
from readmit.storage.locks import exclusive

Report = Callable[[str], None]
log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    batch_id: int
    rows_read: int
    inserted: dict[str, int]
    duplicates: int
    rejected: int
    seconds: float

    def line(self, total: int) -> str:
        splits = " / ".join(f"{self.inserted[s]:,} {s}" for s in SPLITS)
        return (
            f"batch {self.batch_id}/{total}: {self.rows_read:,} read -> {splits}; "
            f"{self.duplicates:,} duplicates skipped, {self.rejected:,} rejected "
            f"({self.seconds:.1f} s)"
        )


@dataclass
class IngestResult:
    total_batches: int
    batches: list[BatchResult] = field(default_factory=list)
    pending_after: int = 0

    @property
    def rows_inserted(self) -> int:
        return sum(sum(b.inserted.values()) for b in self.batches)


ROW_FIELD = "row"  # the `field` of a rejected row that could not be read as 50 values


def row_hashes(frame: pd.DataFrame, problems: pd.Series | None = None) -> list[str]:
    """SHA-256 of each canonical source row: its 50 source strings joined by U+001F.

    A row that could not be read as it is (see `Dataset.problems`) has its problem hashed too.
    """
    columns = [frame[name].astype(str).tolist() for name in SOURCE_NAMES]
    joined = ["\x1f".join(values) for values in zip(*columns, strict=True)]
    if problems is not None and not problems.empty:
        extra = problems.reindex(frame.index, fill_value="").tolist()
        joined = [f"{j}\x1f{p}" if p else j for j, p in zip(joined, extra, strict=True)]
    return [hashlib.sha256(j.encode()).hexdigest() for j in joined]


def validation_errors(frame: pd.DataFrame, problems: pd.Series | None = None) -> pd.DataFrame:
    """For each rejected row (by index): the first bad field and why; valid rows are absent."""
    found: list[pd.DataFrame] = []
    unreadable = pd.Series(dtype=object) if problems is None else problems
    unreadable = unreadable[unreadable.index.isin(frame.index)]
    if not unreadable.empty:
        found.append(pd.DataFrame({"field": ROW_FIELD, "reason": unreadable}))
    for column in COLUMNS:
        values = frame[column.source]
        reasons = {v: r for v in values.unique() if (r := check_value(column, v)) is not None}
        if reasons:
            bad = values[values.isin(list(reasons))].map(reasons)
            found.append(pd.DataFrame({"field": column.field, "reason": bad}, index=bad.index))
    if not found:
        return pd.DataFrame(columns=["field", "reason"])
    errors = pd.concat(found)
    return errors[~errors.index.duplicated(keep="first")].sort_index()


def _batch_bounds(batch_id: int, rows: int, batch_size: int) -> tuple[int, int]:
    start = (batch_id - 1) * batch_size
    return start, min(start + batch_size, rows)


def check_batches(done: list[dict[str, Any]], dataset: Dataset, settings: Settings) -> set[int]:
    """The ids of the loaded batches `done`; refuse to mix sources, salts or batch sizes in one
    raw-db."""
    for row in done:
        start, end = _batch_bounds(row["batch_id"], len(dataset.frame), settings.batch_size)
        if row["source_sha256"] != dataset.sha256:
            raise StorageError(
                f"raw-db: batch {row['batch_id']} came from a source with checksum "
                f"{row['source_sha256'][:12]}..., not {dataset.sha256[:12]}...; use a new raw-db"
            )
        if (row["row_start"], row["row_end"]) != (start, end):
            raise StorageError(
                f"raw-db: batch {row['batch_id']} covers rows {row['row_start']}-{row['row_end']},"
                f" which batch size {settings.batch_size} does not give; keep the batch size"
            )
        if row["split_salt"] != settings.split_salt:
            raise StorageError("raw-db: loaded with another READMIT_SPLIT_SALT; use a new raw-db")
    return {row["batch_id"] for row in done}


@dataclass
class PreparedBatch:
    """One batch ready to be written: its valid rows per split, its rejected rows with the
    field and the reason, and its batch_metadata record (before the outcome is known)."""

    rows: dict[str, pd.DataFrame]
    rejected: pd.DataFrame
    record: dict[str, Any]

    @property
    def valid(self) -> int:
        return sum(len(part) for part in self.rows.values())


def prepare_batch(
    dataset: Dataset, batch_id: int, settings: Settings, started: datetime
) -> PreparedBatch:
    """Hash, validate, type and split the source rows of one batch; nothing is read or written."""
    start, end = _batch_bounds(batch_id, len(dataset.frame), settings.batch_size)
    chunk = dataset.frame.iloc[start:end]
    hashes = pd.Series(row_hashes(chunk, dataset.problems), index=chunk.index)
    errors = validation_errors(chunk, dataset.problems)
    valid = chunk.drop(index=errors.index)
    rows = typed_rows(valid)
    rows["row_hash"] = hashes[valid.index]
    rows["batch_id"] = batch_id
    rows["ingested_at"] = started
    splits = pd.Series(assign_splits(rows["patient_nbr"], settings.split_salt), index=rows.index)
    rejected = errors.assign(
        row_hash=hashes[errors.index],
        batch_id=batch_id,
        source_row=errors.index.astype("int64"),
        raw_values=[json.dumps(r) for r in chunk.loc[errors.index].to_dict("records")],
        ingested_at=started,
    )
    record: dict[str, Any] = {
        "batch_id": batch_id,
        "source_sha256": dataset.sha256,
        "source_uri": dataset.source,
        "split_salt": settings.split_salt,
        "row_start": start,
        "row_end": end,
        "first_encounter_id": str(chunk["encounter_id"].iloc[0]),
        "last_encounter_id": str(chunk["encounter_id"].iloc[-1]),
        "rows_read": len(chunk),
        "rows_rejected": len(errors),
        "started_at": started,
    }
    return PreparedBatch({s: rows[splits == s] for s in SPLITS}, rejected, record)


def load_batch(engine: Engine, dataset: Dataset, batch_id: int, settings: Settings) -> BatchResult:
    """Load one batch in one transaction and record it; on failure record it as failed."""
    clock = time.perf_counter()
    batch = prepare_batch(dataset, batch_id, settings, datetime.now(UTC))
    try:
        inserted = raw.write_batch(engine, batch.rows, batch.rejected, batch.record)
    except Exception as exc:
        reason = first_line(exc) or type(exc).__name__
        raw.record_failure(engine, batch.record, reason)
        log.error("batch failed", extra={"step": "ingest", "batch_id": batch_id, "error": reason})
        if isinstance(exc, ReadmitError):
            raise
        raise StorageError(
            f"raw-db: batch {batch_id} failed and was rolled back: {reason}"
        ) from exc
    result = BatchResult(
        batch_id=batch_id,
        rows_read=batch.record["rows_read"],
        inserted=inserted,
        duplicates=batch.valid - sum(inserted.values()),
        rejected=len(batch.rejected),
        seconds=time.perf_counter() - clock,
    )
    log.info(
        "batch loaded",
        extra={
            "step": "ingest",
            "batch_id": batch_id,
            "source_sha256": dataset.sha256,
            "rows_read": result.rows_read,
            "inserted": inserted,
            "duplicates": result.duplicates,
            "rejected": result.rejected,
            "seconds": round(result.seconds, 3),
        },
    )
    return result


def _load_pending(
    engine: Engine, dataset: Dataset, settings: Settings, all_batches: bool, report: Report
) -> IngestResult:
    """Load the next pending batch (or all); the caller holds the ingest lock of raw-db."""
    total = math.ceil(len(dataset.frame) / settings.batch_size)
    done = check_batches(raw.succeeded_batches(engine), dataset, settings)
    pending = [b for b in range(1, total + 1) if b not in done]
    result = IngestResult(total_batches=total)
    if not pending:
        report(f"all {total} batches are already in raw-db: nothing to do")
        return result
    for batch_id in pending if all_batches else pending[:1]:
        batch = load_batch(engine, dataset, batch_id, settings)
        result.batches.append(batch)
        report(batch.line(total))
    result.pending_after = len(pending) - len(result.batches)
    return result


def ingest(
    settings: Settings,
    all_batches: bool = False,
    report: Report = lambda _: None,
    dataset: Dataset | None = None,
) -> IngestResult:
    """Load the next pending batch, or every pending batch with `all_batches`."""
    engine = raw.open_raw_db(settings)
    try:
        dataset = dataset or load_dataset(settings)
        with exclusive(engine, "raw-db", "ingest", report):
            return _load_pending(engine, dataset, settings, all_batches, report)
    finally:
        engine.dispose()
