"""Outcomes through POST /outcomes and `readmit outcomes FILE.csv`, on PostgreSQL and SQLite:
idempotent loads, corrections recorded, outcomes of encounters never scored kept and counted,
bad rows refused with their index and field, and the join with the prediction log."""

from __future__ import annotations

import zipfile

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from readmit.cli import app
from readmit.storage import monitor
from tests.models import API_KEY
from tests.monitoring import api_settings, serving, window

AUTH = {"X-API-Key": API_KEY}


def post(client, outcomes: list[tuple[int, str]], headers=AUTH):
    body = {"outcomes": [{"encounter_id": e, "readmitted": r} for e, r in outcomes]}
    return client.post("/outcomes", json=body, headers=headers)


def counts(response) -> tuple[int, ...]:
    assert response.status_code == 200, response.text
    body = response.json()
    return tuple(body[k] for k in ("received", "inserted", "updated", "unchanged", "unmatched"))


def stored(url: str) -> dict[int, str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = dict(
            conn.execute(
                sa.select(monitor.outcomes.c.encounter_id, monitor.outcomes.c.readmitted)
            ).all()
        )
    engine.dispose()
    return found


def corrections(url: str, encounter: int) -> list[tuple[str, str]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = monitor.corrections_of(conn, encounter)
    engine.dispose()
    return found


def test_outcomes_are_idempotent_corrected_and_joined_with_predictions(
    registered, payloads, monitor_url, tmp_path
):
    a, b, c = (p["encounter_id"] for p in payloads[:3])
    with serving(api_settings(registered, tmp_path, monitor_url)) as client:
        assert client.post("/predict-batch", json={"records": payloads[:3]}).status_code == 200
        client.app.state.prediction_log.flush()
        first = [(a, "<30"), (b, "NO"), (999_999_999, ">30")]
        assert counts(post(client, first)) == (3, 3, 0, 0, 1)
        assert counts(post(client, first)) == (3, 0, 0, 3, 1)  # the same again changes nothing
        assert counts(post(client, [(a, ">30"), (b, "NO")])) == (2, 0, 1, 1, 0)
        assert counts(post(client, [(c, "NO"), (c, "<30")])) == (2, 1, 1, 0, 0)  # in order
    assert stored(monitor_url) == {a: ">30", b: "NO", c: "<30", 999_999_999: ">30"}
    assert corrections(monitor_url, a) == [("<30", ">30")]
    assert corrections(monitor_url, c) == [("NO", "<30")] and corrections(monitor_url, b) == []
    joined = {r["encounter_id"]: (r["outcome"], r["label"]) for r in window(monitor_url)}
    assert joined == {a: (">30", 0), b: ("NO", 0), c: ("<30", 1)}


def test_an_outcome_that_arrives_first_joins_its_prediction_later(registered, payloads, tmp_path):
    url = f"sqlite:///{tmp_path}/monitor.db"
    with serving(api_settings(registered, tmp_path, url)) as client:
        assert counts(post(client, [(payloads[4]["encounter_id"], "<30")])) == (1, 1, 0, 0, 1)
        client.post("/predict", json=payloads[4])
    (row,) = window(url)
    assert (row["outcome"], row["label"]) == ("<30", 1)


def test_outcomes_need_the_api_key(registered, tmp_path):
    url = f"sqlite:///{tmp_path}/monitor.db"
    with serving(api_settings(registered, tmp_path, url)) as client:
        assert post(client, [(1, "NO")], headers={}).status_code == 401
        assert post(client, [(1, "NO")], headers={"X-API-Key": "wrong"}).status_code == 401
        assert counts(post(client, [(1, "NO")])) == (1, 1, 0, 0, 1)


@pytest.mark.parametrize(
    ("entry", "field", "type_"),
    [
        ({"encounter_id": 2, "readmitted": "yes"}, "readmitted", "literal_error"),
        ({"encounter_id": -3, "readmitted": "NO"}, "encounter_id", "greater_than_equal"),
        ({"encounter_id": "7", "readmitted": "NO"}, "encounter_id", "int_type"),
        ({"readmitted": "NO"}, "encounter_id", "missing"),
        ({"encounter_id": 2, "readmitted": "NO", "secret": 1}, None, "extra_forbidden"),
    ],
)
def test_a_bad_outcome_is_refused_by_index_and_field_and_nothing_is_stored(
    registered, tmp_path, entry, field, type_
):
    url = f"sqlite:///{tmp_path}/monitor.db"
    body = {"outcomes": [{"encounter_id": 1, "readmitted": "<30"}, entry]}
    with serving(api_settings(registered, tmp_path, url)) as client:
        response = client.post("/outcomes", json=body, headers=AUTH)
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        where = ["body", "outcomes", 1] + ([field] if field else [])  # unknown keys: not named
        assert error["loc"] == where and error["type"] == type_ and "secret" not in response.text
        assert counts(post(client, [(5, "NO")])) == (1, 1, 0, 0, 1)
    assert stored(url) == {5: "NO"}


def test_too_many_outcomes_are_refused(registered, tmp_path):
    url = f"sqlite:///{tmp_path}/monitor.db"
    with serving(api_settings(registered, tmp_path, url, max_batch=3)) as client:
        response = post(client, [(i, "NO") for i in range(4)])
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "outcomes"]
        assert "at most 3" in response.json()["detail"][0]["msg"]


def test_outcomes_with_monitor_db_down_are_refused_with_503_and_predictions_still_answer(
    registered, payloads, tmp_path
):
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    with serving(api_settings(registered, tmp_path, url)) as client:
        response = post(client, [(1, "NO")])
        assert response.status_code == 503 and "outcomes not stored" in response.json()["detail"]
        assert "Traceback" not in response.text
        assert client.post("/predict", json=payloads[0]).status_code == 200


def run_cli(url: str, tmp_path, file) -> object:
    env = {"READMIT_MONITOR_DB_URL": url, "READMIT_DATA_DIR": str(tmp_path / "cli")}
    return CliRunner().invoke(app, ["outcomes", str(file)], env=env)


def test_the_cli_loads_a_file_idempotently_and_names_a_bad_row(monitor_url, tmp_path):
    good = tmp_path / "outcomes.csv"
    good.write_text("encounter_id,readmitted\n11,<30\n12,NO\n13,>30\n")
    result = run_cli(monitor_url, tmp_path, good)
    assert result.exit_code == 0, result.output
    assert (
        "3 received, 3 inserted, 0 updated (corrections), 0 unchanged, 3 unmatched" in result.output
    )
    good.write_text("encounter_id,readmitted,note\n11,<30,x\n12,>30,y\n")
    result = run_cli(monitor_url, tmp_path, good)
    assert (
        "2 received, 0 inserted, 1 updated (corrections), 1 unchanged, 2 unmatched" in result.output
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("encounter_id,readmitted\n20,NO\n21,maybe\n")
    result = run_cli(monitor_url, tmp_path, bad)
    assert result.exit_code == 1
    assert "row 1 (line 3): readmitted: 'maybe' is not one of" in result.output
    bad.write_text("encounter_id,readmitted\n20,NO\nx1,NO\n")
    result = run_cli(monitor_url, tmp_path, bad)
    assert result.exit_code == 1 and "row 1 (line 3): encounter_id: 'x1'" in result.output
    bad.write_text("encounter,readmitted\n20,NO\n")
    result = run_cli(monitor_url, tmp_path, bad)
    assert result.exit_code == 1 and "missing column(s) encounter_id" in result.output
    assert "Traceback" not in result.output
    assert stored(monitor_url) == {11: "<30", 12: ">30", 13: ">30"}
    assert corrections(monitor_url, 12) == [("NO", ">30")]


def test_the_cli_loads_the_whole_data_set_file(dataset_uri, pg_database_factory, tmp_path):
    with zipfile.ZipFile(dataset_uri) as archive:
        name = next(n for n in archive.namelist() if n.endswith("diabetic_data.csv"))
        csv = tmp_path / "diabetic_data.csv"
        csv.write_bytes(archive.read(name))
    url = pg_database_factory()
    result = run_cli(url, tmp_path, csv)
    assert result.exit_code == 0, result.output
    assert (
        "101,766 received, 101,766 inserted, 0 updated (corrections), 0 unchanged" in result.output
    )
    assert "101,766 / 101,766" in result.output
    result = run_cli(url, tmp_path, csv)
    assert (
        "101,766 received, 0 inserted, 0 updated (corrections), 101,766 unchanged" in result.output
    )
    labels = stored(url)
    assert len(labels) == 101_766 and sum(v == "<30" for v in labels.values()) == 11_357
