"""`readmit simulate` against the API as a real process (a small real model in MLflow, the
prediction log in SQLite): the rows it logs are test-split encounters carrying exactly the
scenario's shift, and the outcomes it posts join them with their true labels."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from readmit.cli import app
from readmit.monitoring.simulate import OLD_AGES, SimulationError, simulate, split_encounters
from readmit.settings import Settings
from readmit.stack.foreground import Service, free_port, start_api
from readmit.storage import monitor
from tests.models import API_KEY
from tests.monitoring import KEY, wait_until


@pytest.fixture(scope="module")
def pool(dataset_uri, registered) -> pd.DataFrame:
    settings = registered.model_copy(update={"dataset_uri": dataset_uri})
    return split_encounters(settings)


@contextlib.contextmanager
def serving(registered: Settings, folder: Path) -> Iterator[tuple[Service, str, Settings]]:
    """`readmit serve` with its own monitor-db (outcomes join every row of an encounter, so a
    scenario that labels selectively needs a log of its own)."""
    url = f"sqlite:///{folder}/monitor.db"
    settings = registered.model_copy(update={"api_port": free_port()})
    env = {
        "MLFLOW_TRACKING_URI": registered.resolved_tracking_uri,
        "READMIT_DATA_DIR": str(folder),
        "READMIT_API_PORT": str(settings.api_port),
        "READMIT_API_KEY": API_KEY,
        "READMIT_AUTH": "keys",  # predictions need the key too
        "READMIT_MONITOR_DB_URL": url,
        "READMIT_PSEUDONYM_KEY": KEY,
        "READMIT_PREDICTION_LOG_FLUSH_SECONDS": "0.1",
        "READMIT_MODEL_POLL_SECONDS": "3600",
    }
    service = start_api(settings, folder / "api.log", env, timeout=300)
    try:
        yield service, url, settings
    finally:
        service.stop()


@pytest.fixture(scope="module")
def api(registered, tmp_path_factory) -> Iterator[tuple[Service, str, Settings]]:
    with serving(registered, tmp_path_factory.mktemp("simulate-api")) as found:
        yield found


def run(api, pool, scenario: str, records: int) -> tuple[object, pd.DataFrame]:
    """Simulate, then the rows logged meanwhile once all of them are written."""
    service, url, settings = api
    start = datetime.now(UTC)
    result = simulate(settings, service.url, scenario, records, encounters=pool)
    assert result.scored == records and result.rejected == 0, result.summary()
    wait_until(lambda: len(_since(url, start)) >= records, "the log", limit=300)
    rows = _since(url, start)
    assert len(rows) == records, rows["request_id"].value_counts().head()
    return result, rows


def _since(url: str, start: datetime) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        return monitor.read_window(engine, since=start)
    finally:
        engine.dispose()


def _source(pool: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The pool's row of each logged encounter, in the log's order."""
    by_id = pool.drop_duplicates("encounter_id").set_index("encounter_id")
    return by_id.loc[rows["encounter_id"].astype("int64").to_numpy()]


def test_steady_logs_test_split_encounters_as_they_are_and_their_outcomes_join(api, pool):
    result, rows = run(api, pool, "steady", 400)
    source = _source(pool, rows)
    assert set(rows["encounter_id"].astype("int64")) <= set(pool["encounter_id"])
    for name in ("time_in_hospital", "admission_type_id", "age", "a1cresult"):
        assert rows[name].tolist() == source[name].tolist(), name
    assert rows["admission_type_id"].nunique() > 1 and (rows["a1cresult"] == "None").mean() > 0.6
    assert rows["label"].notna().all()
    assert (
        rows["label"].astype(int).tolist() == (source["readmitted"] == "<30").astype(int).tolist()
    )
    assert result.outcomes["received"] == 400 and result.positives == rows["label"].sum()


def test_case_mix_logs_only_emergency_admissions_of_older_patients(api, pool):
    _, rows = run(api, pool, "case-mix", 300)
    assert (rows["admission_type_id"] == 1).all() and rows["age"].isin(OLD_AGES).all()
    assert (pool["admission_type_id"] != 1).mean() > 0.3  # a real change of the mix


def test_a1c_measured_logs_a_result_for_most_patients(api, pool):
    _, rows = run(api, pool, "a1c-measured", 300)
    measured = rows["a1cresult"].isin([">7", ">8", "Norm"])
    assert measured.mean() > 0.85 and (pool["a1cresult"] == "None").mean() > 0.7


def test_specialty_missing_logs_no_specialty_at_all(api, pool):
    _, rows = run(api, pool, "specialty-missing", 300)
    assert rows["medical_specialty"].isna().all() and pool["medical_specialty"].ne("?").any()


def test_hours_for_days_logs_every_stay_24_times_longer(api, pool):
    _, rows = run(api, pool, "hours-for-days", 300)
    source = _source(pool, rows)
    assert rows["time_in_hospital"].tolist() == (source["time_in_hospital"] * 24).tolist()


def test_poor_ranking_labels_a_subgroup_on_which_the_live_auc_is_poor(registered, pool, tmp_path):
    with serving(registered, tmp_path) as api:
        result, rows = run(api, pool, "poor-ranking", 600)
    labelled = rows[rows["label"].notna()]
    assert 0 < len(labelled) < len(rows) and labelled["label"].nunique() == 2
    assert result.outcomes["received"] == len(labelled)
    source = _source(pool, labelled)
    assert (
        labelled["label"].astype(int).tolist()
        == (source["readmitted"] == "<30").astype(int).tolist()
    )  # true labels, only chosen
    live = roc_auc_score(labelled["label"].astype(int), labelled["probability"])
    everyone = roc_auc_score((_source(pool, rows)["readmitted"] == "<30"), rows["probability"])
    assert live < 0.5 < everyone, (live, everyone)


def test_an_api_that_wants_a_key_it_was_not_given_is_one_clear_error(api, pool):
    service, _, settings = api
    keyless = settings.model_copy(update={"api_key": None})
    with pytest.raises(SimulationError, match=r"/predict-batch answered HTTP 401"):
        simulate(keyless, service.url, "steady", 5, encounters=pool, outcomes=False)


def test_the_cli_names_an_unknown_scenario_and_an_api_that_is_not_there(tmp_path):
    env = {"READMIT_DATA_DIR": str(tmp_path), "READMIT_API_KEY": API_KEY}
    result = CliRunner().invoke(app, ["simulate", "--scenario", "flood"], env=env)
    assert result.exit_code == 1 and "unknown scenario 'flood'" in result.output
    assert "case-mix" in result.output
    result = CliRunner().invoke(app, ["simulate", "--outcome-delay", "soon"], env=env)
    assert result.exit_code == 1 and "--outcome-delay: 'soon'" in result.output


def test_an_api_that_is_not_there_is_one_clear_error(pool, tmp_path):
    settings = Settings(data_dir=tmp_path, api_key=API_KEY)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SimulationError, match=r"/predict-batch failed at http://127\.0\.0\.1"):
        simulate(settings, url, "steady", 10, encounters=pool)


def test_the_cli_scores_then_posts_outcomes_once_they_are_due(api, dataset_uri, tmp_path):
    service, _, _ = api
    env = {
        "READMIT_DATA_DIR": str(tmp_path),
        "READMIT_API_KEY": API_KEY,
        "READMIT_DATASET_URI": dataset_uri,
    }
    command = ["simulate", "--url", service.url, "--scenario", "case-mix", "--records", "30"]
    result = CliRunner().invoke(app, [*command, "--outcome-delay", "1s", "--seed", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert "30 / 30 records scored" in result.output and "waiting" in result.output
    assert "30 scored, 0 rejected" in result.output and "outcomes: 30 posted" in result.output
