"""Clean: raw-db -> clean-db, and the transform fitted on clean_train only.

A build lands whole or not at all (see storage.clean). Re-running it is safe; one build at a
time runs on a clean-db.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from readmit.features import FittedTransform, clean_frame, history_table
from readmit.settings import Settings
from readmit.split import SPLITS
from readmit.storage import clean, raw

Report = Callable[[str], None]
log = logging.getLogger(__name__)
MIN_CATEGORY_COUNT = 20


@dataclass
class CleanResult:
    build_id: str
    raw_batches: list[int]
    rows: dict[str, int]
    dropped: int
    features: int
    seconds: float


def new_build_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def clean_splits(raw_rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The clean rows of each split (raw rows carry their `split`); encounters ending in death
    or hospice are gone, their history counted before they went."""
    cleaned = clean_frame(raw_rows)
    split_of_row = dict(zip(raw_rows["row_hash"], raw_rows["split"], strict=True))
    cleaned_split = cleaned["row_hash"].map(split_of_row)
    return {s: cleaned[cleaned_split == s] for s in SPLITS}


def build_record(
    build_id: str,
    raw_batches: list[int],
    checksums: list[str],
    splits: dict[str, pd.DataFrame],
    transform: FittedTransform,
    settings: Settings,
) -> dict[str, Any]:
    """The clean_build row that describes a build: what it came from, its rows, its transform."""
    return {
        "build_id": build_id,
        "raw_batches": raw_batches,
        "source_sha256": checksums,
        "rows": {s: len(splits[s]) for s in SPLITS},
        "params": {
            "min_category_count": MIN_CATEGORY_COUNT,
            "split_salt": settings.split_salt,
            "dropped_dispositions": "11,13,14,19,20,21",
        },
        "transform": transform.to_dict(),
    }


def build_clean(settings: Settings, report: Report = lambda _: None) -> CleanResult:
    """Clean every raw row, fit the transform on train, and write a new clean build."""
    clock = time.perf_counter()
    raw_engine = raw.open_raw_db(settings)
    try:
        raw_rows, batch_ids, checksums = raw.read_raw(raw_engine)
    finally:
        raw_engine.dispose()
    report(f"read {len(raw_rows):,} raw rows from {len(batch_ids)} batches")
    splits = clean_splits(raw_rows)
    kept = sum(len(part) for part in splits.values())
    dropped = len(raw_rows) - kept
    report(f"cleaned: {kept:,} rows kept, {dropped:,} ended in death or hospice")
    transform = FittedTransform.fit(splits["train"], min_count=MIN_CATEGORY_COUNT)
    report(
        f"fitted the transform on {len(splits['train']):,} clean_train rows: "
        f"{transform.width} columns"
    )
    record = build_record(new_build_id(), batch_ids, checksums, splits, transform, settings)
    history = history_table(raw_rows)
    engine = clean.open_clean_db(settings)
    try:
        clean.write_build(engine, splits, history, record, report)
    finally:
        engine.dispose()
    log.info(
        "clean build written",
        extra={
            "step": "clean",
            "build_id": record["build_id"],
            "raw_batches": batch_ids,
            "rows": record["rows"],
            "dropped": dropped,
            "columns": transform.width,
        },
    )
    return CleanResult(
        build_id=record["build_id"],
        raw_batches=batch_ids,
        rows=record["rows"],
        dropped=dropped,
        features=transform.width,
        seconds=time.perf_counter() - clock,
    )
