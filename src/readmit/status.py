"""What is in raw-db and clean-db right now: batches, rows per table, the last clean build."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from readmit.errors import StorageError
from readmit.pipeline.clean import latest_build, open_clean_db
from readmit.pipeline.ingest import open_raw_db
from readmit.settings import Settings
from readmit.storage import clean, raw


@dataclass
class Status:
    batches: list[dict[str, Any]] = field(default_factory=list)
    table_rows: dict[str, int] = field(default_factory=dict)
    last_build: dict[str, Any] | None = None


def _count(conn: sa.Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def collect_status(settings: Settings) -> Status:
    """Read both databases (creating empty tables if they are new)."""
    status = Status()
    engine = open_raw_db(settings)
    try:
        with engine.connect() as conn:
            query = sa.select(raw.batch_metadata).order_by(raw.batch_metadata.c.batch_id)
            status.batches = [dict(r) for r in conn.execute(query).mappings()]
            for table in [*raw.SPLIT_TABLES.values(), raw.rejected]:
                status.table_rows[table.name] = _count(conn, table)
    finally:
        engine.dispose()
    engine = open_clean_db(settings)
    try:
        with engine.connect() as conn:
            for table in clean.SPLIT_TABLES.values():
                status.table_rows[table.name] = _count(conn, table)
        try:
            build = latest_build(engine)
            status.last_build = {
                "build_id": build.build_id,
                "created_at": build.created_at,
                "raw_batches": build.raw_batches,
                "rows": build.rows,
                "features": build.transform.width,
            }
        except StorageError:
            status.last_build = None
    finally:
        engine.dispose()
    return status
