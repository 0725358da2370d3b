"""What the stack tests share: the `readmit` command, a stack environment on free ports, the
reads of a running stack's Airflow runs and prediction log, and the wait for the API to serve a
version in every worker."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from readmit.stack import postgres, processes
from readmit.stack.airflow import AirflowClient
from readmit.stack.foreground import free_port
from readmit.storage import monitor

READMIT = str(Path(sys.executable).parent / "readmit")
PORTS = ("API", "UI", "MLFLOW", "S3", "AIRFLOW", "EXPORTER", "PROMETHEUS")


def cli(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """Runs `readmit ARGS` in a process of its own with ENV."""
    return subprocess.run(
        [READMIT, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def free_ports() -> dict[str, str]:
    """One free port per stack service, as the READMIT_*_PORT settings."""
    return {f"READMIT_{name}_PORT": str(free_port()) for name in PORTS}


@contextmanager
def stack_environment(
    pg_admin_url: str, dataset_uri: str, data_dir: Path, kind: str
) -> Iterator[dict[str, str]]:
    """A stack on free ports and prefixed databases, so a user's stack is never touched; it is
    stopped and its databases dropped afterwards."""
    prefix = f"readmit_{kind}_{secrets.token_hex(3)}_"
    env = {
        **os.environ,
        "READMIT_DATA_DIR": str(data_dir),
        "READMIT_DATASET_URI": dataset_uri,
        "READMIT_STACK_POSTGRES_URL": pg_admin_url,
        "READMIT_STACK_DB_PREFIX": prefix,
        "READMIT_MODEL_POLL_SECONDS": "2",
        **free_ports(),
    }
    try:
        yield env
    finally:
        if processes.records(data_dir / "stack" / "run"):
            cli(env, "stack", "down", timeout=300)
        postgres.drop_databases(pg_admin_url, prefix)


def xcom(airflow: AirflowClient, dag_id: str, run_id: str, task: str) -> dict:
    value = airflow.xcom(dag_id, run_id, task)
    return value if isinstance(value, dict) else json.loads(value)


def logged_patient_key(engine: sa.engine.Engine, request_id: str) -> str | None:
    """The patient key of the logged prediction of one request, once it is there."""
    query = sa.select(monitor.predictions.c.patient_key).where(
        monitor.predictions.c.request_id == request_id
    )
    try:
        with engine.connect() as conn:
            return conn.execute(query).scalar()
    except sa.exc.ProgrammingError:  # the table is made by the first write
        return None


def settled_runs(airflow: AirflowClient, dag_id: str) -> list[dict]:
    runs = airflow.runs(dag_id)
    return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else []


def wait_until_served(api: str, version: str, timeout: float = 120) -> None:
    """Until every worker of the API at `api` serves `version` (a caller's request may reach
    any of them)."""
    deadline = time.monotonic() + timeout
    health: httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{api}/health", timeout=5)
        except httpx.HTTPError:
            health = None
        if health is not None and health.status_code == 200:
            body = health.json()
            workers = body["workers"] or {version: 1}
            if body["model"]["version"] == version and list(workers) == [version]:
                return
        time.sleep(1)
    pytest.fail(f"the API never served v{version} in every worker: {health and health.text}")
