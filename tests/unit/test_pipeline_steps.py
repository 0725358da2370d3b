"""The pure parts of ingest and clean: what a batch and a build hold before anything is written."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from readmit.dataset import Dataset, order_by_encounter, typed_rows
from readmit.errors import StorageError
from readmit.features import DROPPED_DISPOSITIONS, FittedTransform
from readmit.pipeline.clean import MIN_CATEGORY_COUNT, build_record, clean_splits
from readmit.pipeline.ingest import check_batches, prepare_batch, row_hashes
from readmit.settings import Settings
from readmit.split import SPLITS, assign_splits
from tests.synthetic import synthetic_rows

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _dataset(n: int = 2500) -> Dataset:
    frame = order_by_encounter(synthetic_rows(n, seed=5))
    frame.loc[3, "gender"] = "X"
    frame.loc[1500, "time_in_hospital"] = "abc"
    return Dataset(frame=frame, sha256=hashlib.sha256(b"steps").hexdigest(), source="synthetic")


def test_a_prepared_batch_holds_its_rows_split_by_patient_and_its_rejects_with_reasons():
    dataset, settings = _dataset(), Settings(batch_size=1000)
    batch = prepare_batch(dataset, 2, settings, STARTED)
    chunk = dataset.frame.iloc[1000:2000]
    assert batch.record["row_start"] == 1000 and batch.record["row_end"] == 2000
    assert batch.record["first_encounter_id"] == str(chunk["encounter_id"].iloc[0])
    assert batch.record["rows_read"] == 1000 and batch.record["rows_rejected"] == 1
    assert batch.rejected[["source_row", "field"]].values.tolist() == [[1500, "time_in_hospital"]]
    assert json.loads(batch.rejected["raw_values"].iloc[0])["time_in_hospital"] == "abc"
    assert batch.valid == 999
    for split, part in batch.rows.items():
        assert set(assign_splits(part["patient_nbr"], settings.split_salt)) <= {split}
        assert (part["batch_id"] == 2).all() and (part["ingested_at"] == STARTED).all()
    hashes = pd.concat(batch.rows.values())["row_hash"]
    assert set(hashes) == set(row_hashes(chunk.drop(index=1500)))


def test_the_last_batch_is_short_and_an_unreadable_row_is_rejected_as_a_row():
    dataset = dataclasses.replace(
        _dataset(), problems=pd.Series({2100: "expected 50 fields, saw 49"})
    )
    batch = prepare_batch(dataset, 3, Settings(batch_size=1000), STARTED)
    assert (batch.record["row_start"], batch.record["row_end"]) == (2000, 2500)
    assert batch.rejected[["source_row", "field", "reason"]].values.tolist() == [
        [2100, "row", "expected 50 fields, saw 49"]
    ]
    assert batch.valid == 499


def _done(dataset: Dataset, settings: Settings, **changes: object) -> list[dict[str, object]]:
    record = prepare_batch(dataset, 1, settings, STARTED).record
    return [{**record, **changes}]


def test_loaded_batches_must_share_the_source_the_salt_and_the_batch_size():
    dataset, settings = _dataset(), Settings(batch_size=1000)
    assert check_batches(_done(dataset, settings), dataset, settings) == {1}
    with pytest.raises(StorageError, match="came from a source with checksum"):
        check_batches(_done(dataset, settings, source_sha256="0" * 64), dataset, settings)
    with pytest.raises(StorageError, match="which batch size 1000 does not give"):
        check_batches(_done(dataset, settings, row_end=900), dataset, settings)
    with pytest.raises(StorageError, match="another READMIT_SPLIT_SALT"):
        check_batches(_done(dataset, settings, split_salt="other"), dataset, settings)


def _raw_rows(n: int = 3000) -> pd.DataFrame:
    """Raw rows as raw-db holds them: typed, hashed, each with its split."""
    frame = order_by_encounter(synthetic_rows(n, seed=9, patients=n // 3))
    frame.loc[frame.index[::25], "discharge_disposition_id"] = "11"  # died: dropped
    rows = typed_rows(frame)
    rows["row_hash"] = row_hashes(frame)
    rows["split"] = assign_splits(rows["patient_nbr"], "salt")
    return rows


def test_clean_splits_keep_each_row_in_its_raw_split_and_drop_deaths_after_counting_them():
    raw_rows = _raw_rows()
    splits = clean_splits(raw_rows)
    assert list(splits) == list(SPLITS)
    split_of = dict(zip(raw_rows["row_hash"], raw_rows["split"], strict=True))
    for split, part in splits.items():
        assert not part.empty and {split_of[h] for h in part["row_hash"]} == {split}
    dropped = raw_rows["discharge_disposition_id"].astype(str).isin(DROPPED_DISPOSITIONS)
    kept = pd.concat(splits.values())
    assert set(kept["row_hash"]) == set(raw_rows.loc[~dropped, "row_hash"])
    # A patient's dropped encounter still counts as history for their later ones.
    history = dict(zip(kept["row_hash"], kept["prior_encounters"], strict=True))
    earlier = raw_rows.groupby("patient_nbr").cumcount()
    expected = dict(zip(raw_rows["row_hash"], earlier, strict=True))
    assert history == {h: expected[h] for h in history}
    assert any(n > 0 for n in history.values())


def test_a_build_record_counts_the_rows_of_each_split_and_carries_the_transform():
    splits = clean_splits(_raw_rows())
    transform = FittedTransform.fit(splits["train"], min_count=MIN_CATEGORY_COUNT)
    settings = Settings(split_salt="salt")
    record = build_record("b1", [1, 2], ["abc"], splits, transform, settings)
    assert record["rows"] == {s: len(splits[s]) for s in SPLITS}
    assert record["raw_batches"] == [1, 2] and record["source_sha256"] == ["abc"]
    assert record["params"]["split_salt"] == "salt"
    assert record["params"]["min_category_count"] == MIN_CATEGORY_COUNT
    assert FittedTransform.from_dict(record["transform"]).width == transform.width
