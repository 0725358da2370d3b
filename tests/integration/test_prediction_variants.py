"""The prediction log's `variant` on PostgreSQL and SQLite: a monitor-db made before the column
existed gets it (its rows as the champion's), and the labelled rows are read back per variant
and model version, as a champion-challenger comparison reads them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from readmit.monitoring.prediction_log import Scored
from readmit.storage import monitor
from readmit.storage.monitor import Variant

KEY = b"variant-test-key"
FEATURES = {"age": "[70-80)", "prior_encounters": 0}


def _legacy_predictions(engine: sa.Engine) -> None:
    """The predictions table as the release before variants created it, with one row."""
    old = sa.MetaData()
    columns = [
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in monitor.predictions.columns
        if c.name != "variant"
    ]
    table = sa.Table("predictions", old, *columns)
    old.create_all(engine)
    row = _scored(["1"], [0.3], Variant.CHAMPION, at=datetime.now(UTC)).rows(KEY)[0]
    row.pop("variant")
    with engine.begin() as conn:
        conn.execute(table.insert(), [row])


def _scored(
    versions: list[str], probabilities: list[float], variant: str, at: datetime, first: int = 0
) -> Scored:
    """Encounters first, first+1, ... each scored by one version (one Scored per version run)."""
    assert len(set(versions)) == 1
    return Scored(
        batch_id=uuid.uuid4().hex,
        scored_at=at,
        request_id=uuid.uuid4().hex,
        model_name="readmission",
        model_version=versions[0],
        model_alias="production" if variant == Variant.CHAMPION else "challenger",
        threshold=0.12,
        records=[
            {**FEATURES, "encounter_id": 900_000 + first + i, "patient_nbr": 77 + first + i}
            for i in range(len(probabilities))
        ],
        probabilities=probabilities,
        variant=variant,
    )


def _insert(engine: sa.Engine, *scored: Scored) -> None:
    for item in scored:  # one transaction each, as the log writer's flushes
        with engine.begin() as conn:
            monitor.insert_predictions(conn, item.rows(KEY))


def test_an_older_monitor_db_gets_the_variant_column_its_rows_the_champions(monitor_url):
    engine = sa.create_engine(monitor_url)
    try:
        _legacy_predictions(engine)
        monitor.ensure_tables(engine)
        monitor.ensure_tables(engine)  # a second start finds nothing to add
        now = datetime.now(UTC)
        _insert(engine, _scored(["2"], [0.4], Variant.SHADOW, at=now, first=1))
        logged = monitor.read_window(engine)
    finally:
        engine.dispose()
    assert logged["variant"].tolist() == ["champion", "shadow"]
    assert logged["model_version"].tolist() == ["1", "2"]


def test_labelled_rows_are_read_per_variant_and_version_within_a_window(monitor_url):
    engine = sa.create_engine(monitor_url)
    start = datetime.now(UTC) - timedelta(hours=1)
    late = start + timedelta(minutes=30)
    champion = _scored(["3"], [0.1, 0.2, 0.3, 0.4], Variant.CHAMPION, at=start)
    shadow = _scored(["4"], [0.15, 0.25, 0.35, 0.45], Variant.SHADOW, at=start)
    canary = _scored(["4"], [0.5, 0.6], Variant.CHALLENGER, at=late, first=10)
    outcomes = [(900_000, "<30"), (900_001, "NO"), (900_002, ">30"), (900_010, "<30")]
    try:
        monitor.ensure_tables(engine)
        _insert(engine, champion, shadow, canary)
        with engine.begin() as conn:
            monitor.upsert_outcomes(conn, outcomes, datetime.now(UTC))
        everything = monitor.read_labelled(engine)
        early = monitor.read_labelled(engine, until=late)
        arms = monitor.read_labelled(engine, since=late, variants=[Variant.CHALLENGER])
    finally:
        engine.dispose()

    labels = dict(outcomes)
    expected = {
        (item.variant, item.model_version): sorted(
            (r["encounter_id"], p, int(labels[r["encounter_id"]] == "<30"))
            for r, p in zip(item.records, item.probabilities, strict=True)
            if r["encounter_id"] in labels
        )
        for item in (champion, shadow, canary)
    }
    found = {
        key: sorted(zip(g["encounter_id"], g["probability"], g["label"], strict=True))
        for key, g in everything.groupby(["variant", "model_version"])
    }
    assert found == expected
    assert set(early["variant"]) == {"champion", "shadow"} and len(early) == 6
    assert arms["encounter_id"].tolist() == [900_010] and arms["label"].tolist() == [1]
    assert everything["patient_key"].notna().all()
