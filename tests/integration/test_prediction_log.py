"""The prediction log through the real API (a small real model in MLflow), on PostgreSQL and
SQLite: every scored record becomes one row with exact fields, the patient only as a keyed
pseudonym, rows survive a monitor-db that is down (spilled, then replayed without
duplicates), and rows beyond the bound are dropped and counted."""

from __future__ import annotations

import re
import secrets
import stat
import struct
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from readmit.monitoring.prediction_log import logged_fields
from readmit.monitoring.pseudonym import pseudonym
from readmit.serving.schemas import EXAMPLE, Encounter
from readmit.storage import monitor
from tests.monitoring import KEY, PATIENT, api_settings, metric, serving, wait_until, window


def test_every_scored_record_is_logged_with_exact_fields(
    registered, payloads, monitor_url, tmp_path
):
    settings = api_settings(registered, tmp_path, monitor_url)
    batch = [*payloads[1:6], {**payloads[6], "num_medications": -1}, payloads[7]]
    start = datetime.now(UTC)
    with serving(settings) as client:
        single = client.post("/predict", json=payloads[0], headers={"X-Request-ID": "one"})
        many = client.post(
            "/predict-batch", json={"records": batch}, headers={"X-Request-ID": "many"}
        )
        without_ids = client.post(
            "/predict", json=EXAMPLE | {"encounter_id": None, "patient_nbr": None}
        )
    end = datetime.now(UTC)
    assert single.status_code == many.status_code == without_ids.status_code == 200
    rows = {r["request_id"]: [] for r in window(monitor_url)}
    for row in window(monitor_url):
        rows[row["request_id"]].append(row)
    assert sorted(len(v) for v in rows.values()) == [1, 1, 6]  # the bad record is not logged

    scored = [(payloads[0], single.json()["probability"], rows["one"][0])]
    results = [r for r in many.json()["results"] if r["error"] is None]
    by_encounter = {r["encounter_id"]: r for r in rows["many"]}
    valid = [r for r in batch if r["num_medications"] >= 0]
    scored += [
        (p, r["probability"], by_encounter[p["encounter_id"]])
        for p, r in zip(valid, results, strict=True)
    ]
    for payload, probability, row in scored:
        assert row["probability"] == probability
        assert row["readmitted_30d"] == (probability >= 0.12) and row["threshold"] == 0.12
        assert (row["model_name"], row["model_version"], row["model_alias"]) == (
            "readmission",
            "1",
            "production",
        )
        assert row["encounter_id"] == payload["encounter_id"]
        assert row["patient_key"] == pseudonym(KEY.encode(), payload["patient_nbr"])
        assert start <= row["scored_at"] <= end
        fields = {k: row[k] for k in logged_fields(payload)}
        expected = Encounter.model_validate(payload).model_dump(
            exclude={"encounter_id", "patient_nbr", "readmitted"}
        )
        assert fields == expected
    anonymous = rows[without_ids.json()["request_id"]][0]
    assert anonymous["encounter_id"] is None and anonymous["patient_key"] is None


def test_the_same_record_logs_the_same_fields_from_predict_and_predict_batch(
    registered, payloads, tmp_path
):
    url = f"sqlite:///{tmp_path}/monitor.db"
    record = {**payloads[3], "weight": "?", "prior_encounters": 2}
    with serving(api_settings(registered, tmp_path, url)) as client:
        client.post("/predict", json=record)
        client.post("/predict-batch", json={"records": [record]})
    first, second = window(url)
    names = logged_fields(record)
    assert {k: first[k] for k in names} == {k: second[k] for k in names}
    assert first["weight"] is None and first["prior_encounters"] == 2
    assert first["row_id"] != second["row_id"]


def test_the_pseudonym_is_stable_and_keyed_and_the_number_is_stored_nowhere(
    registered, payloads, tmp_path
):
    url = f"sqlite:///{tmp_path}/monitor.db"
    same_patient = payloads[:3]  # three encounters of one patient
    with serving(api_settings(registered, tmp_path / "a", url)) as client:
        client.post("/predict-batch", json={"records": same_patient})
    with serving(
        api_settings(registered, tmp_path / "b", url, pseudonym_key="another-key")
    ) as client:
        client.post("/predict", json=same_patient[0])
    rows = window(url)
    keys = [r["patient_key"] for r in rows]
    assert len(set(keys[:3])) == 1 and keys[3] != keys[0]
    assert keys[0] == pseudonym(KEY.encode(), PATIENT) and re.fullmatch("[0-9a-f]{64}", keys[0])
    stored = Path(make_url(url).database).read_bytes()
    assert keys[0].encode() in stored and b'"num_medications"' in stored  # the search works
    assert str(PATIENT).encode() not in stored and struct.pack(">q", PATIENT) not in stored
    assert "patient_nbr" not in rows[0]


def test_without_a_configured_key_one_is_made_once_in_a_private_file(
    registered, payloads, tmp_path
):
    url = f"sqlite:///{tmp_path}/monitor.db"
    settings = api_settings(registered, tmp_path, url, pseudonym_key=None)
    for _ in range(2):
        with serving(settings) as client:
            client.post("/predict", json=payloads[0])
    key_file = settings.pseudonym_key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    first, second = window(url)
    assert first["patient_key"] == second["patient_key"]
    assert first["patient_key"] == pseudonym(key_file.read_text().encode(), PATIENT)


def _rename(admin_url: str, old: str, new: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": old},
        )
        conn.execute(sa.text(f'ALTER DATABASE "{old}" RENAME TO "{new}"'))
    engine.dispose()


def test_a_database_that_goes_away_and_comes_back_loses_and_duplicates_nothing(
    registered, payloads, pg_admin_url, pg_database_factory, tmp_path
):
    url = pg_database_factory()
    name = make_url(url).database
    settings = api_settings(registered, tmp_path, url)
    with serving(settings) as client:
        writer = client.app.state.prediction_log
        for payload in payloads[:5]:
            assert client.post("/predict", json=payload).status_code == 200
        wait_until(lambda: writer.pending == 0, "the first rows to be written")
        _rename(pg_admin_url, name, f"{name}_away")
        try:
            for payload in payloads[5:20]:
                assert client.post("/predict", json=payload).status_code == 200
            assert (
                client.post("/predict-batch", json={"records": payloads[20:30]}).status_code == 200
            )
            wait_until(lambda: writer.spill.rows == 25, "the rows to reach the spill file")
            assert metric(client, "readmit_prediction_log_flush_failures_total") >= 1
            assert metric(client, "readmit_prediction_log_pending") == 25
            spill = writer.spill.path
            assert stat.S_IMODE(spill.stat().st_mode) == 0o600
            assert stat.S_IMODE(spill.parent.stat().st_mode) == 0o700
            assert str(PATIENT).encode() not in spill.read_bytes()
            assert b"500007" in spill.read_bytes()
        finally:
            _rename(pg_admin_url, f"{name}_away", name)
        wait_until(lambda: writer.pending == 0, "the spilled rows to be replayed")
        assert metric(client, "readmit_prediction_log_rows_total") == 30
        assert metric(client, "readmit_prediction_log_dropped_total") == 0
    rows = window(url)
    assert len(rows) == 30 == len({r["row_id"] for r in rows})
    assert sorted(r["encounter_id"] for r in rows) == [p["encounter_id"] for p in payloads]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        everything = " ".join(conn.execute(sa.text("SELECT p::text FROM predictions p")).scalars())
    engine.dispose()
    assert "500007" in everything and str(PATIENT) not in everything


def test_rows_spilled_at_shutdown_are_replayed_by_the_next_start(
    registered, payloads, pg_admin_url, tmp_path
):
    name = f"readmit_test_{secrets.token_hex(4)}"
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    settings = api_settings(registered, tmp_path, url)
    with serving(settings) as client:  # the database does not exist yet
        assert client.post("/predict-batch", json={"records": payloads[:12]}).status_code == 200
        assert client.post("/predict", json=payloads[12]).status_code == 200
    spilled = list(settings.prediction_spill_dir.glob("predictions-*.jsonl"))
    assert len(spilled) == 1 and len(spilled[0].read_text().splitlines()) == 13
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        for _ in range(2):  # a second start finds nothing left to replay
            with serving(settings) as client:
                writer = client.app.state.prediction_log
                wait_until(
                    lambda: not spilled[0].exists(), "the orphaned spill file to be replayed"
                )
                assert writer.pending == 0
        rows = window(url)
        assert len(rows) == 13 == len({r["row_id"] for r in rows})
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_replay_of_rows_already_stored_adds_none(registered, payloads, monitor_url, tmp_path):
    settings = api_settings(registered, tmp_path, monitor_url)
    with serving(settings) as client:
        client.post("/predict-batch", json={"records": payloads[:4]})
    rows = window(monitor_url)
    stored = [
        {k: r[k] for k in monitor.PREDICTION_COLUMNS if k != "features"}
        | {"features": logged_fields(r)}
        for r in rows
    ]
    for row in stored:
        row["scored_at"] = row["scored_at"].to_pydatetime()
    engine = sa.create_engine(monitor_url)
    with engine.begin() as conn:
        assert monitor.insert_predictions(conn, stored + stored) == 0
    engine.dispose()
    assert len(window(monitor_url)) == 4


def test_beyond_the_bound_rows_are_dropped_and_counted(registered, payloads, tmp_path):
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    settings = api_settings(
        registered, tmp_path, url, prediction_log_max_pending=5, prediction_log_retry_seconds=3600
    )
    with serving(settings) as client:
        for payload in payloads[:3]:
            assert client.post("/predict", json=payload).status_code == 200
        assert client.post("/predict-batch", json={"records": payloads[3:8]}).status_code == 200
        assert client.post("/predict", json=payloads[8]).status_code == 200
        writer = client.app.state.prediction_log
        assert metric(client, "readmit_prediction_log_dropped_total") == 4
        assert writer.pending == 5
    spilled = settings.prediction_spill_dir.glob("predictions-*.jsonl")
    assert sum(len(p.read_text().splitlines()) for p in spilled) == 5


def test_logging_off_writes_nothing(registered, payloads, tmp_path):
    url = f"sqlite:///{tmp_path}/monitor.db"
    with serving(api_settings(registered, tmp_path, url, prediction_log_enabled=False)) as client:
        assert client.post("/predict", json=payloads[0]).status_code == 200
        assert client.app.state.prediction_log is None
    assert not Path(make_url(url).database).exists()
