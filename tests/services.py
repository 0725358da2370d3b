"""Servers the tests start around themselves (the stack starts its own): the MLflow tracking
server, the pipeline exporter and Prometheus, from the commands of the service table."""

from __future__ import annotations

import os
from pathlib import Path

from readmit.files import private_dir
from readmit.settings import Settings
from readmit.stack import services
from readmit.stack.foreground import Service, spawn, wait_healthy
from readmit.stack.mlflow_server import standalone_mlflow_env


def start_mlflow_server(settings: Settings, log: Path, timeout: float = 300) -> Service:
    """The MLflow tracking server of the settings, healthy when this returns. The server imports
    MLflow twice (its command, then its worker): on a busy machine that alone takes over a minute."""
    private_dir(settings.data_dir)
    url = f"http://{settings.mlflow_host}:{settings.mlflow_port}"
    command = services.mlflow_server_command(settings)
    service = spawn(services.MLFLOW.name, command, standalone_mlflow_env(settings), log, url)
    wait_healthy(service, services.MLFLOW.health_path, timeout=timeout)
    return service


def start_exporter(host: str, port: int, log: Path, env: dict[str, str] | None = None) -> Service:
    """`readmit exporter` as a process; returns once /metrics answers."""
    command = services.exporter_command(host, port)
    url = f"http://{host}:{port}"
    service = spawn(services.EXPORTER.name, command, {**os.environ, **(env or {})}, log, url)
    wait_healthy(service, services.EXPORTER.health_path, timeout=60)
    return service


def start_prometheus(config: Path, port: int, storage: Path, log: Path) -> Service:
    """The Prometheus server (Debian's `prometheus`) on 127.0.0.1 with the given config."""
    command = services.prometheus_command(config, storage, port)
    url = f"http://{services.HOST}:{port}"
    service = spawn(services.PROMETHEUS.name, command, dict(os.environ), log, url)
    wait_healthy(service, services.PROMETHEUS.health_path, timeout=60)
    return service
