"""Rows/s loading the whole UCI file into PostgreSQL: readmit's ingest against pandas.to_sql.

Usage: READMIT_DATASET_URI=<zip> python bench/ingest.py
READMIT_BENCH_PG_URL names the server (default: postgres on 127.0.0.1:5432).
Each path loads into a fresh database, created and dropped here.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from readmit.dataset import load_dataset, typed_rows
from readmit.pipeline.ingest import ingest, row_hashes
from readmit.settings import Settings


def _database(admin: str, action: str, name: str) -> None:
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            sa.text(f'{action} DATABASE "{name}"' + (" WITH (FORCE)" if action == "DROP" else ""))
        )
    engine.dispose()


def main() -> int:
    admin = os.environ.get(
        "READMIT_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    settings = Settings(data_dir=Path(tempfile.mkdtemp()))
    clock = time.perf_counter()
    dataset = load_dataset(settings, show_progress=False)
    rows = len(dataset.frame)
    print(f"read and verified {rows:,} rows in {time.perf_counter() - clock:.2f} s")

    name = f"readmit_bench_{secrets.token_hex(3)}"
    _database(admin, "CREATE", name)
    try:
        url = sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False)
        run = settings.model_copy(update={"raw_db_url": url})
        clock = time.perf_counter()
        result = ingest(run, all_batches=True, dataset=dataset)
        ours = time.perf_counter() - clock
        assert result.rows_inserted == rows, result.rows_inserted

        frame = typed_rows(dataset.frame)
        frame["row_hash"] = row_hashes(dataset.frame)
        engine = sa.create_engine(url)
        clock = time.perf_counter()
        frame.to_sql("raw_naive", engine, if_exists="append", index=False)
        naive = time.perf_counter() - clock
        engine.dispose()
    finally:
        _database(admin, "DROP", name)

    for label, seconds in (
        ("readmit ingest (validate, hash, split, COPY, 7 batches)", ours),
        ("pandas.DataFrame.to_sql baseline (insert only)", naive),
    ):
        print(f"{label:<58} {seconds:6.2f} s {rows / seconds:10,.0f} rows/s")
    print(f"ratio: {naive / ours:.1f}x the baseline's rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
