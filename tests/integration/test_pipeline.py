"""Ingest 8 times, then clean, on SQLite and on a real PostgreSQL, and check every count."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from readmit.dataset import Dataset
from readmit.features import DROPPED_DISPOSITIONS, FittedTransform
from readmit.pipeline.clean import CleanResult, build_clean
from readmit.pipeline.ingest import IngestResult, ingest
from readmit.settings import Settings
from readmit.split import SPLITS
from readmit.storage.clean import latest_build, read_clean_split
from tests.databases import create_database, drop_database

ROWS = 101_766


@dataclass
class Loaded:
    settings: Settings
    runs: list[IngestResult]
    clean: CleanResult

    def raw(self) -> sa.Engine:
        return sa.create_engine(self.settings.resolved_raw_db_url)

    def cleandb(self) -> sa.Engine:
        return sa.create_engine(self.settings.resolved_clean_db_url)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def loaded(request, full_dataset: Dataset, tmp_path_factory) -> Iterator[Loaded]:
    data_dir = tmp_path_factory.mktemp(request.param)
    urls: dict[str, str] = {}
    if request.param == "postgres":
        admin = request.getfixturevalue("pg_admin_url")
        urls = {"raw_db_url": create_database(admin), "clean_db_url": create_database(admin)}
    settings = Settings(data_dir=data_dir, dataset_uri=full_dataset.source, **urls)
    runs = [ingest(settings, dataset=full_dataset) for _ in range(8)]
    clean = build_clean(settings)
    yield Loaded(settings, runs, clean)
    for url in urls.values():
        drop_database(admin, url)


def _scalar(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def test_eight_runs_load_seven_batches_then_a_noop(loaded: Loaded):
    assert [[b.batch_id for b in run.batches] for run in loaded.runs] == [
        [1],
        [2],
        [3],
        [4],
        [5],
        [6],
        [7],
        [],
    ]
    assert [run.pending_after for run in loaded.runs[:7]] == [6, 5, 4, 3, 2, 1, 0]
    reads = [run.batches[0].rows_read for run in loaded.runs[:7]]
    assert reads == [15_000] * 6 + [11_766]
    assert sum(run.rows_inserted for run in loaded.runs) == ROWS


def test_exact_row_counts_and_no_duplicates(loaded: Loaded):
    engine = loaded.raw()
    for split in SPLITS:
        in_table = _scalar(engine, f"SELECT count(*) FROM raw_{split}")
        recorded = _scalar(engine, f"SELECT sum(rows_{split}) FROM batch_metadata")
        assert in_table == recorded > 0
    union = " UNION ALL ".join(f"SELECT row_hash FROM raw_{s}" for s in SPLITS)
    assert _scalar(engine, f"SELECT count(*) FROM ({union}) u") == ROWS
    assert _scalar(engine, f"SELECT count(DISTINCT row_hash) FROM ({union}) u") == ROWS
    assert _scalar(engine, "SELECT count(*) FROM raw_rejected") == 0
    assert _scalar(engine, "SELECT count(*) FROM batch_metadata WHERE status = 'succeeded'") == 7


def test_no_patient_is_in_two_splits(loaded: Loaded):
    union = " UNION ALL ".join(f"SELECT DISTINCT patient_nbr FROM raw_{s}" for s in SPLITS)
    sql = f"SELECT count(*) FROM (SELECT patient_nbr FROM ({union}) u GROUP BY patient_nbr HAVING count(*) > 1) d"
    assert _scalar(loaded.raw(), sql) == 0
    assert _scalar(loaded.raw(), f"SELECT count(DISTINCT patient_nbr) FROM ({union}) u") == 71_518


def test_reloading_a_batch_skips_every_row_as_duplicate(loaded: Loaded):
    engine = loaded.raw()
    select = sa.text("SELECT * FROM batch_metadata WHERE batch_id = 2")
    with engine.connect() as conn:
        record = dict(conn.execute(select).mappings().one())
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE batch_metadata SET status = 'failed' WHERE batch_id = 2"))
    try:
        result = ingest(loaded.settings, all_batches=True)
        assert [b.batch_id for b in result.batches] == [2]
        assert result.batches[0].duplicates == 15_000 and result.rows_inserted == 0
        union = " UNION ALL ".join(f"SELECT row_hash FROM raw_{s}" for s in SPLITS)
        assert _scalar(engine, f"SELECT count(*) FROM ({union}) u") == ROWS
        assert ingest(loaded.settings, all_batches=True).batches == []
    finally:
        # The re-run recorded batch 2 as 0 inserted: the batch's own record goes back, so the
        # other tests of the shared load see the load as it was, in any order.
        columns = [c for c in record if c != "batch_id"]
        assignments = ", ".join(f"{c} = :{c}" for c in columns)
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE batch_metadata SET {assignments} WHERE batch_id = :batch_id"),
                record,
            )


def test_clean_tables_hold_every_kept_encounter(loaded: Loaded):
    dropped = ",".join(DROPPED_DISPOSITIONS)
    union = " UNION ALL ".join(f"SELECT discharge_disposition_id FROM raw_{s}" for s in SPLITS)
    expected_dropped = _scalar(
        loaded.raw(),
        f"SELECT count(*) FROM ({union}) u WHERE discharge_disposition_id IN ({dropped})",
    )
    assert loaded.clean.dropped == expected_dropped > 0
    engine = loaded.cleandb()
    for split in SPLITS:
        assert _scalar(engine, f"SELECT count(*) FROM clean_{split}") == loaded.clean.rows[split]
    assert sum(loaded.clean.rows.values()) + expected_dropped == ROWS
    label_rate = _scalar(engine, "SELECT sum(label) FROM clean_train") / loaded.clean.rows["train"]
    assert 0.09 < label_rate < 0.13


def test_transform_statistics_come_from_clean_train_only(loaded: Loaded):
    engine = loaded.cleandb()
    build = latest_build(engine)
    transform = build.transform
    train = read_clean_split(engine, "train", build.build_id)
    everything = pd.concat([read_clean_split(engine, s, build.build_id) for s in SPLITS])
    assert transform.fitted_rows == len(train)
    differs_from_all = False
    for i, name in enumerate(transform.numeric):
        assert transform.means[i] == pytest.approx(train[name].astype(float).mean(), rel=1e-9)
        differs_from_all |= transform.means[i] != pytest.approx(
            everything[name].astype(float).mean(), rel=1e-9
        )
    assert differs_from_all
    for name, vocabulary in transform.vocabularies.items():
        counts = train[name].fillna("__missing__").value_counts()
        assert all(counts.get(token, 0) >= transform.min_count for token in vocabulary), name


def test_real_rows_encode_the_same_alone_and_in_bulk(loaded: Loaded):
    engine = loaded.cleandb()
    build = latest_build(engine)
    test_rows = read_clean_split(engine, "test", build.build_id).head(3000)
    restored = FittedTransform.from_dict(build.transform.to_dict())
    bulk = restored.transform_frame(test_rows)
    for i, record in enumerate(test_rows.to_dict("records")):
        np.testing.assert_array_equal(restored.transform_record(record), bulk[i])


def test_a_new_clean_build_replaces_the_previous_one_whole(loaded: Loaded):
    first = loaded.clean.build_id
    second = build_clean(loaded.settings)
    assert second.build_id != first and second.rows == loaded.clean.rows
    engine = loaded.cleandb()
    for split in SPLITS:
        assert _scalar(engine, f"SELECT count(DISTINCT build_id) FROM clean_{split}") == 1
        assert (
            _scalar(
                engine, f"SELECT count(*) FROM clean_{split} WHERE build_id = '{second.build_id}'"
            )
            == second.rows[split]
        )
    assert _scalar(engine, "SELECT count(*) FROM clean_build") == 2
    assert latest_build(engine).build_id == second.build_id
