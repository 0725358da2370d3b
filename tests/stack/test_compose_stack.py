"""deploy/compose/docker-compose.yml run for real with podman-compose, taken through its life
in order: the project's images started in the three steps of deploy/README.md with
host-services.yml (the host's PostgreSQL and a local S3 server stand in for the upstream
images, which cannot be pulled here); DAG 1 triggered through Airflow's REST API, DAGs 2 and 3
run from their Assets inside the scheduler's container; the API container serves the version
DAG 3 promoted, to a caller with a key of the key file make-api-keys.sh wrote, and logs the
prediction to monitor-db; Prometheus from Debian, on the host with the one-host
configuration, scrapes the API and exporter containers; `down -v` leaves no container and no
volume of the project.

It uses the fixed ports and database names of the Compose file: it skips (fails in CI) when
one of the ports is taken or the host's PostgreSQL already has one of the databases or users.
The data set is its first 15,000 rows (one batch); the tuning budget is 10 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from readmit import registry
from readmit.monitoring.pseudonym import pseudonym
from readmit.serving.schemas import EXAMPLE
from readmit.settings import Settings
from readmit.stack import services
from readmit.stack.airflow import AirflowClient
from readmit.stack.foreground import Service, spawn, start_s3_server, wait_healthy
from readmit.stack.s3 import s3_env
from tests.conftest import _unavailable
from tests.containers import REPO, build
from tests.stack import compose
from tests.stack.durability import DAGS
from tests.stack.stack import logged_patient_key, settled_runs, wait_until_served, xcom
from tests.subset import write_subset

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.in_order]
ROWS = 15_000
INGEST, CLEAN, TRAIN = DAGS
READY_TIMEOUT_SECONDS = 300
PROMETHEUS = "http://127.0.0.1:9090"
HEALTH = {
    "mlflow": "http://127.0.0.1:5000/health",
    "airflow": "http://127.0.0.1:8080/api/v2/monitor/health",
    "api": "http://127.0.0.1:8000/health",
    "ui": "http://127.0.0.1:8501/_stcore/health",
    "exporter": "http://127.0.0.1:9108/metrics",
}


@pytest.fixture(scope="module")
def project(
    pg_admin_url: str,
    dataset_uri: str,
    s3_server_installed: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[compose.Project]:
    """The project's folder and its databases and S3 server on the host, not yet up; taken
    down (`down -v`) and removed afterwards."""
    if shutil.which("podman") is None or not Path(compose.PODMAN_COMPOSE).exists():
        _unavailable("podman or podman-compose is not installed (apt-get install podman)")
    build("mlflow", "airflow", "api", "ui")
    taken = compose.occupied_ports()
    if taken:
        _unavailable(f"the Compose stack's ports are in use: {', '.join(taken)}")
    keys = s3_env("http://127.0.0.1:9000")
    values = compose.credentials(keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"])
    try:
        compose.create_databases(pg_admin_url, values)
    except RuntimeError as clash:
        _unavailable(str(clash))
    folder = tmp_path_factory.mktemp("compose")
    (folder / "project").mkdir()
    project = None
    s3 = start_s3_server(compose.PORTS["s3"], folder / "s3.log", folder / "s3store")
    prometheus = _start_prometheus(folder)
    try:
        csv, sha256 = write_subset(dataset_uri, ROWS, tmp_path_factory.mktemp("compose-data"))
        project = compose.write_project(folder / "project", "readmitcompose", values, csv, sha256)
        yield project
    finally:
        if project is not None and project.containers():
            project.compose("down", "-v", timeout=300)
        prometheus.stop()
        s3.stop()
        compose.drop_databases(pg_admin_url)


def _start_prometheus(folder: Path) -> Service:
    if shutil.which("prometheus") is None:
        _unavailable("prometheus is not installed (apt-get install prometheus)")
    port = compose.PORTS["prometheus"]
    command = services.prometheus_command(compose.PROMETHEUS_CONFIG, folder / "tsdb", port)
    prometheus = spawn(
        "prometheus", command, dict(os.environ), folder / "prometheus.log", PROMETHEUS
    )
    wait_healthy(prometheus, services.PROMETHEUS.health_path, timeout=60)
    return prometheus


def _scraped(job: str) -> bool:
    """Prometheus's last scrape of `job` succeeded."""
    reply = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": f'up{{job="{job}"}}'})
    result = reply.json()["data"]["result"]
    return bool(result) and result[0]["value"][1] == "1"


def _answers(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


def test_compose_stack_comes_up_in_three_steps(project: compose.Project) -> None:
    clock = time.monotonic()
    steps = project.up()
    running = set(project.containers())
    assert running == {
        project.container(s) for s in compose.FIRST + compose.MIGRATION + compose.REST
    }
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    codes: dict[str, int | None] = {}
    while time.monotonic() < deadline:
        codes = {name: _answers(url) for name, url in HEALTH.items()}
        # The API answers 503 until a version is @production.
        if all(code == 200 for name, code in codes.items() if name != "api") and codes["api"]:
            break
        time.sleep(2)
    else:
        failing = [name for name, code in codes.items() if code not in (200, 503)]
        logs = "\n".join(f"--- {n}\n{project.logs(n)}" for n in failing if n != "airflow")
        pytest.fail(f"services not answering after {READY_TIMEOUT_SECONDS} s: {codes}\n{logs}")
    assert codes["api"] == 503
    assert project.state("airflow-init") == "exited 0"
    print(
        f"compose stack: three podman-compose steps {steps:.1f} s, every service answering "
        f"{time.monotonic() - clock:.1f} s after the first"
    )


def _airflow(project: compose.Project) -> AirflowClient:
    return AirflowClient("http://127.0.0.1:8080", "admin", project.env["AIRFLOW_ADMIN_PASSWORD"])


def test_compose_stack_trains_through_its_dags_and_serves_the_model(
    project: compose.Project, pg_admin_url: str
) -> None:
    clock = time.monotonic()
    airflow = _airflow(project)
    airflow.wait_for_dags(DAGS, timeout=300)

    # DAG 1 on its schedule (its latest interval runs at once) and through the REST API: the
    # one batch is loaded exactly once.
    run_id = airflow.trigger(INGEST)
    loaded: list[int] = []
    for run in airflow.runs(INGEST):
        done = airflow.wait_for_run(INGEST, run["dag_run_id"], timeout=300)
        assert done["state"] == "success", airflow.failures(INGEST, run["dag_run_id"])
        loaded += xcom(airflow, INGEST, run["dag_run_id"], "ingest_next_batch")["batch_ids"]
    assert run_id in {r["dag_run_id"] for r in airflow.runs(INGEST)}
    assert loaded == [1]

    # DAGs 2 and 3 from their Assets, until the model trained on batch 1 is registered.
    mlflow = registry.client_for(
        Settings(
            mlflow_tracking_uri="http://127.0.0.1:5000",
            mlflow_tracking_username="readmit",
            mlflow_tracking_password=project.env["MLFLOW_TRACKING_PASSWORD"],
        )
    )
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        versions = mlflow.search_model_versions("name = 'readmission'")
        cleans, trains = settled_runs(airflow, CLEAN), settled_runs(airflow, TRAIN)
        if versions and cleans and trains:
            break
        time.sleep(5)
    else:
        pytest.fail(f"no model registered in time:\n{project.logs('airflow-scheduler')}")
    assert all(r["state"] == "success" for r in cleans + trains), cleans + trains
    assert all(r["run_type"] == "asset_triggered" for r in cleans + trains)
    production = mlflow.get_model_version_by_alias("readmission", "production")
    assert production.tags["readmit.raw_batches"] == "1"
    # The Airflow image names the commit it was built from (images.sh), the model's lineage.
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert production.tags["readmit.git_commit"] == head.stdout.strip()
    airflow.close()

    # The API container loads it (it polls every 3 s) and answers a caller with the UI's key.
    api = "http://127.0.0.1:8000"
    wait_until_served(api, production.version)
    served = time.monotonic()
    assert httpx.post(f"{api}/predict", json=EXAMPLE, timeout=30).status_code == 401
    predicted = httpx.post(
        f"{api}/predict",
        json=EXAMPLE,
        headers={"X-API-Key": project.env["READMIT_UI_API_KEY"]},
        timeout=30,
    )
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["model"]["version"] == production.version

    # Logged in monitor-db under the pseudonym of the .env's key.
    engine = sa.create_engine(compose.database_url(pg_admin_url, "monitor", project.env))
    deadline = time.monotonic() + 30
    while (logged := logged_patient_key(engine, predicted.json()["request_id"])) is None:
        assert time.monotonic() < deadline, "the prediction was never logged"
        time.sleep(0.5)
    engine.dispose()
    key = project.env["READMIT_PSEUDONYM_KEY"].encode()
    assert logged == pseudonym(key, EXAMPLE["patient_nbr"])

    # The exporter container counts the batch's rows in raw-db.
    metrics = httpx.get(HEALTH["exporter"], timeout=10).text
    raw = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('readmit_pipeline_rows{table="raw_')
    ]
    assert sum(raw) == ROWS, metrics[:2000]

    # Prometheus on the host scrapes both containers by the one-host configuration.
    deadline = time.monotonic() + 60
    while not (_scraped("readmit-api") and _scraped("readmit-pipeline")):
        assert time.monotonic() < deadline, httpx.get(f"{PROMETHEUS}/api/v1/targets").text
        time.sleep(2)
    rules = httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert rules, "no alerting rule loaded"
    print(
        f"compose stack: DAGs 1-3 and v{production.version} served {served - clock:.0f} s "
        "after the trigger"
    )


def test_compose_down_removes_every_container_and_volume(project: compose.Project) -> None:
    assert project.volumes(), "the running project has no volume to remove"
    down = project.compose("down", "-v", timeout=300)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert project.containers() == []
    assert project.volumes() == []
    assert all(_answers(url) is None for url in HEALTH.values())
