"""A server process owned by the calling process: `readmit s3-server` in the foreground, and
the API that the bench scripts and tests start and stop around their runs.

Each process gets its own process group, so stopping it stops every child it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from readmit.settings import Settings
from readmit.stack import services
from readmit.stack.errors import ServiceError
from readmit.stack.s3 import BUCKET, s3_env, s3_server_problem


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self, timeout: float = 20.0) -> None:
        stop_process_group(self.process, timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((services.HOST, 0))
        return int(probe.getsockname()[1])


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after `timeout`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    except ProcessLookupError:
        pass


def spawn(name: str, command: list[str], env: dict[str, str], log: Path, url: str) -> Service:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return Service(name=name, process=process, url=url, log=log)


def wait_healthy(service: Service, path: str, timeout: float) -> None:
    """Poll `url + path` until it answers 200; fail with the log's tail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            break
        try:
            if httpx.get(service.url + path, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    tail = service.log.read_text(errors="replace").splitlines()[-5:] if service.log.exists() else []
    service.stop()
    raise ServiceError(
        f"{service.name} did not become healthy at {service.url}: {' | '.join(tail)}"
    )


def start_s3_server(port: int, log: Path, directory: Path, bucket: str = BUCKET) -> Service:
    """The local S3 server with `bucket`, its objects on disk under `directory`."""
    problem = s3_server_problem()
    if problem is not None:
        raise ServiceError(f"cannot start the S3 server: not installed: {problem}")
    env = s3_env(f"http://{services.HOST}:{port}")
    keys = services.s3_server_env(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    command = services.s3_server_command(directory, port, bucket)
    service = spawn(
        services.S3.name, command, {**os.environ, **keys}, log, env["MLFLOW_S3_ENDPOINT_URL"]
    )
    wait_healthy(service, services.S3.health_path, timeout=30)
    return service


def start_api(
    settings: Settings, log: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> Service:
    """`readmit serve` as a process; returns once it answers its health path (ready or not)."""
    url = f"http://{settings.api_host}:{settings.api_port}"
    full_env = {
        **os.environ,
        **services.api_env(settings.api_host, settings.api_port),
        **(env or {}),
    }
    service = spawn(services.API.name, services.api_command(), full_env, log, url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and service.process.poll() is None:
        try:
            httpx.get(url + services.API.health_path, timeout=2.0)
            return service
        except httpx.HTTPError:
            time.sleep(0.3)
    service.stop()
    raise ServiceError(f"api did not start at {url}: see {log}")
