"""The DAGs run through Airflow (`airflow dags test`) against PostgreSQL raw-db and clean-db
and the real MLflow server: ingest, clean and train end with a @production model, and the
monitor DAG asks for retraining only when traffic to that model has drifted.

The data set is the first 30,000 rows of the real file (two batches of 15,000), so DAG 1's
third run is the no-op one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from readmit import registry
from readmit.monitoring.simulate import simulate, split_encounters
from readmit.orchestration import CLEAN_ASSET, RAW_ASSET, RETRAIN_ASSET
from readmit.settings import Settings
from readmit.stack.airflow import airflow_env
from readmit.stack.foreground import free_port, start_api
from readmit.stack.s3 import s3_env
from tests.splits import assert_batches_keep_patients_together
from tests.subset import write_subset

pytestmark = pytest.mark.postgres
AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_4 = "4_monitor_and_retrain"


@pytest.fixture(scope="module")
def dag_runner(pg_admin_url, mlflow_server, dataset_uri, tmp_path_factory):
    from tests.databases import create_database, drop_database

    folder = tmp_path_factory.mktemp("dags")
    csv, sha = write_subset(dataset_uri, 30_000, folder)
    urls = {name: create_database(pg_admin_url) for name in ("raw", "clean", "airflow")}
    env = {
        **os.environ,
        **airflow_env(folder / "airflow", urls["airflow"], free_port(), 2, "x" * 64),
        **s3_env(mlflow_server.s3_endpoint),
        "READMIT_DATA_DIR": str(folder / "state"),
        "READMIT_DATASET_URI": str(csv),
        "READMIT_DATASET_SHA256": sha,
        "READMIT_RAW_DB_URL": urls["raw"],
        "READMIT_CLEAN_DB_URL": urls["clean"],
        "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
        "READMIT_EXPERIMENT_NAME": "dag-test",
        "READMIT_MODEL_NAME": "dag-test-readmission",
    }
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stdout[-2000:]
    runner = DagRunner(env, urls)
    yield runner
    for url in urls.values():
        drop_database(pg_admin_url, url)


class DagRunner:
    def __init__(self, env: dict[str, str], urls: dict[str, str]) -> None:
        self.env, self.urls = env, urls
        self.settings = Settings(
            raw_db_url=urls["raw"],
            clean_db_url=urls["clean"],
            mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"],
            model_name=env["READMIT_MODEL_NAME"],
        )

    def test(self, dag_id: str) -> str:
        """`airflow dags test DAG_ID`; returns its output (the task logs)."""
        done = subprocess.run(
            [AIRFLOW, "dags", "test", dag_id],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-3000:]
        return output

    def last_run(self, dag_id: str) -> tuple[str, dict[str, str]]:
        """State of the DAG's latest run and of each of its tasks, from Airflow's metadata DB."""
        engine = sa.create_engine(self.urls["airflow"])
        with engine.connect() as conn:
            run_id, state = conn.execute(
                sa.text(
                    "select run_id, state from dag_run where dag_id = :d order by id desc limit 1"
                ),
                {"d": dag_id},
            ).one()
            tasks = conn.execute(
                sa.text(
                    "select task_id, state from task_instance where dag_id = :d and run_id = :r"
                ),
                {"d": dag_id, "r": run_id},
            ).all()
        engine.dispose()
        return state, dict(tasks)

    def asset_events(self, name: str) -> int:
        engine = sa.create_engine(self.urls["airflow"])
        with engine.connect() as conn:
            count = conn.execute(
                sa.text(
                    "select count(*) from asset_event e join asset a on a.id = e.asset_id "
                    "where a.name = :n"
                ),
                {"n": name},
            ).scalar_one()
        engine.dispose()
        return int(count)

    def batches(self) -> list[tuple[int, str, int]]:
        engine = sa.create_engine(self.urls["raw"])
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("select batch_id, status, rows_read from batch_metadata order by batch_id")
            ).all()
        engine.dispose()
        return [tuple(r) for r in rows]


@dataclass
class Step:
    """What one `airflow dags test` printed and left behind."""

    output: str
    last_run: tuple[str, dict[str, str]]
    batches: list[tuple[int, str, int]]
    raw_events: int
    clean_events: int


@pytest.fixture(scope="module")
def chain(dag_runner: DagRunner) -> dict[str, Step]:
    """DAG 1 three times (two batches, then the no-op run), DAG 2 and DAG 3, once for the
    module: the chain's own test asserts on each step, DAG 4's starts from its @production."""
    steps = {}
    for name, dag_id in [
        ("ingest 1", "1_raw_batch_ingest_15k"),
        ("ingest 2", "1_raw_batch_ingest_15k"),
        ("ingest 3", "1_raw_batch_ingest_15k"),
        ("clean", "2_clean_build"),
        ("train", "3_train_and_register"),
    ]:
        output = dag_runner.test(dag_id)
        steps[name] = Step(
            output,
            dag_runner.last_run(dag_id),
            dag_runner.batches(),
            dag_runner.asset_events(RAW_ASSET),
            dag_runner.asset_events(CLEAN_ASSET),
        )
    return steps


def test_dags_ingest_clean_train_and_promote(dag_runner: DagRunner, chain: dict[str, Step]) -> None:
    first, second, third = chain["ingest 1"], chain["ingest 2"], chain["ingest 3"]
    assert "batch 1/2: 15,000 read" in first.output
    assert "ingest summary: 1 batch(es) [1]" in first.output
    assert first.last_run == (
        "success",
        {"ingest_next_batch": "success", "batch_added": "success", "publish_raw_batch": "success"},
    )
    assert first.batches == [(1, "succeeded", 15_000)]
    assert first.raw_events == 1

    assert second.batches == [(1, "succeeded", 15_000), (2, "succeeded", 15_000)]
    assert second.raw_events == 2

    assert "all 2 batches are already in raw-db: nothing to do" in third.output
    assert third.last_run == (
        "success",
        {"ingest_next_batch": "success", "batch_added": "success", "publish_raw_batch": "skipped"},
    )
    assert third.raw_events == 2, "a no-op run must not trigger the clean build"
    assert len(third.batches) == 2

    clean = chain["clean"]
    assert "clean summary: build" in clean.output and "from batches [1, 2]" in clean.output
    assert clean.last_run == ("success", {"build_clean": "success", "materialise": "success"})
    assert clean.clean_events == 1
    # Each batch was loaded by its own `airflow dags test` process.
    assert_batches_keep_patients_together(dag_runner.urls["raw"], dag_runner.urls["clean"])

    train = chain["train"]
    assert "train summary:" in train.output and "v1 @production" in train.output
    assert train.last_run == ("success", {"train_register_promote": "success"})
    client = registry.client_for(dag_runner.settings)
    production = client.get_model_version_by_alias(dag_runner.settings.model_name, "production")
    assert production.version == "1"
    run = client.get_run(production.run_id)
    assert run.data.tags["readmit.raw_batches"] == "1,2"


def _retrain_events(dag_runner: DagRunner) -> list[dict]:
    engine = sa.create_engine(dag_runner.urls["airflow"])
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "select e.extra from asset_event e join asset a on a.id = e.asset_id "
                "where a.name = :n order by e.id"
            ),
            {"n": RETRAIN_ASSET},
        ).all()
    engine.dispose()
    return [json.loads(e) if isinstance(e, str) else e for (e,) in found]


@pytest.mark.usefixtures("chain")
def test_dag_4_requests_retraining_only_on_a_bad_verdict(
    dag_runner: DagRunner, tmp_path: Path
) -> None:
    """After the chain (its @production): steady traffic gives `ok` and no request; a unit error in
    `time_in_hospital` gives `drift`, and the request's event says why."""
    state = Path(dag_runner.env["READMIT_DATA_DIR"])
    monitor_url = f"sqlite:///{state}/monitor.db"
    dag_runner.env["READMIT_MONITOR_DB_URL"] = monitor_url
    settings = dag_runner.settings.model_copy(
        update={
            "api_port": free_port(),
            "dataset_uri": dag_runner.env["READMIT_DATASET_URI"],
            "dataset_sha256": dag_runner.env["READMIT_DATASET_SHA256"],
        }
    )
    pool = split_encounters(settings)  # the test split of the rows the model was trained on
    env = {**dag_runner.env, "READMIT_API_PORT": str(settings.api_port)}
    env.update({"READMIT_DATA_DIR": str(tmp_path), "READMIT_PREDICTION_LOG_FLUSH_SECONDS": "0.1"})
    api = start_api(settings, tmp_path / "api.log", env, timeout=300)
    try:
        _wait_for_model(api.url)
        simulate(settings, api.url, "steady", 800, outcomes=False, encounters=pool)
        out = dag_runner.test(DAG_4)
        assert "monitor summary: verdict ok" in out and "no retraining" in out
        assert dag_runner.last_run(DAG_4) == (
            "success",
            {
                "run_monitor": "success",
                "retrain_needed": "success",
                "request_retrain": "skipped",
                "challenger_exists": "success",
                "compare_models": "skipped",
            },
        )
        assert _retrain_events(dag_runner) == []

        simulate(settings, api.url, "hours-for-days", 800, outcomes=False, encounters=pool, seed=1)
        out = dag_runner.test(DAG_4)
        assert "monitor summary: verdict drift" in out and "retraining requested" in out
    finally:
        api.stop()
    assert dag_runner.last_run(DAG_4) == (
        "success",
        {
            "run_monitor": "success",
            "retrain_needed": "success",
            "request_retrain": "success",
            "challenger_exists": "success",
            "compare_models": "skipped",
        },
    )
    (event,) = _retrain_events(dag_runner)
    assert event["verdict"] == "drift" and "time_in_hospital" in event["drifted_features"]
    assert event["why"].startswith("drift") and event["rows"] == 1_600


def _wait_for_model(url: str, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not httpx.get(f"{url}/health", timeout=10).json().get("ready"):
        assert time.monotonic() < deadline, "the API loaded no model"
        time.sleep(0.5)
