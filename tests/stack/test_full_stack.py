"""The full stack, brought up for this module once and taken through its life in order:

1. End to end: `readmit stack up`, DAG 1 triggered through Airflow's REST API until every
   batch is in, DAGs 2 and 3 run from their Assets, the API serves the new @production
   version, `readmit stack down` leaves no process behind, and `stack up` again serves it.
2. Kill -9 (no `stack down`) keeps every model artifact: after `stack up` the API serves the
   same @production version, and each version's files download byte for byte as before —
   after a training (the end-to-end test's, or its own when run alone) and again after a
   second one.
3. `stack down` while an Airflow training task runs leaves no task process behind (it loads
   what the training reads when run alone).

The module is marked `in_order`: in a random order its tests keep this order.

Every port is a free one and the databases carry a test prefix, so a stack the user runs on
the default ports is not touched. The data set is its first 30,000 rows (two batches); the
whole file goes through the pipeline in tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from readmit import registry
from readmit.monitoring.pseudonym import pseudonym
from readmit.serving.schemas import EXAMPLE
from readmit.settings import Settings
from readmit.stack import postgres, processes, services
from readmit.stack.airflow import AirflowClient
from readmit.stack.down import stragglers
from readmit.stack.layout import paths_for
from tests.splits import assert_stack_keeps_patients_together
from tests.stack import durability
from tests.stack.stack import (
    cli,
    logged_patient_key,
    settled_runs,
    stack_environment,
    wait_until_served,
    xcom,
)
from tests.subset import write_subset

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.in_order]
DAGS = durability.DAGS
# The data set's first two batches: each DAG 1 run adds one, the third finds none left, and
# every batch triggers a clean build and a training through the Assets.
ROWS = 30_000
BATCHES = 2
INGEST, CLEAN, TRAIN = DAGS


def _cli(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return cli(env, *args, timeout=timeout)


@pytest.fixture(scope="module")
def stack_env(pg_admin_url: str, dataset_uri: str, tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("full-stack")  # one stack for the module's tests
    csv, sha256 = write_subset(dataset_uri, ROWS, tmp_path_factory.mktemp("full-stack-data"))
    with stack_environment(pg_admin_url, str(csv), data_dir, "e2e") as env:
        env["READMIT_DATASET_SHA256"] = sha256
        yield env


def test_full_stack_end_to_end(stack_env: dict[str, str]) -> None:
    clock = time.monotonic()
    up = _cli(stack_env, "stack", "up")
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    assert "readmit stack is up" in up.stdout
    status = _cli(stack_env, "stack", "status", timeout=60)
    assert status.returncode == 0, status.stdout
    for name in services.NAMES:
        assert name in status.stdout

    data_dir = Path(stack_env["READMIT_DATA_DIR"])
    keys = json.loads((data_dir / "stack" / "secrets.json").read_text())
    airflow = AirflowClient(
        f"http://127.0.0.1:{stack_env['READMIT_AIRFLOW_PORT']}", "admin", keys["airflow_password"]
    )
    airflow.wait_for_dags([INGEST, CLEAN, TRAIN], timeout=300)

    # 2. DAG 1 through the REST API until a run finds nothing left to load.
    loaded: list[int] = []
    for _ in range(12):
        run_id = airflow.trigger(INGEST)
        run = airflow.wait_for_run(INGEST, run_id, timeout=300)
        assert run["state"] == "success", run
        summary = xcom(airflow, INGEST, run_id, "ingest_next_batch")
        loaded += summary["batch_ids"]
        if summary["batches_added"] == 0:
            break
    total = summary["total_batches"]
    assert summary["batches_added"] == 0 and summary["pending_after"] == 0
    assert total == BATCHES
    # A scheduled run may have loaded a batch too: together, each batch exactly once.
    scheduled = [r for r in airflow.runs(INGEST) if r["run_type"] == "scheduled"]
    for r in scheduled:
        airflow.wait_for_run(INGEST, r["dag_run_id"], timeout=300)
        loaded += xcom(airflow, INGEST, r["dag_run_id"], "ingest_next_batch")["batch_ids"]
    assert sorted(loaded) == list(range(1, total + 1))

    # 3. DAGs 2 and 3 run from their Assets until a model trained on every batch is registered.
    # MLflow answers only to a login: the one stack.env hands every readmit client.
    mlflow_url = f"http://127.0.0.1:{stack_env['READMIT_MLFLOW_PORT']}"
    anonymous = httpx.post(
        f"{mlflow_url}/api/2.0/mlflow/registered-models/create",
        json={"name": "intruder"},
        timeout=10,
    )
    assert anonymous.status_code == 401
    client_env = dict(
        line.split("=", 1) for line in (data_dir / "stack" / "stack.env").read_text().splitlines()
    )
    assert client_env["MLFLOW_TRACKING_PASSWORD"] == keys["mlflow_password"]
    mlflow = registry.client_for(
        Settings(
            mlflow_tracking_uri=mlflow_url,
            mlflow_tracking_username=client_env["MLFLOW_TRACKING_USERNAME"],
            mlflow_tracking_password=client_env["MLFLOW_TRACKING_PASSWORD"],
        )
    )
    every_batch = ",".join(str(b) for b in range(1, total + 1))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        versions = mlflow.search_model_versions("name = 'readmission'")
        full = [v for v in versions if v.tags.get("readmit.raw_batches") == every_batch]
        cleans, trains = settled_runs(airflow, CLEAN), settled_runs(airflow, TRAIN)
        if full and cleans and trains:
            break
        time.sleep(3)
    else:
        pytest.fail("no model trained on every batch was registered in time")
    assert all(r["run_type"] == "asset_triggered" for r in cleans + trains)
    assert all(r["state"] == "success" for r in cleans + trains), cleans + trains
    last_clean = max(cleans, key=lambda r: r["end_date"])
    build = xcom(airflow, CLEAN, last_clean["dag_run_id"], "build_clean")
    assert build["raw_batches"] == list(range(1, total + 1))
    assert_stack_keeps_patients_together(stack_env)
    newest = max(full, key=lambda v: int(v.version))
    assert newest.tags["readmit.clean_build"] == build["build_id"]
    last_train = max(trains, key=lambda r: r["end_date"])
    result = xcom(airflow, TRAIN, last_train["dag_run_id"], "train_register_promote")
    assert result["version"] == newest.version
    assert 0.6 < result["test_roc_auc"] < 0.75

    # 4. The API serves the @production version.
    production = mlflow.get_model_version_by_alias("readmission", "production")
    api = f"http://127.0.0.1:{stack_env['READMIT_API_PORT']}"
    wait_until_served(api, production.version, timeout=60)
    predicted = httpx.post(f"{api}/predict", json=EXAMPLE, timeout=10)
    assert predicted.status_code == 200
    assert predicted.json()["model"]["version"] == production.version
    airflow.close()

    # The API logs the record to the stack's monitor database, under the stack's pseudonym key.
    monitor_url = postgres.database_urls(
        stack_env["READMIT_STACK_POSTGRES_URL"], stack_env["READMIT_STACK_DB_PREFIX"]
    )["monitor"]
    engine = sa.create_engine(monitor_url)
    deadline = time.monotonic() + 30
    while (logged := logged_patient_key(engine, predicted.json()["request_id"])) is None:
        assert time.monotonic() < deadline, "the prediction was never logged"
        time.sleep(0.5)
    engine.dispose()
    assert logged == pseudonym(keys["pseudonym_key"].encode(), EXAMPLE["patient_nbr"])

    # 5. Down: every recorded process group and every process started by the stack is gone.
    paths = paths_for(Settings(data_dir=Path(stack_env["READMIT_DATA_DIR"])))
    pids = [r.pid for r in processes.records(paths.run)]
    assert len(pids) == len(services.NAMES) - 1  # PostgreSQL is the running server's
    down = _cli(stack_env, "stack", "down", timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes.records(paths.run) == []
    assert all(processes.group_members(pid) == [] for pid in pids)
    assert stragglers(paths) == []
    assert _cli(stack_env, "stack", "status", timeout=60).returncode == 1

    # 6. Up again: the registry (PostgreSQL) and the artifacts (S3 on disk) are still there.
    again = _cli(stack_env, "stack", "up")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        health = httpx.get(f"{api}/health", timeout=5)
        if health.status_code == 200:
            break
        time.sleep(1)
    assert health.json()["model"]["version"] == production.version, health.text

    print(f"full stack end to end: {time.monotonic() - clock:.0f} s")


def test_artifacts_survive_a_kill_9_of_every_stack_process(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    clock = time.monotonic()
    durability.stack_up(stack_env)
    keys = json.loads(durability.stack_paths(stack_env).secrets.read_text())
    airflow = AirflowClient(
        f"http://127.0.0.1:{stack_env['READMIT_AIRFLOW_PORT']}", "admin", keys["airflow_password"]
    )
    airflow.wait_for_dags(DAGS, timeout=300)
    for dag in DAGS:  # the test trains itself, through the stack's MLflow and S3
        airflow.pause(dag)
    durability.wait_for_running_tasks(airflow)
    airflow.close()

    client = durability.stack_client_env(stack_env)
    if not durability.has_production(stack_env):  # run alone: it trains the first version
        durability.ingest_and_clean(client)
        durability.train(client)
    production = durability.production_version(stack_env)
    durability.served(stack_env, production)
    first = durability.artifacts(stack_env, tmp_path)
    assert first[production], "the production version has no files"
    durability.check_after_kill(stack_env, first, production, tmp_path)

    durability.train(client)
    second = durability.artifacts(stack_env, tmp_path)
    assert len(second) == len(first) + 1
    production = durability.production_version(stack_env)
    durability.served(stack_env, production)
    durability.check_after_kill(stack_env, second, production, tmp_path)
    print(f"stack kill -9 durability: {time.monotonic() - clock:.0f} s")


def test_down_while_a_training_task_runs(stack_env: dict[str, str]) -> None:
    """Airflow runs each task in a session of its own: `stack down` stops it too."""
    durability.stack_up(stack_env)
    client = durability.stack_client_env(stack_env)
    if not durability.has_production(stack_env):  # run alone: what the training reads
        durability.ingest_and_clean(client)
    paths = durability.stack_paths(stack_env)
    keys = json.loads(paths.secrets.read_text())
    airflow = AirflowClient(
        f"http://127.0.0.1:{stack_env['READMIT_AIRFLOW_PORT']}", "admin", keys["airflow_password"]
    )
    airflow.wait_for_dags([TRAIN], timeout=300)
    airflow.unpause(TRAIN)  # the kill -9 test pauses it
    run_id = airflow.trigger(TRAIN)
    deadline = time.monotonic() + 120
    while airflow.task_state(TRAIN, run_id, "train_register_promote") != "running":
        assert time.monotonic() < deadline, "the training task never started"
        time.sleep(0.5)
    time.sleep(2)
    records = processes.records(paths.run)
    tree = processes.descendants([r.pid for r in records])
    assert any(p in processes.group_members(p) for p in tree), "no task in a group of its own"
    airflow.close()
    assert _cli(stack_env, "stack", "down", timeout=180).returncode == 0
    assert stragglers(paths) == []
    assert [p for p in tree if processes.alive(p)] == []
