"""The API, UI and MLflow images built and run for real with podman, wired as deployed; the
Airflow image built (its `on-python` target) and its DagBag read inside it.

deploy/podman/images.sh builds them on the Debian base it makes with mmdebstrap (upstream base
images may not be pullable); the three share their builder and runtime stages, so podman's
layer cache builds the second and third in seconds, and a rebuild with unchanged dependencies
takes seconds too. The MLflow image serves a registry on the test PostgreSQL with artifacts in
the local S3 server, behind MLflow's login; the host registers a model through it; the API
image loads that model from it and must answer /predict with the probability the host process
computes; the UI image calls that API. Each must run as uid 10001, pass the HEALTHCHECK its
Dockerfile declares, and stop on SIGTERM.

The containers reach the host's loopback (PostgreSQL, the S3 server, each other's published
ports) through slirp4netns, at 10.0.2.2. Skipped where podman is not installed
(`apt-get install podman runc mmdebstrap`); required in CI (READMIT_TEST_REQUIRE_SERVICES=1),
where .ci/run installs it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from readmit import registry
from readmit.model import ReadmissionModel
from readmit.serving.schemas import EXAMPLE
from readmit.settings import Settings
from readmit.stack.foreground import free_port, start_s3_server
from tests.containers import TAG, build, podman
from tests.databases import create_database, drop_database
from tests.models import MODEL_INPUTS, log_and_register

START_TIMEOUT_SECONDS = 300
# slirp4netns shows the host's 127.0.0.1 to a container as 10.0.2.2 when allowed to.
NETWORK = "slirp4netns:allow_host_loopback=true"
HOST = "10.0.2.2"
UID = "10001"
MLFLOW_USER = "readmit-images"
# The API image asks every caller for a key (READMIT_AUTH=keys).
IMAGE_KEY = "image-test-key"
# podman stop's exit code when the grace period ran out and it sent SIGKILL (128 + 9).
KILLED = 137


@pytest.fixture(scope="module")
def images() -> None:
    """The API, UI and MLflow images."""
    build("api", "ui", "mlflow")


@dataclass
class Container:
    name: str
    url: str


def _wait_ready(container: Container, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{container.url}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    logs = podman("logs", "--tail", "40", container.name)
    pytest.fail(
        f"{container.name} not ready within {START_TIMEOUT_SECONDS} s:\n{logs.stdout}{logs.stderr}"
    )


READY_PATHS = {"mlflow": "/health", "api": "/health", "ui": "/_stcore/health"}


def _run(image: str, port: int, env: dict[str, str], ready_path: str) -> Iterator[Container]:
    """The image as a detached container, its port published on a free loopback port; ready
    (`ready_path` answers 200) when this yields; removed afterwards."""
    name = f"readmit-{image}-test-{os.getpid()}"
    published = free_port()
    options = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    started = podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        NETWORK,
        "--publish",
        f"127.0.0.1:{published}:{port}",
        # No timer for the HEALTHCHECK (it needs systemd); the test runs it itself.
        "--health-interval",
        "disable",
        *options,
        f"readmit-{image}:{TAG}",
    )
    assert started.returncode == 0, started.stderr
    container = Container(name, f"http://127.0.0.1:{published}")
    try:
        _wait_ready(container, ready_path)
        yield container
    finally:
        _remove(name)


def _remove(name: str) -> None:
    for _ in range(3):
        podman("rm", "--force", "--time", "5", name)
        if podman("container", "exists", name).returncode != 0:
            return
    pytest.fail(f"container {name} could not be removed")


def _seen_from_a_container(url: str) -> str:
    """A URL of a service on the host's loopback, as a container reaches it."""
    return make_url(url).set(host=HOST).render_as_string(hide_password=False)


@dataclass
class Registry:
    container: Container
    login: dict[str, str]
    s3_store: Path


@pytest.fixture(scope="module")
def mlflow_container(
    images: None,
    pg_admin_url: str,
    s3_server_installed: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Registry]:
    """The MLflow image on the test PostgreSQL (store and users' database) and the S3 server,
    behind its login; the login is in this process's environment while the module runs."""
    logs = tmp_path_factory.mktemp("mlflow-image")
    backend = create_database(pg_admin_url)
    users = create_database(pg_admin_url)
    s3 = start_s3_server(free_port(), logs / "s3.log", logs / "s3store")
    login = {
        "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
        "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(18),
    }
    env = {
        "READMIT_MLFLOW_BACKEND_STORE_URI": _seen_from_a_container(backend),
        "READMIT_MLFLOW_AUTH_DB_URL": _seen_from_a_container(users),
        "READMIT_MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow-artifacts",
        "READMIT_S3_ENDPOINT_URL": s3.url.replace("127.0.0.1", HOST),
        **login,
    }
    # This process cannot reach the S3 server at the address the MLflow server names it by
    # (10.0.2.2): it downloads artifacts through the server, not from presigned S3 URLs.
    host_env = {**login, "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}
    saved = {name: os.environ.get(name) for name in host_env}
    os.environ.update(host_env)
    try:
        for container in _run("mlflow", 5000, env, READY_PATHS["mlflow"]):
            yield Registry(container, login, logs / "s3store")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        s3.stop()
        drop_database(pg_admin_url, backend)
        drop_database(pg_admin_url, users)


@pytest.fixture(scope="module")
def production(
    mlflow_container: Registry,
    small_data,
    lightgbm_model: ReadmissionModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The module's trained model registered through the MLflow container and promoted; its
    version."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("client"),
        mlflow_tracking_uri=mlflow_container.container.url,
    )
    version = log_and_register(settings, lightgbm_model, small_data.test_inputs[MODEL_INPUTS])
    registry.promote(settings, version)
    return version


@pytest.fixture(scope="module")
def api_container(mlflow_container: Registry, production: str) -> Iterator[Container]:
    """The API image serving @production from the MLflow container, ready (a model loaded)."""
    env = {
        "MLFLOW_TRACKING_URI": mlflow_container.container.url.replace("127.0.0.1", HOST),
        "READMIT_MODEL_POLL_SECONDS": "3600",
        "READMIT_API_KEY": IMAGE_KEY,
        **mlflow_container.login,
    }
    yield from _run("api", 8000, env, READY_PATHS["api"])


@pytest.fixture(scope="module")
def ui_container(api_container: Container) -> Iterator[Container]:
    env = {
        "READMIT_API_URL": api_container.url.replace("127.0.0.1", HOST),
        "READMIT_API_KEY": IMAGE_KEY,
    }
    yield from _run("ui", 8501, env, READY_PATHS["ui"])


@pytest.fixture(scope="module")
def containers(
    mlflow_container: Registry, api_container: Container, ui_container: Container
) -> dict[str, Container]:
    return {"mlflow": mlflow_container.container, "api": api_container, "ui": ui_container}


def test_mlflow_container_keeps_the_registered_model_in_the_s3_server(
    mlflow_container: Registry, production: str
) -> None:
    # The S3 server keeps an object's body in a file named after its key.
    stored = [p.name for p in mlflow_container.s3_store.rglob("*") if p.is_file()]
    assert any(name.startswith("MLmodel") for name in stored), stored[:20]


def test_api_container_serves_the_production_model_of_the_mlflow_container(
    api_container: Container, production: str
) -> None:
    health = httpx.get(f"{api_container.url}/health", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["model"]["version"] == production


def test_api_container_predicts_what_the_host_process_predicts(
    api_container: Container, lightgbm_model: ReadmissionModel
) -> None:
    url = f"{api_container.url}/predict"
    assert httpx.post(url, json=EXAMPLE, timeout=30).status_code == 401
    response = httpx.post(url, json=EXAMPLE, headers={"X-API-Key": IMAGE_KEY}, timeout=30)
    assert response.status_code == 200, response.text
    record = {k: ("?" if v is None else v) for k, v in EXAMPLE.items()}
    assert response.json()["probability"] == pytest.approx(
        lightgbm_model.predict_record(record), abs=1e-12
    )


def test_ui_container_answers_its_health(ui_container: Container) -> None:
    response = httpx.get(f"{ui_container.url}/_stcore/health", timeout=10)
    assert response.status_code == 200
    assert response.text.strip() == "ok"


@pytest.mark.parametrize("image", ["mlflow", "api", "ui"])
def test_container_runs_as_the_unprivileged_user(
    containers: dict[str, Container], image: str
) -> None:
    user = podman("exec", containers[image].name, "id", "-u")
    assert user.returncode == 0, user.stderr
    assert user.stdout.strip() == UID


@pytest.mark.parametrize("image", ["mlflow", "api", "ui"])
def test_container_passes_its_declared_healthcheck(
    containers: dict[str, Container], image: str
) -> None:
    name = containers[image].name
    declared = podman("inspect", "--format", "{{json .Config.Healthcheck}}", name)
    assert "readmit-healthcheck" in declared.stdout, declared.stdout + declared.stderr
    check = podman("healthcheck", "run", name)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("image", ["mlflow", "ui", "api"])
def test_container_stops_on_sigterm(containers: dict[str, Container], image: str) -> None:
    """Within podman's 3 s grace period, so not killed (exit code 137 would say it was). The
    container is started again afterwards, so the module's other tests pass in any order."""
    name = containers[image].name
    try:
        stopped = podman("stop", "--time", "3", name)
        assert stopped.returncode == 0, stopped.stderr
        state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)
        status, code = state.stdout.split()
        assert status == "exited"
        assert int(code) != KILLED, podman("logs", "--tail", "20", name).stderr
    finally:
        started = podman("start", name)
        assert started.returncode == 0, started.stderr
        _wait_ready(containers[image], READY_PATHS[image])


# ---- Airflow: its on-python target, as images.sh builds it on the local base ----------------

AIRFLOW_UID = "50000"
DAGBAG = (
    "import json; from airflow.models.dagbag import DagBag; bag = DagBag(); "
    "print(json.dumps({'dags': sorted(bag.dags), 'errors': sorted(bag.import_errors)}))"
)


@pytest.fixture(scope="module")
def airflow_image() -> str:
    """The Airflow image: its on-python target, as images.sh builds it on the local base."""
    build("airflow")
    return f"readmit-airflow:{TAG}"


def _in_airflow_image(image: str, *command: str) -> subprocess.CompletedProcess[str]:
    return podman("run", "--rm", "--network", "none", image, *command, timeout=300)


def test_airflow_image_parses_every_dag_of_the_project(airflow_image: str) -> None:
    """The image's DagBag (its Airflow, its readmit, its DAG folder) holds the four DAGs."""
    from tests.airflow.test_dagbag import DAG_IDS

    parsed = _in_airflow_image(airflow_image, "python", "-c", DAGBAG)
    assert parsed.returncode == 0, parsed.stdout[-2000:] + parsed.stderr[-2000:]
    found = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert found == {"dags": sorted(DAG_IDS), "errors": []}


def test_airflow_image_runs_airflow_as_its_unprivileged_user(airflow_image: str) -> None:
    """As the official image: uid 50000 in group 0, and a bare subcommand goes to `airflow`."""
    who = _in_airflow_image(
        airflow_image, "python", "-c", "import os; print(os.getuid(), os.getgid())"
    )
    assert who.stdout.split() == [AIRFLOW_UID, "0"], who.stderr[-2000:]
    version = _in_airflow_image(airflow_image, "version")
    assert version.returncode == 0, version.stderr[-2000:]
    assert version.stdout.strip().splitlines()[-1] == "3.3.2"
    declared = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", airflow_image)
    assert "/api/v2/monitor/health" in declared.stdout, declared.stdout + declared.stderr
