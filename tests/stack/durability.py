"""What the kill -9 test of the stack uses: training through the stack, every version's files
by checksum, a SIGKILL of every stack process, and the checks after the stack comes back."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from readmit import registry
from readmit.settings import Settings
from readmit.stack import processes
from readmit.stack.airflow import AirflowClient
from readmit.stack.down import stragglers
from readmit.stack.layout import Paths, paths_for
from readmit.stack.status import status
from tests.stack.stack import cli, wait_until_served

DAGS = ["1_raw_batch_ingest_15k", "2_clean_build", "3_train_and_register"]
ACTIVE = ("queued", "running", "restarting")


# Few boosting and bootstrap rounds: the test is about where the artifacts go, not the model.
TRAIN = (
    "from readmit.pipeline.train import train; from readmit.settings import Settings; "
    "train(Settings(), max_rounds=40, bootstrap_rounds=50)"
)


def train(env: dict[str, str]) -> None:
    """One training run in a process of its own, through the stack's MLflow, S3, PostgreSQL."""
    done = subprocess.run(
        [sys.executable, "-c", TRAIN], env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def ingest_and_clean(env: dict[str, str]) -> None:
    """What a training reads, for a test run alone (the module's first test leaves both)."""
    for step in (("ingest", "--all"), ("clean",)):
        done = cli(env, *step, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def stack_paths(env: dict[str, str]) -> Paths:
    return paths_for(Settings(data_dir=Path(env["READMIT_DATA_DIR"])))


def stack_up(env: dict[str, str]) -> None:
    done = cli(env, "stack", "up", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def stack_client_env(env: dict[str, str]) -> dict[str, str]:
    """What `readmit` commands need to work against the stack, from its stack.env."""
    lines = stack_paths(env).env_file.read_text().splitlines()
    return {**env, **dict(line.split("=", 1) for line in lines if "=" in line)}


def kill_9_everything(env: dict[str, str]) -> None:
    """SIGKILL every process group the stack recorded and every process it started."""
    paths = stack_paths(env)
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


def logged_in_registry(env: dict[str, str]) -> tuple[str, MlflowClient]:
    """The stack's MLflow URL, and a client logged in as the stack's services are."""
    client_env = stack_client_env(env)
    settings = Settings(
        mlflow_tracking_uri=client_env["MLFLOW_TRACKING_URI"],
        mlflow_tracking_username=client_env["MLFLOW_TRACKING_USERNAME"],
        mlflow_tracking_password=client_env["MLFLOW_TRACKING_PASSWORD"],
    )
    return client_env["MLFLOW_TRACKING_URI"], registry.client_for(settings)


def artifacts(env: dict[str, str], tmp: Path) -> dict[str, dict[str, str]]:
    """Version -> {file: sha256} of every registered version, downloaded through MLflow."""
    tracking, client = logged_in_registry(env)
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


def has_production(env: dict[str, str]) -> bool:
    return _production(env) is not None


def production_version(env: dict[str, str]) -> str:
    holder = _production(env)
    assert holder is not None
    return str(holder.version)


def _production(env: dict[str, str]) -> ModelVersion | None:
    _, client = logged_in_registry(env)
    return registry.by_alias(client, "readmission", registry.PRODUCTION)


def served(env: dict[str, str], version: str, timeout: float = 120) -> None:
    wait_until_served(f"http://127.0.0.1:{env['READMIT_API_PORT']}", version, timeout)


def wait_for_running_tasks(airflow: AirflowClient, timeout: float = 600) -> None:
    """A paused DAG starts no task, but one already started runs on: let each finish."""
    deadline = time.monotonic() + timeout
    for dag in DAGS:
        for run in airflow.runs(dag):
            while any(s in ACTIVE for _, s in airflow.task_states(dag, run["dag_run_id"])):
                assert time.monotonic() < deadline, f"{dag} {run['dag_run_id']} still running"
                time.sleep(1)


def check_after_kill(env: dict[str, str], before: dict, production: str, tmp: Path) -> None:
    kill_9_everything(env)
    stack_up(env)
    settings = Settings(data_dir=Path(env["READMIT_DATA_DIR"]), s3_port=int(env["READMIT_S3_PORT"]))
    s3 = next(s for s in status(settings) if s.name == "s3")
    assert s3.healthy and f"objects on disk in {stack_paths(env).s3_store}" in s3.detail, s3
    served(env, production)
    assert production_version(env) == production
    assert artifacts(env, tmp) == before
