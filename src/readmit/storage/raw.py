"""raw-db: the source rows as they came, one table per split, and the record of every batch."""

from __future__ import annotations

import sqlalchemy as sa

from readmit.schema import COLUMNS, Kind
from readmit.split import SPLITS

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
