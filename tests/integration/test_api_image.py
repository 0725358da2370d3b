"""The API image built and run for real with podman.

deploy/podman/images.sh builds it on the Debian base it makes with mmdebstrap (upstream base
images may not be pullable); podman's layer cache makes a rebuild with unchanged dependencies
take seconds. The container serves the registered model from a registry mounted into it: it
must run as uid 10001, pass the HEALTHCHECK its Dockerfile declares, and answer /predict with
the probability the host process computes for the same record.

Skipped where podman is not installed (`apt-get install podman runc mmdebstrap`): .ci/run does
not install it, since a first build costs minutes; `make images-local` builds the images.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from readmit.serving.schemas import EXAMPLE
from tests.integration.conftest import Served

REPO = Path(__file__).resolve().parents[2]
IMAGE = "readmit-api:0.1.0"
BUILD_TIMEOUT_SECONDS = 1800
START_TIMEOUT_SECONDS = 180
IMAGE_KEY = "image-test-key"


def _podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(REPO / "deploy" / "podman" / "containers.conf")}


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        env=_podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def api_image() -> str:
    """The API image, built from this checkout (cached layers are reused)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman runc mmdebstrap)")
    built = subprocess.run(
        [str(REPO / "deploy" / "podman" / "images.sh"), "--local-base", "api"],
        env=_podman_env(),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    logs = _podman("logs", "--tail", "40", name)
    pytest.fail(f"{name} not ready within {START_TIMEOUT_SECONDS} s:\n{logs.stdout}{logs.stderr}")


@pytest.fixture(scope="module")
def api_container(api_image: str, served: Served) -> Iterator[tuple[str, str]]:
    """The image serving the module's registry (mounted at its own path); removed afterwards."""
    folder = Path(served.settings.data_dir).resolve()
    # The container's user (10001) reads the registry and its artifacts, and SQLite writes
    # its journal beside the database.
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    name = f"readmit-api-test-{os.getpid()}"
    port = _free_port()
    started = _podman(
        "run",
        "--detach",
        "--name",
        name,
        # The image's own port (8000), which its HEALTHCHECK asks, published on loopback.
        "--publish",
        f"127.0.0.1:{port}:8000",
        # No timer for the HEALTHCHECK (it needs systemd); the test runs it itself.
        "--health-interval",
        "disable",
        "--volume",
        f"{folder}:{folder}",
        "--env",
        f"MLFLOW_TRACKING_URI=sqlite:///{folder}/mlflow.db",
        "--env",
        "READMIT_MODEL_POLL_SECONDS=3600",
        # The image asks every caller for a key (READMIT_AUTH=keys).
        "--env",
        f"READMIT_API_KEY={IMAGE_KEY}",
        api_image,
    )
    assert started.returncode == 0, started.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(f"{url}/health", name)
        yield name, url
    finally:
        _remove(name)


def _remove(name: str) -> None:
    for _ in range(3):
        _podman("rm", "--force", "--time", "5", name)
        if _podman("container", "exists", name).returncode != 0:
            return
    pytest.fail(f"container {name} could not be removed")


def test_api_container_runs_as_the_unprivileged_user(api_container: tuple[str, str]) -> None:
    name, _ = api_container
    user = _podman("exec", name, "id", "-u")
    assert user.returncode == 0, user.stderr
    assert user.stdout.strip() == "10001"


def test_api_container_passes_its_declared_healthcheck(api_container: tuple[str, str]) -> None:
    name, _ = api_container
    declared = _podman("inspect", "--format", "{{json .Config.Healthcheck}}", name)
    assert "readmit-healthcheck" in declared.stdout, declared.stdout + declared.stderr
    check = _podman("healthcheck", "run", name)
    assert check.returncode == 0, check.stdout + check.stderr


def test_api_container_predicts_what_the_host_process_predicts(
    api_container: tuple[str, str], served: Served
) -> None:
    _, url = api_container
    assert httpx.post(f"{url}/predict", json=EXAMPLE, timeout=30).status_code == 401
    headers = {"X-API-Key": IMAGE_KEY}
    response = httpx.post(f"{url}/predict", json=EXAMPLE, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    record = {k: ("?" if v is None else v) for k, v in EXAMPLE.items()}
    assert response.json()["probability"] == pytest.approx(
        served.model.predict_record(record), abs=1e-12
    )
    assert response.json()["model"]["version"] == "1"
