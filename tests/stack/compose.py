"""The Compose stack of deploy/compose run with podman-compose on this host: the project's own
images, with the host's PostgreSQL and a local S3 server in place of the upstream images
(deploy/compose/host-services.yml), started in the three steps deploy/README.md gives.

Everything a project needs is written into a folder of its own: copies of the two Compose
files and of make-api-keys.sh, a .env of fresh credentials, the API's key file (written by
make-api-keys.sh) and an override that hands the scheduler a local copy of the data set.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.containers import REPO, podman, podman_env

COMPOSE = REPO / "deploy" / "compose"
PODMAN_COMPOSE = str(Path(sys.executable).parent / "podman-compose")
# The databases the Compose file names, each owned by the user of its name (mlflow_auth by
# mlflow), and the host ports its services listen on with the host's network.
DATABASES = {
    "raw": "raw",
    "clean": "clean",
    "monitor": "monitor",
    "airflow": "airflow",
    "mlflow": "mlflow",
    "mlflow_auth": "mlflow",
}
PORTS = {
    "mlflow": 5000,
    "api": 8000,
    "ui": 8501,
    "airflow": 8080,
    "scheduler health": 8974,
    "scheduler logs": 8793,
    "triggerer logs": 8794,
    "exporter": 9108,
    "s3": 9000,
    "prometheus": 9090,
}
# Debian's Prometheus with the one-host configuration: its targets, 127.0.0.1:8000 and :9108,
# are the API's and the exporter's ports on the host's network.
PROMETHEUS_CONFIG = REPO / "observability" / "prometheus" / "prometheus.yml"
FIRST = ["mlflow"]
MIGRATION = ["airflow-init"]
REST = [
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "api",
    "ui",
    "exporter",
]
DATASET_MOUNT = "/opt/airflow/dataset"
SETTINGS_PREFIXES = ("READMIT_", "MLFLOW_", "AIRFLOW_", "AWS_", "LOCUST_")


def credentials(s3_access_key: str, s3_secret_key: str) -> dict[str, str]:
    """A .env's values: each `change-me` of .env.example given a fresh value, the S3 key pair
    that of the local S3 server, the Fernet key in its own format."""
    names = [
        line.split("=", 1)[0]
        for line in (COMPOSE / ".env.example").read_text().splitlines()
        if re.match(r"[A-Z_0-9]+=change-me", line)
    ]
    values = {name: secrets.token_urlsafe(18) for name in names}
    values["MLFLOW_S3_ACCESS_KEY"] = s3_access_key
    values["MLFLOW_S3_SECRET_KEY"] = s3_secret_key
    values["AIRFLOW_FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    return values


@dataclass
class Project:
    """One Compose project in its own folder."""

    folder: Path
    name: str
    env: dict[str, str]
    log: Path
    files: list[str] = field(
        default_factory=lambda: ["docker-compose.yml", "host-services.yml", "dataset.yml"]
    )

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`podman-compose -f ... ARGS` in the project's folder; its output appended to the
        project's log."""
        options = [arg for name in self.files for arg in ("-f", name)]
        done = subprocess.run(
            [PODMAN_COMPOSE, *options, *args],
            cwd=self.folder,
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        with self.log.open("a") as out:
            out.write(f"$ podman-compose {' '.join(args)} -> {done.returncode}\n")
            out.write(done.stdout + done.stderr)
        return done

    def _environment(self) -> dict[str, str]:
        """podman's environment without the settings: Compose takes a variable of the calling
        environment over .env's (this process's READMIT_DATASET_URI over the project's)."""
        return {
            name: value
            for name, value in podman_env().items()
            if name not in self.env and not name.startswith(SETTINGS_PREFIXES)
        }

    def up(self) -> float:
        """The three steps of deploy/README.md; seconds they took. Raises on a failed step."""
        clock = time.monotonic()
        for step in (
            ("up", "-d", "--no-deps", *FIRST),
            ("up", "--no-deps", *MIGRATION),
            ("up", "-d", "--no-deps", *REST),
        ):
            done = self.compose(*step)
            if done.returncode != 0:
                raise RuntimeError(
                    f"podman-compose {' '.join(step)} failed:\n{done.stdout[-3000:]}"
                    f"{done.stderr[-3000:]}"
                )
        return time.monotonic() - clock

    def container(self, service: str) -> str:
        return f"{self.name}_{service}_1"

    def containers(self) -> list[str]:
        """Names of every container of the project, running or not."""
        label = f"label=io.podman.compose.project={self.name}"
        listed = podman("ps", "--all", "--filter", label, "--format", "{{.Names}}")
        assert listed.returncode == 0, listed.stderr
        return listed.stdout.split()

    def volumes(self) -> list[str]:
        listed = podman("volume", "ls", "--format", "{{.Name}}")
        assert listed.returncode == 0, listed.stderr
        return [v for v in listed.stdout.split() if v.startswith(f"{self.name}_")]

    def state(self, service: str) -> str:
        """`running 0`, `exited 0`, `exited 1`, ...: the container's status and exit code."""
        shown = podman(
            "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.container(service)
        )
        return shown.stdout.strip() or shown.stderr.strip()

    def logs(self, service: str, tail: int = 60) -> str:
        shown = podman("logs", "--tail", str(tail), self.container(service))
        return shown.stdout + shown.stderr


def write_project(
    folder: Path, name: str, values: dict[str, str], dataset: Path, sha256: str
) -> Project:
    """The project's folder: the Compose files, .env (`values` plus the settings), the key
    file, and the override that mounts `dataset`'s folder into the scheduler (where the
    LocalExecutor runs the tasks) and names its checksum."""
    for source in ("docker-compose.yml", "host-services.yml", "make-api-keys.sh"):
        shutil.copy2(COMPOSE / source, folder / source)
    env = {
        "COMPOSE_PROJECT_NAME": name,
        **values,
        "READMIT_DATASET_URI": f"{DATASET_MOUNT}/{dataset.name}",
        "READMIT_MODEL_POLL_SECONDS": "3",
        "READMIT_TUNE_SECONDS": "10",
    }
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    (folder / ".env").chmod(0o600)
    keys = subprocess.run(
        [str(folder / "make-api-keys.sh")], capture_output=True, text=True, check=False
    )
    if keys.returncode != 0:
        raise RuntimeError(f"make-api-keys.sh failed: {keys.stderr}")
    # The containers' users (uid 50000, 10001) read the data set through a bind mount.
    dataset.parent.chmod(0o755)
    dataset.chmod(0o644)
    (folder / "dataset.yml").write_text(
        "services:\n"
        "  airflow-scheduler:\n"
        "    volumes:\n"
        f"      - {dataset.parent}:{DATASET_MOUNT}:ro\n"
        "    environment:\n"
        f"      READMIT_DATASET_SHA256: {sha256}\n"
    )
    return Project(folder, name, env, folder / "podman-compose.log")


def occupied_ports() -> list[str]:
    """The ports the stack needs that something on this host already listens on."""
    taken = []
    for service, port in PORTS.items():
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(f"{port} ({service})")
    return taken


def create_databases(admin_url: str, values: dict[str, str]) -> None:
    """The users and databases the Compose file names, with the passwords of `values`.
    Raises if one exists already: those are someone else's."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            roles = set(conn.execute(sa.text("SELECT rolname FROM pg_roles")).scalars())
            databases = set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())
            clash = (roles & set(DATABASES.values())) | (databases & set(DATABASES))
            if clash:
                raise RuntimeError(
                    f"the host PostgreSQL already has {sorted(clash)}, which the Compose "
                    "stack would use"
                )
            for role in sorted(set(DATABASES.values())):
                password = values[f"{role.upper()}_DB_PASSWORD"]
                conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
            for database, owner in DATABASES.items():
                conn.execute(sa.text(f"CREATE DATABASE {database} OWNER {owner}"))
    finally:
        engine.dispose()


def drop_databases(admin_url: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for database in DATABASES:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            for role in sorted(set(DATABASES.values())):
                conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
    finally:
        engine.dispose()


def database_url(admin_url: str, database: str, values: dict[str, str]) -> str:
    """The URL of one of the stack's databases, as its owner, from this host."""
    owner = DATABASES[database]
    return (
        make_url(admin_url)
        .set(
            username=owner,
            password=values[f"{owner.upper()}_DB_PASSWORD"],
            database=database,
        )
        .render_as_string(hide_password=False)
    )
