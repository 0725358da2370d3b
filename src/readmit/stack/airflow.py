"""Airflow 3 for the stack: its environment (LocalExecutor, PostgreSQL metadata, the project's
DAGs), its admin login, and a small client of its REST API."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from readmit.errors import ReadmitError
from readmit.files import SOURCE_ROOT

ADMIN = "admin"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class AirflowError(ReadmitError):
    """The Airflow REST API refused or failed a call."""


def dags_folder() -> Path:
    """The repository's dags/ (the package is installed in editable mode beside it)."""
    return SOURCE_ROOT / "dags"


def airflow_env(
    home: Path, metadata_url: str, port: int, parallelism: int, jwt_secret: str
) -> dict[str, str]:
    """AIRFLOW__* variables; psycopg 3 serves both the sync and the async metadata engine."""
    base_url = f"http://127.0.0.1:{port}"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }


def write_passwords(home: Path, password: str) -> None:
    """The simple auth manager reads the admin's password from this file."""
    home.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(home / "passwords.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(json.dumps({ADMIN: password}))


def component_command(airflow_bin: str, component: str, port: int) -> list[str]:
    """The scheduler and triggerer skip their log servers, which bind every interface; on one
    host the api-server reads the task logs from disk."""
    if component == "api-server":
        return [airflow_bin, "api-server", "--host", "127.0.0.1", "--port", str(port)]
    if component in ("scheduler", "triggerer"):
        return [airflow_bin, component, "--skip-serve-logs"]
    return [airflow_bin, component]


class AirflowClient:
    """The public REST API (/api/v2) with a JWT from the simple auth manager."""

    ATTEMPTS = 3

    def __init__(self, url: str, username: str, password: str, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            reply = self._http.post("/auth/token", json=self._credentials)
            if reply.status_code not in (200, 201):
                raise AirflowError(f"Airflow refused the login: HTTP {reply.status_code}")
            self._token = reply.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = self._request(method, f"/api/v2{path}", **kwargs)
        if reply.status_code >= 400:
            raise AirflowError(f"{method} {path}: HTTP {reply.status_code}: {reply.text[:300]}")
        return reply.json() if reply.content else None

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One call; a read or an idempotent update that times out is sent again. The
        api-server (one worker) can stall past the timeout while it serves the tasks' own
        calls on a busy machine; a new run (POST) is never sent twice."""
        retries = self.ATTEMPTS - 1 if method in ("GET", "PATCH") else 0
        for _ in range(retries):
            try:
                return self._http.request(method, url, headers=self._headers(), **kwargs)
            except httpx.TimeoutException:
                continue
        return self._http.request(method, url, headers=self._headers(), **kwargs)

    def dag(self, dag_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/dags/{dag_id}"))

    def pause(self, dag_id: str) -> None:
        """No new runs of the DAG (scheduled or asset-triggered) until it is unpaused."""
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str) -> str:
        run = self._call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})
        return str(run["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        reply = self._call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})
        return list(reply["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        return self._call("GET", path).get("state")

    def task_states(self, dag_id: str, run_id: str) -> list[tuple[str, str | None]]:
        """(task id, state) of every task instance of one run."""
        found = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return [(ti["task_id"], ti.get("state")) for ti in found["task_instances"]]

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self._call("GET", path)["value"]

    def failures(self, dag_id: str, run_id: str, lines: int = 40) -> str:
        """The last `lines` lines of the log of each failed task of one run: what a failed run
        says about itself, without a shell in the scheduler's host or container."""
        found = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        shown = []
        for ti in found["task_instances"]:
            if ti.get("state") not in ("failed", "upstream_failed"):
                continue
            shown.append(f"--- {ti['task_id']} ({ti.get('state')})")
            tries = int(ti.get("try_number") or 0)
            if tries == 0:  # never started (upstream_failed): no log
                continue
            path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{tries}"
            try:
                reply = self._call("GET", path, params={"full_content": True})
            except AirflowError as error:
                shown.append(f"(no log: {error})")
                continue
            events = [_log_line(entry) for entry in (reply or {}).get("content", [])]
            shown.extend(events[-lines:])
        return "\n".join(shown)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """Poll until the run is success or failed; AirflowError on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(1.0)
        raise AirflowError(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")

    def wait_for_dags(self, dag_ids: list[str], timeout: float) -> None:
        """Wait until the dag processor has parsed every DAG."""
        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while time.monotonic() < deadline:
            missing = [d for d in dag_ids if not self._exists(d)]
            if not missing:
                return
            time.sleep(1.0)
        raise AirflowError(f"DAGs not parsed within {timeout:.0f} s: {missing}")

    def _exists(self, dag_id: str) -> bool:
        try:
            self.dag(dag_id)
            return True
        except AirflowError:
            return False


def _log_line(entry: Any) -> str:
    """One structured task log entry as text, with the exception it carries, if any."""
    if not isinstance(entry, dict):
        return str(entry)
    errors = [
        f"{e.get('exc_type')}: {e.get('exc_value')}"
        for e in entry.get("error_detail") or []
        if isinstance(e, dict)
    ]
    return " | ".join([str(entry.get("event", "")), *errors])
