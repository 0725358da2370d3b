"""clean-db: cleaned features per split, and the clean builds with their fitted transform;
with every query that reads or writes them.

A build replaces the clean tables and adds a clean_build row in one transaction, so readers
see either the previous build or the new one, never a mix, and a build killed midway leaves
the previous one whole (on SQLite too: see storage.db).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from readmit.errors import StorageError
from readmit.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES, FittedTransform
from readmit.schema import HISTORY_FIELDS
from readmit.settings import Settings
from readmit.split import SPLITS
from readmit.storage.db import (
    bulk_insert,
    check_connection,
    count_rows,
    create_tables,
    make_engine,
    transaction,
)
from readmit.storage.locks import exclusive

metadata = sa.MetaData()


def _split_table(split: str) -> sa.Table:
    return sa.Table(
        f"clean_{split}",
        metadata,
        sa.Column("build_id", sa.String(32), nullable=False, index=True),
        sa.Column("encounter_id", sa.BigInteger, nullable=False),
        sa.Column("patient_nbr", sa.BigInteger, nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.SmallInteger, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in NUMERIC_FEATURES),
        *(sa.Column(name, sa.Text, nullable=True) for name in CATEGORICAL_FEATURES),
        sa.UniqueConstraint("build_id", "encounter_id", name=f"uq_clean_{split}_encounter"),
    )


SPLIT_TABLES: dict[str, sa.Table] = {split: _split_table(split) for split in SPLITS}

# The patient history through each encounter, at its encounter-order time (features.HISTORY_EPOCH):
# the feature store's source, replaced with every build like the split tables.
patient_history = sa.Table(
    "patient_history",
    metadata,
    sa.Column("build_id", sa.String(32), nullable=False),
    sa.Column("encounter_id", sa.BigInteger, primary_key=True),
    sa.Column("patient_nbr", sa.BigInteger, nullable=False, index=True),
    sa.Column("event_timestamp", sa.DateTime(timezone=True), nullable=False),
    *(sa.Column(name, sa.BigInteger, nullable=False) for name in HISTORY_FIELDS),
)

# One row per materialisation of the feature store, newest last: the API's history cache
# reloads when a newer one appears.
materialisations = sa.Table(
    "feature_store_materialisations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("build_id", sa.String(32), nullable=False),
    sa.Column("patients", sa.Integer, nullable=False),
    sa.Column("materialised_at", sa.DateTime(timezone=True), nullable=False),
)

clean_build = sa.Table(
    "clean_build",
    metadata,
    sa.Column("build_id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("raw_batches", sa.JSON, nullable=False),
    sa.Column("source_sha256", sa.JSON, nullable=False),
    sa.Column("rows", sa.JSON, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("transform", sa.JSON, nullable=False),
)


def open_clean_db(settings: Settings) -> Engine:
    """Connect to clean-db and create its tables if they are not there yet."""
    engine = make_engine(settings.resolved_clean_db_url, "clean-db")
    check_connection(engine, "clean-db")
    create_tables(engine, metadata, "clean-db")
    return engine


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


# --- writing ----------------------------------------------------------------------------------


def write_build(
    engine: Engine,
    splits: Mapping[str, pd.DataFrame],
    history: pd.DataFrame,
    record: dict[str, Any],
    report: Callable[[str], None],
) -> None:
    """Replace the clean tables with `splits` and the patient history with `history`, and add
    the clean_build row `record` (every column but `created_at`, stamped as the build is
    written), in one transaction. One build at a time runs on a clean-db: a second waits,
    saying so."""
    with (
        exclusive(engine, "clean-db", "clean", report),
        transaction(engine, "clean-db") as conn,
    ):
        for split, table in SPLIT_TABLES.items():
            # Recreated, not emptied: the columns follow the feature list of this version.
            table.drop(conn, checkfirst=True)
            table.create(conn)
            part = splits[split].assign(build_id=record["build_id"])
            bulk_insert(conn, table, part)
            report(f"wrote {len(part):,} rows to clean_{split}")
        patient_history.drop(conn, checkfirst=True)
        patient_history.create(conn)
        bulk_insert(conn, patient_history, history.assign(build_id=record["build_id"]))
        report(f"wrote {len(history):,} rows to patient_history")
        conn.execute(clean_build.insert().values(**record, created_at=datetime.now(UTC)))


# --- reading ----------------------------------------------------------------------------------


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
            names = ", ".join(t.name for t in (clean_build, *SPLIT_TABLES.values()))
            conn.execute(sa.text(f"LOCK TABLE {names} IN ACCESS SHARE MODE"))
        build = _latest_build(conn)
        frames = {s: _read_split(conn, s, build.build_id) for s in SPLIT_TABLES}
    return build, frames


def _latest_build(conn: Connection) -> CleanBuild:
    row = (
        conn.execute(sa.select(clean_build).order_by(clean_build.c.created_at.desc()).limit(1))
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


def _read_split(conn: Connection, split: str, build_id: str) -> pd.DataFrame:
    table = SPLIT_TABLES[split]
    query = sa.select(table).where(table.c.build_id == build_id).order_by(table.c.encounter_id)
    frame = pd.read_sql(query, conn)
    return frame.astype(object).where(frame.notna(), None).infer_objects()


def read_history(engine: Engine) -> pd.DataFrame:
    """The patient history table of the newest build, in encounter order."""
    with engine.connect() as conn:
        columns = [c for c in patient_history.c if c.name != "build_id"]
        frame = pd.read_sql(sa.select(*columns).order_by(patient_history.c.encounter_id), conn)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def record_materialisation(engine: Engine, build_id: str, patients: int) -> None:
    with transaction(engine, "clean-db") as conn:
        conn.execute(
            materialisations.insert().values(
                build_id=build_id, patients=patients, materialised_at=datetime.now(UTC)
            )
        )


def last_materialisation(engine: Engine) -> int | None:
    """The id of the newest materialisation; None before the first."""
    with engine.connect() as conn:
        newest: int | None = conn.execute(sa.select(sa.func.max(materialisations.c.id))).scalar()
    return newest


# --- counts -----------------------------------------------------------------------------------


def table_rows(engine: Engine) -> dict[str, int]:
    """Rows in each clean split table (all builds), by table name."""
    with engine.connect() as conn:
        return {t.name: count_rows(conn, t) for t in SPLIT_TABLES.values()}


def last_build_time(engine: Engine) -> datetime | None:
    """When the newest clean build was written; None before the first."""
    with engine.connect() as conn:
        built: datetime | None = conn.execute(
            sa.select(sa.func.max(clean_build.c.created_at))
        ).scalar_one()
    return built
