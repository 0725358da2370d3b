"""A stack killed with kill -9 (no `stack down`) keeps every model artifact: after `stack up`
the API serves the same @production version, and each version's files download byte for
byte as before — after the first training and again after a second one.

Every port is a free one and the databases carry a test prefix, so a stack the user runs on
the default ports is not touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from readmit import registry
from readmit.settings import Settings
from readmit.stack import processes
from readmit.stack.airflow import AirflowClient
from readmit.stack.down import stragglers
from readmit.stack.layout import Paths, paths_for
from readmit.stack.status import status
from tests.stack.stack import cli, stack_environment

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
DAGS = ["1_raw_batch_ingest_15k", "2_clean_build", "3_train_and_register"]
INGEST_TASK = "ingest_next_batch"
ACTIVE = ("queued", "running", "restarting")


# Few boosting and bootstrap rounds: the test is about where the artifacts go, not the model.
TRAIN = (
    "from readmit.pipeline.train import train; from readmit.settings import Settings; "
    "train(Settings(), max_rounds=40, bootstrap_rounds=50)"
)


def _cli(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return cli(env, *args, timeout=timeout)


def _train(env: dict[str, str]) -> None:
    """One training run in a process of its own, through the stack's MLflow, S3, PostgreSQL."""
    done = subprocess.run(
        [sys.executable, "-c", TRAIN], env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def stack_env(pg_admin_url: str, dataset_uri: str, tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("kill-stack")
    with stack_environment(pg_admin_url, dataset_uri, data_dir, "kill") as env:
        yield env


def _paths(env: dict[str, str]) -> Paths:
    return paths_for(Settings(data_dir=Path(env["READMIT_DATA_DIR"])))


def _up(env: dict[str, str]) -> None:
    up = _cli(env, "stack", "up", timeout=600)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]


def _client_env(env: dict[str, str]) -> dict[str, str]:
    """What `readmit` commands need to work against the stack, from its stack.env."""
    lines = _paths(env).env_file.read_text().splitlines()
    return {**env, **dict(line.split("=", 1) for line in lines if "=" in line)}


def _kill_9_everything(env: dict[str, str]) -> None:
    """SIGKILL every process group the stack recorded and every process it started."""
    paths = _paths(env)
    groups = [r.pid for r in processes.records(paths.run) if r.running]
    assert groups
    for pid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for pid in stragglers(paths):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(processes.alive(pid) for pid in groups) or stragglers(paths):
        assert time.monotonic() < deadline, "stack processes outlived SIGKILL"
        time.sleep(0.2)


def _registry(env: dict[str, str]) -> tuple[str, MlflowClient]:
    """The stack's MLflow URL, and a client logged in as the stack's services are."""
    client_env = _client_env(env)
    settings = Settings(
        mlflow_tracking_uri=client_env["MLFLOW_TRACKING_URI"],
        mlflow_tracking_username=client_env["MLFLOW_TRACKING_USERNAME"],
        mlflow_tracking_password=client_env["MLFLOW_TRACKING_PASSWORD"],
    )
    return client_env["MLFLOW_TRACKING_URI"], registry.client_for(settings)


def _artifacts(env: dict[str, str], tmp: Path) -> dict[str, dict[str, str]]:
    """Version -> {file: sha256} of every registered version, downloaded through MLflow."""
    tracking, client = _registry(env)
    found = {}
    for version in client.search_model_versions("name = 'readmission'"):
        target = tmp / f"v{version.version}-{time.monotonic_ns()}"
        folder = Path(
            mlflow.artifacts.download_artifacts(
                f"models:/readmission/{version.version}",
                dst_path=str(target),
                tracking_uri=tracking,
            )
        )
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        found[str(version.version)] = {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files
        }
    return found


def _production(env: dict[str, str]) -> str:
    _, client = _registry(env)
    holder = registry.by_alias(client, "readmission", registry.PRODUCTION)
    assert holder is not None
    return str(holder.version)


def _served(env: dict[str, str], version: str, timeout: float = 120) -> None:
    api = f"http://127.0.0.1:{env['READMIT_API_PORT']}"
    deadline = time.monotonic() + timeout
    health = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            health = httpx.get(f"{api}/health", timeout=5)
            if health.status_code == 200 and health.json()["model"]["version"] == version:
                return
        time.sleep(1)
    pytest.fail(f"the API never served v{version}: {health and health.text}")


def _wait_for_running_tasks(airflow: AirflowClient, timeout: float = 300) -> None:
    """A paused DAG starts no task, but one already started runs on: let it finish."""
    deadline = time.monotonic() + timeout
    for run in airflow.runs(DAGS[0]):
        while airflow.task_state(DAGS[0], run["dag_run_id"], INGEST_TASK) in ACTIVE:
            assert time.monotonic() < deadline, f"{run['dag_run_id']} still running"
            time.sleep(1)


def _check_after_kill(env: dict[str, str], before: dict, production: str, tmp: Path) -> None:
    _kill_9_everything(env)
    _up(env)
    settings = Settings(data_dir=Path(env["READMIT_DATA_DIR"]), s3_port=int(env["READMIT_S3_PORT"]))
    s3 = next(s for s in status(settings) if s.name == "s3")
    assert s3.healthy and f"objects on disk in {_paths(env).s3_store}" in s3.detail, s3
    _served(env, production)
    assert _production(env) == production
    assert _artifacts(env, tmp) == before


def test_artifacts_survive_a_kill_9_of_every_stack_process(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    clock = time.monotonic()
    _up(stack_env)
    keys = json.loads(_paths(stack_env).secrets.read_text())
    airflow = AirflowClient(
        f"http://127.0.0.1:{stack_env['READMIT_AIRFLOW_PORT']}", "admin", keys["airflow_password"]
    )
    airflow.wait_for_dags(DAGS, timeout=120)
    for dag in DAGS:  # the test trains itself, through the stack's MLflow and S3
        airflow.pause(dag)
    _wait_for_running_tasks(airflow)
    airflow.close()

    client = _client_env(stack_env)
    for step in (("ingest", "--all"), ("clean",)):
        done = _cli(client, *step)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _train(client)
    production = _production(stack_env)
    _served(stack_env, production)
    first = _artifacts(stack_env, tmp_path)
    assert first[production], "the production version has no files"
    _check_after_kill(stack_env, first, production, tmp_path)

    _train(client)
    second = _artifacts(stack_env, tmp_path)
    assert len(second) == len(first) + 1
    production = _production(stack_env)
    _served(stack_env, production)
    _check_after_kill(stack_env, second, production, tmp_path)
    print(f"stack kill -9 durability: {time.monotonic() - clock:.0f} s")
