"""A batch lands whole or not at all; bad rows are kept with their reason, never lost."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

import readmit.storage.raw as raw_storage
from readmit.dataset import Dataset, order_by_encounter
from readmit.errors import StorageError
from readmit.pipeline.ingest import ingest
from readmit.settings import Settings
from readmit.split import SPLITS
from tests.synthetic import synthetic_rows


def _dataset(n: int = 3000) -> Dataset:
    frame = order_by_encounter(synthetic_rows(n, seed=11))
    frame.loc[10, "gender"] = "X"
    frame.loc[2500, "time_in_hospital"] = "abc"
    return Dataset(frame=frame, sha256=hashlib.sha256(b"synthetic").hexdigest(), source="synthetic")


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request, tmp_path) -> Settings:
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path, batch_size=1000)
    create = request.getfixturevalue("pg_database_factory")
    return Settings(data_dir=tmp_path, batch_size=1000, raw_db_url=create())


def _counts(settings: Settings, batch_id: int | None = None) -> int:
    engine = sa.create_engine(settings.resolved_raw_db_url)
    where = f" WHERE batch_id = {batch_id}" if batch_id else ""
    with engine.connect() as conn:
        total = sum(
            conn.execute(sa.text(f"SELECT count(*) FROM raw_{s}{where}")).scalar_one()
            for s in SPLITS
        )
    engine.dispose()
    return int(total)


def test_a_batch_that_fails_midway_leaves_no_rows_and_the_next_run_completes_it(
    settings, monkeypatch
):
    dataset = _dataset()
    ingest(settings, dataset=dataset)
    real_insert = raw_storage.bulk_insert

    def failing_insert(conn, table, frame):
        if table.name == "raw_test":
            raise RuntimeError("disk full (simulated)")
        return real_insert(conn, table, frame)

    monkeypatch.setattr(raw_storage, "bulk_insert", failing_insert)
    with pytest.raises(StorageError, match="batch 2 failed and was rolled back: disk full"):
        ingest(settings, dataset=dataset)
    assert _counts(settings, batch_id=2) == 0
    engine = sa.create_engine(settings.resolved_raw_db_url)
    with engine.connect() as conn:
        status, error = conn.execute(
            sa.text("SELECT status, error FROM batch_metadata WHERE batch_id = 2")
        ).one()
    assert status == "failed" and "disk full" in error
    monkeypatch.setattr(raw_storage, "bulk_insert", real_insert)
    retry = ingest(settings, dataset=dataset)
    assert [b.batch_id for b in retry.batches] == [2]
    ingest(settings, all_batches=True, dataset=dataset)
    assert _counts(settings) == 3000 - 2


def test_rejected_rows_are_kept_with_field_and_reason_once(settings):
    dataset = _dataset()
    first = ingest(settings, all_batches=True, dataset=dataset)
    assert [b.rejected for b in first.batches] == [1, 0, 1]
    engine = sa.create_engine(settings.resolved_raw_db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE batch_metadata SET status = 'failed'"))
    again = ingest(settings, all_batches=True, dataset=dataset)
    assert sum(b.duplicates for b in again.batches) == 3000 - 2
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT field, reason FROM raw_rejected ORDER BY source_row")
        ).all()
    assert [r.field for r in rows] == ["gender", "time_in_hospital"]
    assert "'X' is not one of" in rows[0].reason and "not a non-negative integer" in rows[1].reason
    assert _counts(settings) == 3000 - 2


def _csv_with_bad_cells(tmp_path) -> Path:
    """200 good rows and, after them, one row per kind of bad cell or unreadable row."""
    frame = synthetic_rows(200, seed=5)
    good = frame.iloc[0].to_dict()

    def row(encounter: int, **cells: str) -> list[str]:
        return list({**good, "encounter_id": str(encounter), **cells}.values())

    bad = [
        row(90001, time_in_hospital="\u00b2"),  # superscript two: isdigit() but not int()
        row(90002, time_in_hospital="\u0667"),  # Arabic-Indic seven: int() reads 7
        row(90003, diag_1="\uff14\uff12\uff18"),  # full-width 428
        row(90004, diag_1="428\n"),  # a trailing newline (quoted in the file)
        row(90005, payer_code="MC\n"),
        row(90006, medical_specialty="Nul\x00Byte"),
        [*row(90007), "extra"],  # 51 fields
        row(90008, payer_code="M\udce9"),  # a Latin-1 byte, not UTF-8
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(frame.columns)
    writer.writerows(frame.itertuples(index=False))
    writer.writerows(bad)
    path = tmp_path / "diabetic_data.csv"
    path.write_bytes(buffer.getvalue().encode("utf-8", errors="surrogateescape"))
    return path


def test_bad_cells_and_unreadable_rows_are_rejected_and_the_batch_lands(settings, tmp_path):
    path = _csv_with_bad_cells(tmp_path)
    run = settings.model_copy(
        update={"dataset_uri": str(path), "verify_checksum": False, "batch_size": 10_000}
    )
    result = ingest(run)
    assert [(b.batch_id, b.rows_read, b.rejected) for b in result.batches] == [(1, 208, 8)]
    assert _counts(run) == 200
    engine = sa.create_engine(run.resolved_raw_db_url)
    with engine.connect() as conn:
        rejected = {
            json.loads(r.raw_values)["encounter_id"]: (r.field, r.reason)
            for r in conn.execute(sa.text("SELECT raw_values, field, reason FROM raw_rejected"))
        }
        status = conn.execute(sa.text("SELECT status FROM batch_metadata")).scalars().all()
    engine.dispose()
    assert status == ["succeeded"]
    assert rejected == {
        "90001": ("time_in_hospital", "'\u00b2' is not a non-negative integer (ASCII digits)"),
        "90002": ("time_in_hospital", "'\u0667' is not a non-negative integer (ASCII digits)"),
        "90003": ("diag_1", "'\uff14\uff12\uff18' is not an ICD-9 code"),
        "90004": ("diag_1", "'428\\n' contains a control character"),
        "90005": ("payer_code", "'MC\\n' contains a control character"),
        "90006": ("medical_specialty", "'Nul\\x00Byte' contains a control character"),
        "90007": ("row", "row has 51 fields, expected 50"),
        "90008": ("row", "field 11 has byte 0xe9, not UTF-8"),
    }
