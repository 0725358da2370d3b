"""`readmit status` reads its counts through storage: batches, rows per table, the last build."""

from __future__ import annotations

import hashlib

from readmit.dataset import Dataset, order_by_encounter
from readmit.pipeline.clean import build_clean
from readmit.pipeline.ingest import ingest
from readmit.settings import Settings
from readmit.split import SPLITS
from readmit.status import collect_status
from tests.synthetic import synthetic_rows


def test_status_counts_the_rows_of_every_table_and_names_the_last_build(tmp_path):
    settings = Settings(data_dir=tmp_path, batch_size=800)
    empty = collect_status(settings)
    assert empty.batches == [] and empty.last_build is None
    assert set(empty.table_rows.values()) == {0} and len(empty.table_rows) == 7
    frame = order_by_encounter(synthetic_rows(1500, seed=4))
    frame.loc[7, "gender"] = "X"
    dataset = Dataset(frame, hashlib.sha256(b"status").hexdigest(), "synthetic")
    loaded = ingest(settings, all_batches=True, dataset=dataset)
    built = build_clean(settings)
    status = collect_status(settings)
    assert [(b["batch_id"], b["status"]) for b in status.batches] == [
        (1, "succeeded"),
        (2, "succeeded"),
    ]
    rows = status.table_rows
    assert rows["raw_rejected"] == 1
    assert sum(rows[f"raw_{s}"] for s in SPLITS) == loaded.rows_inserted == 1499
    assert {s: rows[f"clean_{s}"] for s in SPLITS} == built.rows
    assert status.last_build is not None and status.last_build["build_id"] == built.build_id
    assert status.last_build["raw_batches"] == [1, 2]
