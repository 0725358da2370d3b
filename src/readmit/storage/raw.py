"""raw-db: the source rows as they came, one table per split, and the record of every batch;
with every query that reads or writes them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from readmit.errors import StorageError
from readmit.schema import COLUMNS, HISTORY_FIELDS, MODEL_FIELDS, Kind
from readmit.settings import Settings
from readmit.split import SPLITS
from readmit.storage.db import (
    bulk_insert,
    check_connection,
    count_rows,
    create_tables,
    existing_keys,
    make_engine,
    transaction,
)

log = logging.getLogger(__name__)

metadata = sa.MetaData()


def _source_columns() -> list[sa.Column]:
    return [
        sa.Column(c.field, sa.BigInteger if c.kind is Kind.INTEGER else sa.Text, nullable=False)
        for c in COLUMNS
    ]


def _split_table(split: str) -> sa.Table:
    return sa.Table(
        f"raw_{split}",
        metadata,
        *_source_columns(),
        sa.Column("row_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("batch_id", sa.Integer, nullable=False, index=True),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    )


SPLIT_TABLES: dict[str, sa.Table] = {split: _split_table(split) for split in SPLITS}

rejected = sa.Table(
    "raw_rejected",
    metadata,
    sa.Column("row_hash", sa.String(64), primary_key=True),
    sa.Column("batch_id", sa.Integer, nullable=False, index=True),
    sa.Column("source_row", sa.Integer, nullable=False),
    sa.Column("field", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw_values", sa.Text, nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
)

batch_metadata = sa.Table(
    "batch_metadata",
    metadata,
    sa.Column("batch_id", sa.Integer, primary_key=True),
    sa.Column("source_sha256", sa.String(64), nullable=False),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("split_salt", sa.Text, nullable=False),
    sa.Column("row_start", sa.Integer, nullable=False),
    sa.Column("row_end", sa.Integer, nullable=False),
    sa.Column("first_encounter_id", sa.Text),
    sa.Column("last_encounter_id", sa.Text),
    sa.Column("rows_read", sa.Integer, nullable=False),
    sa.Column("rows_train", sa.Integer, nullable=False, default=0),
    sa.Column("rows_validation", sa.Integer, nullable=False, default=0),
    sa.Column("rows_test", sa.Integer, nullable=False, default=0),
    sa.Column("rows_duplicate", sa.Integer, nullable=False, default=0),
    sa.Column("rows_rejected", sa.Integer, nullable=False, default=0),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)

SUCCEEDED = "succeeded"
FAILED = "failed"


def open_raw_db(settings: Settings) -> Engine:
    """Connect to raw-db and create its tables if they are not there yet."""
    engine = make_engine(settings.resolved_raw_db_url, "raw-db")
    check_connection(engine, "raw-db")
    create_tables(engine, metadata, "raw-db")
    return engine


# --- batches ----------------------------------------------------------------------------------


def succeeded_batches(engine: Engine) -> list[dict[str, Any]]:
    """The batch_metadata rows of the batches loaded whole."""
    query = sa.select(batch_metadata).where(batch_metadata.c.status == SUCCEEDED)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def batch_records(engine: Engine) -> list[dict[str, Any]]:
    """Every batch_metadata row, succeeded or failed, in batch order."""
    query = sa.select(batch_metadata).order_by(batch_metadata.c.batch_id)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def write_batch(
    engine: Engine,
    rows: Mapping[str, pd.DataFrame],
    rejects: pd.DataFrame,
    record: dict[str, Any],
) -> dict[str, int]:
    """Insert a batch's new rows per split and its new rejects, and record it as succeeded, in
    one transaction; rows already there (same `row_hash`) are skipped. Returns rows inserted
    per split."""
    with transaction(engine, "raw-db") as conn:
        inserted = {}
        for split, part in rows.items():
            table = SPLIT_TABLES[split]
            inserted[split] = bulk_insert(conn, table, _new_rows(conn, table, part))
        bulk_insert(conn, rejected, _new_rows(conn, rejected, rejects))
        offered = sum(len(part) for part in rows.values())
        conn.execute(_delete_failed(record["batch_id"]))
        conn.execute(
            batch_metadata.insert().values(
                **record,
                **{f"rows_{s}": n for s, n in inserted.items()},
                rows_duplicate=offered - sum(inserted.values()),
                status=SUCCEEDED,
                finished_at=datetime.now(UTC),
            )
        )
    return inserted


def _new_rows(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows not yet in `table`, each once: what makes a re-run idempotent."""
    frame = frame.drop_duplicates("row_hash")
    present = existing_keys(conn, table.c.row_hash, frame["row_hash"].tolist())
    return frame[~frame["row_hash"].isin(present)]


def _delete_failed(batch_id: int) -> sa.Delete:
    """The failed record of a batch, replaced by the run that loads it; a success stays."""
    table = batch_metadata
    return table.delete().where(table.c.batch_id == batch_id, table.c.status == FAILED)


def record_failure(engine: Engine, record: dict[str, Any], reason: str) -> None:
    """Record the batch as failed, unless another run has loaded it: its record stays as is."""
    table = batch_metadata
    batch_id = record["batch_id"]
    try:
        with transaction(engine, "raw-db") as conn:
            status = conn.execute(
                sa.select(table.c.status).where(table.c.batch_id == batch_id)
            ).scalar_one_or_none()
            if status == SUCCEEDED:
                return
            conn.execute(_delete_failed(batch_id))
            conn.execute(
                table.insert().values(
                    **record, status=FAILED, error=reason, finished_at=datetime.now(UTC)
                )
            )
    except StorageError as exc:
        log.error("batch failure not recorded", extra={"batch_id": batch_id, "error": str(exc)})


# --- reading ----------------------------------------------------------------------------------


def read_raw(engine: Engine) -> tuple[pd.DataFrame, list[int], list[str]]:
    """Every raw row with its split, the loaded batch ids, and their source checksums."""
    with engine.connect() as conn:
        batches = conn.execute(
            sa.select(batch_metadata.c.batch_id, batch_metadata.c.source_sha256)
            .where(batch_metadata.c.status == SUCCEEDED)
            .order_by(batch_metadata.c.batch_id)
        ).all()
        if not batches:
            raise StorageError("raw-db: no batch has been ingested yet; run `readmit ingest` first")
        frames = []
        for split, table in SPLIT_TABLES.items():
            frame = pd.read_sql(sa.select(table), conn)
            frame["split"] = split
            frames.append(frame)
    batch_ids = [b.batch_id for b in batches]
    return (
        pd.concat(frames, ignore_index=True),
        batch_ids,
        sorted({b.source_sha256 for b in batches}),
    )


def read_model_inputs(engine: Engine, clean_rows: pd.DataFrame, split: str) -> pd.DataFrame:
    """The raw fields the model takes (with the history counts) for the given clean rows.

    This is what the API receives for these encounters, in the order of `clean_rows`.
    """
    with engine.connect() as conn:
        source = pd.read_sql(sa.select(SPLIT_TABLES[split]), conn)
    keys = clean_rows[["row_hash", *HISTORY_FIELDS]]
    merged = keys.merge(source, on="row_hash", how="left", validate="one_to_one")
    if merged["encounter_id"].isna().any():
        raise StorageError(
            f"raw-db: raw_{split} lacks rows of the clean build; run `readmit clean`"
        )
    return merged[["encounter_id", "patient_nbr", *MODEL_FIELDS]]


# --- counts -----------------------------------------------------------------------------------


def table_rows(engine: Engine) -> dict[str, int]:
    """Rows in each split table and in raw_rejected, by table name."""
    with engine.connect() as conn:
        return {t.name: count_rows(conn, t) for t in [*SPLIT_TABLES.values(), rejected]}


@dataclass
class BatchSummary:
    """Batches by status, when one last succeeded, and the status of the newest."""

    by_status: dict[str, int]
    last_success: datetime | None
    latest_status: str | None


def batch_summary(engine: Engine) -> BatchSummary:
    with engine.connect() as conn:
        counts = conn.execute(
            sa.select(batch_metadata.c.status, sa.func.count()).group_by(batch_metadata.c.status)
        ).all()
        last_success = conn.execute(
            sa.select(sa.func.max(batch_metadata.c.finished_at)).where(
                batch_metadata.c.status == SUCCEEDED
            )
        ).scalar_one()
        latest = conn.execute(
            sa.select(batch_metadata.c.status)
            .order_by(batch_metadata.c.finished_at.desc())
            .limit(1)
        ).scalar_one_or_none()
    return BatchSummary({str(s): int(n) for s, n in counts}, last_success, latest)
