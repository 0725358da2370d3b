"""The Feast feature store of patient history: applied and materialised on real PostgreSQL and
in embedded mode (file offline store, SQLite online store); point-in-time retrieval equals the
training frames; the API looks history up, says where it came from, and survives a store that
is down."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from readmit.dataset import Dataset, typed_rows
from readmit.errors import StorageError
from readmit.feature_store import repo
from readmit.feature_store.lookup import HistoryLookup
from readmit.pipeline.clean import build_clean
from readmit.pipeline.ingest import ingest
from readmit.pipeline.train import load_training_data
from readmit.schema import HISTORY_FIELDS
from readmit.serving.app import create_app
from readmit.settings import Settings
from readmit.storage.clean import open_clean_db, read_latest_build
from tests.models import MODEL_INPUTS, records

BATCH = 5_000


def _expected_through(raw: pd.DataFrame, patient: int) -> dict[str, int]:
    """The patient's history over every encounter in `raw`, counted here by hand."""
    rows = raw[raw["patient_nbr"] == patient]
    return {
        "prior_encounters": len(rows),
        "prior_readmissions_30d": int((rows["readmitted"] == "<30").sum()),
        "prior_readmissions_any": int((rows["readmitted"] != "NO").sum()),
        "prior_days_in_hospital": int(rows["time_in_hospital"].sum()),
    }


def _online(settings: Settings, patient: int) -> dict[str, int]:
    found = repo.open_store(settings).get_online_features(
        features=repo.FEATURES, entity_rows=[{repo.JOIN_KEY: patient}]
    )
    values = found.to_dict()
    return {name: int(values[name][0]) for name in HISTORY_FIELDS}


def _lookup(settings: Settings, patient: int) -> dict[str, int]:
    lookup = HistoryLookup(settings)
    assert lookup.refresh(), lookup.last_error
    record: dict = {"patient_nbr": patient}
    assert lookup.resolve([record]) == ["store"]
    return {name: record[name] for name in HISTORY_FIELDS}


def test_on_postgresql_a_patient_seen_in_two_batches_gets_both_after_the_second(
    full_dataset, pg_database_factory, tmp_path
):
    sample = full_dataset.frame.head(2 * BATCH)
    settings = Settings(
        data_dir=tmp_path,
        batch_size=BATCH,
        dataset_uri=full_dataset.source,
        raw_db_url=pg_database_factory(),
        clean_db_url=pg_database_factory(),
    )
    assert repo.on_postgres(settings)
    raw = typed_rows(sample).reset_index(drop=True)
    first, both = raw.head(BATCH), raw
    spread = set(first["patient_nbr"]) & set(raw.iloc[BATCH:]["patient_nbr"])
    patient = int(sorted(spread)[0])
    dataset = Dataset(sample, full_dataset.sha256, full_dataset.source)

    ingest(settings, all_batches=False, dataset=dataset)
    build_clean(settings)
    result = repo.materialize(settings)
    assert result.online_store.startswith("PostgreSQL")
    assert _online(settings, patient) == _expected_through(first, patient)
    assert _lookup(settings, patient) == _expected_through(first, patient)

    ingest(settings, all_batches=False, dataset=dataset)
    build_clean(settings)
    repo.materialize(settings)
    expected = _expected_through(both, patient)
    assert expected["prior_encounters"] > _expected_through(first, patient)["prior_encounters"]
    assert _online(settings, patient) == expected
    assert _lookup(settings, patient) == expected

    data = load_training_data(settings, store_history=True)
    assert data.history_source.endswith("offline store PostgreSQL (clean-db)")
    frame = pd.concat(data.frames.values())
    row = frame[frame["patient_nbr"] == patient].sort_values("encounter_id").iloc[-1]
    last = raw[(raw["patient_nbr"] == patient) & (raw["encounter_id"] < row["encounter_id"])]
    assert {k: int(row[k]) for k in HISTORY_FIELDS} == _expected_through(last, patient)


@pytest.fixture(scope="module")
def materialised(small_build) -> Settings:
    """The session's small embedded build (SQLite clean-db), materialised: file offline store,
    SQLite online store."""
    repo.materialize(small_build.settings)
    return small_build.settings


@pytest.fixture(scope="module")
def test_split(materialised) -> pd.DataFrame:
    engine = open_clean_db(materialised)
    try:
        _, frames = read_latest_build(engine)
    finally:
        engine.dispose()
    return frames["test"]


def test_point_in_time_history_equals_the_training_frame_and_never_the_encounter_itself(
    materialised, test_split
):
    """For every test encounter: the offline store's point-in-time retrieval and the API's
    lookup replaying it give the training frame's history, which counts earlier encounters
    only (the unit tests pin that down on known values)."""
    assert len(test_split) > 2000 and (test_split["prior_encounters"] > 0).sum() > 300
    expected = test_split[list(HISTORY_FIELDS)].to_numpy()
    retrieved = repo.historical_history(materialised, test_split)
    assert retrieved["encounter_id"].tolist() == test_split["encounter_id"].tolist()
    assert (retrieved[list(HISTORY_FIELDS)].to_numpy() == expected).all()

    lookup = HistoryLookup(materialised)
    assert lookup.refresh(), lookup.last_error
    replayed = test_split[["patient_nbr", "encounter_id"]].to_dict("records")
    sources = lookup.resolve(replayed)
    assert set(sources) == {"store"}
    assert (pd.DataFrame(replayed)[list(HISTORY_FIELDS)].to_numpy() == expected).all()
    # Off by one the other way (the encounter's own row) would differ wherever it counts.
    assert lookup.snapshot is not None
    repeat = test_split[test_split["prior_encounters"] > 0].iloc[0]
    ids, values = lookup.snapshot.patients[int(repeat["patient_nbr"])]
    own = values[ids.index(int(repeat["encounter_id"]))]
    assert own[0] == repeat["prior_encounters"] + 1


def test_training_reads_history_from_the_store_and_refuses_a_store_that_differs(
    small_build, tmp_path
):
    """Training's history features come from Feast's point-in-time retrieval: a store whose
    rows no longer match the clean build stops training with an error naming the split."""
    for name in ("raw.db", "clean.db"):
        shutil.copy(small_build.settings.data_dir / name, tmp_path / name)
    settings = small_build.settings.model_copy(update={"data_dir": tmp_path})
    data = load_training_data(settings, store_history=True)
    assert data.history_source == (
        f"feast readmit/patient_history point-in-time, offline store {repo.offline_file(settings)}"
    )
    train = data.frames["train"]
    returning = train[train["prior_encounters"] > 0].iloc[0]
    earlier = train[
        (train["patient_nbr"] == returning["patient_nbr"])
        & (train["encounter_id"] < returning["encounter_id"])
    ]["encounter_id"].max()
    engine = open_clean_db(settings)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE patient_history SET prior_encounters = prior_encounters + 1 "
                    "WHERE encounter_id = :e"
                ),
                {"e": int(earlier)},
            )
    finally:
        engine.dispose()
    with pytest.raises(StorageError, match=r"history of 1 of [\d,]+ train encounters differs"):
        load_training_data(settings, store_history=True)


def test_the_api_looks_history_up_and_says_where_it_came_from(
    registered, materialised, small_data, lightgbm_model
):
    settings = registered.model_copy(
        update={"clean_db_url": materialised.resolved_clean_db_url, "history_poll_seconds": 3600}
    )
    inputs = small_data.test_inputs
    returning = inputs[inputs["prior_encounters"] > 0].head(200)
    payloads = records(returning[["encounter_id", "patient_nbr", *MODEL_INPUTS]])
    bare = [{k: v for k, v in p.items() if k not in HISTORY_FIELDS} for p in payloads]
    offline = lightgbm_model.predict_frame(returning[MODEL_INPUTS])
    app = create_app(settings)
    with TestClient(app) as client:
        assert app.state.history.refresh()
        one = client.post("/predict", json=bare[0]).json()
        assert one["history"] == "store"
        assert one["history_used"] == {k: payloads[0][k] for k in HISTORY_FIELDS}
        assert one["probability"] == pytest.approx(offline[0], abs=1e-9)

        sent = client.post("/predict", json={**bare[0], "prior_encounters": 0}).json()
        assert sent["history"] == "request" and sent["history_used"]["prior_encounters"] == 0

        unknown = {**bare[0], "patient_nbr": 1, "encounter_id": None}
        new = client.post("/predict", json=unknown).json()
        assert new["history"] == "new_patient" and set(new["history_used"].values()) == {0}

        batch = client.post("/predict-batch", json={"records": bare}).json()
        assert {r["history"] for r in batch["results"]} == {"store"}
        served = [r["probability"] for r in batch["results"]]
        assert served == pytest.approx(list(offline), abs=1e-9)
        metrics = client.get("/metrics")
        assert metrics.status_code == 200, metrics.text
        assert 'readmit_history_lookups_total{source="store"} 201.0' in metrics.text, (
            metrics.headers
        )


def test_a_store_that_is_down_gives_unavailable_history_never_an_error(registered, small_data):
    down = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere?connect_timeout=2"
    settings = registered.model_copy(update={"clean_db_url": down, "history_poll_seconds": 3600})
    payload = records(small_data.test_inputs[["patient_nbr", *MODEL_INPUTS]].head(2))
    bare = [{k: v for k, v in p.items() if k not in HISTORY_FIELDS} for p in payload]
    app = create_app(settings)
    with TestClient(app) as client:
        assert not app.state.history.refresh()
        answer = client.post("/predict", json=bare[0])
        assert answer.status_code == 200 and answer.json()["history"] == "unavailable"
        batch = client.post("/predict-batch", json={"records": bare}).json()
        assert [r["history"] for r in batch["results"]] == ["unavailable", "unavailable"]
        metrics = client.get("/metrics").text
        assert 'readmit_history_lookups_total{source="unavailable"} 3.0' in metrics
