"""Clean: raw-db -> clean-db, and the transform fitted on clean_train only.

A build replaces the clean tables and adds a clean_build row in one transaction, so readers
see either the previous build or the new one, never a mix, and a build killed midway leaves
the previous one whole (on SQLite too: see storage.db). Re-running it is safe; one build at a
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
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from readmit.errors import StorageError
from readmit.features import HISTORY_FIELD, FittedTransform, clean_frame
from readmit.pipeline.ingest import open_raw_db
from readmit.schema import INPUT_FIELDS
from readmit.settings import Settings
from readmit.split import SPLITS
from readmit.storage import clean, raw
from readmit.storage.db import (
    bulk_insert,
    check_connection,
    create_tables,
    make_engine,
    transaction,
)
from readmit.storage.locks import exclusive

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


def read_raw(engine: Engine) -> tuple[pd.DataFrame, list[int], list[str]]:
    """Every raw row with its split, the loaded batch ids, and their source checksums."""
    with engine.connect() as conn:
        batches = conn.execute(
            sa.select(raw.batch_metadata.c.batch_id, raw.batch_metadata.c.source_sha256)
            .where(raw.batch_metadata.c.status == raw.SUCCEEDED)
            .order_by(raw.batch_metadata.c.batch_id)
        ).all()
        if not batches:
            raise StorageError("raw-db: no batch has been ingested yet; run `readmit ingest` first")
        frames = []
        for split, table in raw.SPLIT_TABLES.items():
            frame = pd.read_sql(sa.select(table), conn)
            frame["split"] = split
            frames.append(frame)
    batch_ids = [b.batch_id for b in batches]
    return (
        pd.concat(frames, ignore_index=True),
        batch_ids,
        sorted({b.source_sha256 for b in batches}),
    )


def open_clean_db(settings: Settings) -> Engine:
    """Connect to clean-db and create its tables if they are not there yet."""
    engine = make_engine(settings.resolved_clean_db_url, "clean-db")
    check_connection(engine, "clean-db")
    create_tables(engine, clean.metadata, "clean-db")
    return engine


def new_build_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def build_clean(settings: Settings, report: Report = lambda _: None) -> CleanResult:
    """Clean every raw row, fit the transform on train, and write a new clean build."""
    clock = time.perf_counter()
    raw_engine = open_raw_db(settings)
    try:
        raw_rows, batch_ids, checksums = read_raw(raw_engine)
    finally:
        raw_engine.dispose()
    report(f"read {len(raw_rows):,} raw rows from {len(batch_ids)} batches")
    splits = raw_rows["split"]
    cleaned = clean_frame(raw_rows)
    split_of_row = dict(zip(raw_rows["row_hash"], splits, strict=True))
    cleaned_split = cleaned["row_hash"].map(split_of_row)
    dropped = len(raw_rows) - len(cleaned)
    report(f"cleaned: {len(cleaned):,} rows kept, {dropped:,} ended in death or hospice")
    train = cleaned[cleaned_split == "train"]
    transform = FittedTransform.fit(train, min_count=MIN_CATEGORY_COUNT)
    report(f"fitted the transform on {len(train):,} clean_train rows: {transform.width} columns")
    build_id = new_build_id()
    rows = {s: int((cleaned_split == s).sum()) for s in SPLITS}
    params: dict[str, Any] = {
        "min_category_count": MIN_CATEGORY_COUNT,
        "split_salt": settings.split_salt,
        "dropped_dispositions": "11,13,14,19,20,21",
    }
    engine = open_clean_db(settings)
    try:
        with (
            exclusive(engine, "clean-db", "clean", report),
            transaction(engine, "clean-db") as conn,
        ):
            for split, table in clean.SPLIT_TABLES.items():
                # Recreated, not emptied: the columns follow the feature list of this version.
                table.drop(conn, checkfirst=True)
                table.create(conn)
                part = cleaned[cleaned_split == split].assign(build_id=build_id)
                bulk_insert(conn, table, part)
                report(f"wrote {len(part):,} rows to clean_{split}")
            conn.execute(
                clean.clean_build.insert().values(
                    build_id=build_id,
                    created_at=datetime.now(UTC),
                    raw_batches=batch_ids,
                    source_sha256=checksums,
                    rows=rows,
                    params=params,
                    transform=transform.to_dict(),
                )
            )
    finally:
        engine.dispose()
    log.info(
        "clean build written",
        extra={
            "step": "clean",
            "build_id": build_id,
            "raw_batches": batch_ids,
            "rows": rows,
            "dropped": dropped,
            "columns": transform.width,
        },
    )
    return CleanResult(
        build_id=build_id,
        raw_batches=batch_ids,
        rows=rows,
        dropped=dropped,
        features=transform.width,
        seconds=time.perf_counter() - clock,
    )


@dataclass
class CleanBuild:
    """A clean build as training and serving read it back."""

    build_id: str
    created_at: datetime
    raw_batches: list[int]
    source_sha256: list[str]
    rows: dict[str, int]
    params: dict[str, Any]
    transform: FittedTransform


def latest_build(engine: Engine) -> CleanBuild:
    """The newest clean build; a clear error when there is none."""
    with engine.connect() as conn:
        return _latest_build(conn)


def read_clean_split(engine: Engine, split: str, build_id: str) -> pd.DataFrame:
    """The rows of one split of one build, in encounter order."""
    with engine.connect() as conn:
        return _read_split(conn, split, build_id)


def read_latest_build(engine: Engine) -> tuple[CleanBuild, dict[str, pd.DataFrame]]:
    """The newest build and its splits, read as one consistent whole.

    A rebuild drops and recreates the clean tables in one transaction, and may run while a
    training reads them (two DAG runs). On PostgreSQL the read holds the tables in ACCESS SHARE
    mode for its transaction: it waits for a rebuild in progress, and a rebuild waits for it.
    """
    with engine.connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            names = ", ".join(t.name for t in (clean.clean_build, *clean.SPLIT_TABLES.values()))
            conn.execute(sa.text(f"LOCK TABLE {names} IN ACCESS SHARE MODE"))
        build = _latest_build(conn)
        frames = {s: _read_split(conn, s, build.build_id) for s in clean.SPLIT_TABLES}
    return build, frames


def _latest_build(conn: sa.Connection) -> CleanBuild:
    table = clean.clean_build
    row = (
        conn.execute(sa.select(table).order_by(table.c.created_at.desc()).limit(1))
        .mappings()
        .first()
    )
    if row is None:
        raise StorageError("clean-db: no clean build yet; run `readmit clean` first")
    return CleanBuild(
        build_id=row["build_id"],
        created_at=row["created_at"],
        raw_batches=list(row["raw_batches"]),
        source_sha256=list(row["source_sha256"]),
        rows=dict(row["rows"]),
        params=dict(row["params"]),
        transform=FittedTransform.from_dict(row["transform"]),
    )


def _read_split(conn: sa.Connection, split: str, build_id: str) -> pd.DataFrame:
    table = clean.SPLIT_TABLES[split]
    query = sa.select(table).where(table.c.build_id == build_id).order_by(table.c.encounter_id)
    frame = pd.read_sql(query, conn)
    return frame.astype(object).where(frame.notna(), None).infer_objects()


def read_model_inputs(raw_engine: Engine, clean_rows: pd.DataFrame, split: str) -> pd.DataFrame:
    """The raw fields the model takes (plus `prior_encounters`) for the given clean rows.

    This is what the API receives for these encounters, in the order of `clean_rows`.
    """
    with raw_engine.connect() as conn:
        source = pd.read_sql(sa.select(raw.SPLIT_TABLES[split]), conn)
    keys = clean_rows[["row_hash", HISTORY_FIELD]]
    merged = keys.merge(source, on="row_hash", how="left", validate="one_to_one")
    if merged["encounter_id"].isna().any():
        raise StorageError(
            f"raw-db: raw_{split} lacks rows of the clean build; run `readmit clean`"
        )
    return merged[["encounter_id", "patient_nbr", *INPUT_FIELDS, HISTORY_FIELD]]
