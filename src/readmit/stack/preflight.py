"""Before `readmit stack up` starts anything: the programs and files it needs are there, no
other program holds a service's port, and which PostgreSQL the stack uses."""

from __future__ import annotations

import shutil

from readmit.files import SOURCE_ROOT
from readmit.settings import Settings
from readmit.stack import airflow, postgres, processes, s3, services
from readmit.stack.credentials import load_secrets
from readmit.stack.endpoints import endpoints_for
from readmit.stack.errors import StackError
from readmit.stack.launch import Stack
from readmit.stack.layout import Paths, paths_for

PROMETHEUS_CONFIG = SOURCE_ROOT / "observability" / "prometheus"
INSTALL_HINTS = {
    "prometheus": "Debian package prometheus",
    "airflow": "`pip install -e '.[stack]'`, or `make install`",
    "mlflow": "`make install`",
    "readmit": "`make install`",
}


def prepare(settings: Settings) -> Stack:
    paths = paths_for(settings)
    server_url, private = _server_url(settings, paths)
    return Stack(
        settings=settings,
        paths=paths,
        secrets=load_secrets(paths, settings),
        endpoints=endpoints_for(settings, server_url),
        private_postgres=private,
    )


def _server_url(settings: Settings, paths: Paths) -> tuple[str, bool]:
    """The PostgreSQL to use: the private cluster while the stack runs one, else the configured
    server if it answers, else a private cluster."""
    rec = processes.record(paths.run, services.POSTGRES) if paths.run.exists() else None
    if rec is not None and rec.running:
        return _private_url(settings, paths), True
    problem = postgres.connection_problem(settings.stack_postgres_url)
    if problem is None:
        return settings.stack_postgres_url, False
    if "authentication" in problem or "password" in problem:
        raise StackError(f"PostgreSQL at READMIT_STACK_POSTGRES_URL refused the login: {problem}")
    return _private_url(settings, paths), True


def _private_url(settings: Settings, paths: Paths) -> str:
    password = load_secrets(paths, settings).postgres_password
    return postgres.private_cluster_url(settings.stack_private_pg_port, password)


def check_programs() -> None:
    """Every program the stack runs, and the files it reads, before anything starts."""
    missing = [
        f"`{p}` ({INSTALL_HINTS[p]})"
        for p in INSTALL_HINTS
        if shutil.which(services.program(p)) is None
    ]
    s3_problem = s3.s3_server_problem()
    if s3_problem is not None:
        missing.append(s3_problem)
    for needed in (airflow.dags_folder(), PROMETHEUS_CONFIG / "prometheus.yml"):
        if not needed.exists():
            missing.append(f"{needed} (run the stack from a checkout of the repository)")
    if missing:
        raise StackError("not installed: " + "; ".join(missing))


def check_ports(stack: Stack) -> None:
    """Refuse to start when another program holds a service's port: its health checks would
    answer for a service that is not the stack's."""
    taken = []
    for spec in services.HTTP_SERVICES:
        if not spec.listens:
            continue
        rec = processes.record(stack.paths.run, spec.name)
        port = spec.port(stack.settings)
        if (rec is None or not rec.running) and services.port_taken(port):
            taken.append(f"{spec.name} port {port} (set {spec.port_setting})")
    if taken:
        raise StackError(
            "ports already in use by another program: " + "; ".join(taken) + ". Stop that "
            "program or move the service to a free port."
        )
