"""The one table of the local services: for each, the setting of the port it answers on, the
path that tells whether it is healthy and how to read that answer, and below it the command
line and environment that start it. `readmit stack`, the CLI's foreground servers, the bench
scripts and the tests all start and check their processes from here."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from readmit.settings import Settings
from readmit.stack import health
from readmit.stack.s3 import S3_SERVER

HOST = "127.0.0.1"
S3_HEALTH_PATH = "/_readmit/health"
AIRFLOW_HEALTH_PATH = "/api/v2/monitor/health"


@dataclass(frozen=True)
class ServiceSpec:
    """One HTTP service of the stack. `listens` is False for Airflow's scheduler, dag-processor
    and triggerer: they serve nothing, the api-server reports their health on its port.
    `attempts` health probes of 5 s each are made before a slow service counts as down."""

    name: str
    port_field: str
    health_path: str
    read: health.Reader = health.http_ok
    listens: bool = True
    attempts: int = 3

    @property
    def port_setting(self) -> str:
        """The environment variable that moves the service to another port."""
        return f"READMIT_{self.port_field.upper()}"

    def port(self, settings: Settings) -> int:
        return int(getattr(settings, self.port_field))

    def url(self, settings: Settings) -> str:
        return f"http://{HOST}:{self.port(settings)}"

    def check(self, settings: Settings) -> health.Health:
        """(healthy, detail) from one probe of the health path."""
        return self.read(health.get(self.url(settings) + self.health_path, self.attempts))


# Airflow's api-server runs one worker, which can stall for 20 s while it serves the tasks'
# own calls on a busy machine: its health is waited for longer.
AIRFLOW_ATTEMPTS = 6

S3 = ServiceSpec("s3", "s3_port", S3_HEALTH_PATH, health.s3_health)
MLFLOW = ServiceSpec("mlflow", "mlflow_port", "/health")
AIRFLOW_API_SERVER = ServiceSpec(
    "airflow-api-server", "airflow_port", AIRFLOW_HEALTH_PATH, attempts=AIRFLOW_ATTEMPTS
)
AIRFLOW_PARTS = tuple(
    ServiceSpec(
        f"airflow-{part}",
        "airflow_port",
        AIRFLOW_HEALTH_PATH,
        health.airflow_component(part.replace("-", "_")),
        listens=False,
        attempts=AIRFLOW_ATTEMPTS,
    )
    for part in ("scheduler", "dag-processor", "triggerer")
)
API = ServiceSpec("api", "api_port", "/health", health.api_health)
UI = ServiceSpec("ui", "ui_port", "/_stcore/health")
EXPORTER = ServiceSpec("exporter", "exporter_port", "/metrics")
PROMETHEUS = ServiceSpec("prometheus", "prometheus_port", "/-/ready")

# Start order; PostgreSQL, checked with a connection rather than HTTP, comes first.
HTTP_SERVICES = (S3, MLFLOW, AIRFLOW_API_SERVER, *AIRFLOW_PARTS, API, UI, EXPORTER, PROMETHEUS)
POSTGRES = "postgres"
NAMES = (POSTGRES, *(spec.name for spec in HTTP_SERVICES))
BY_NAME = {spec.name: spec for spec in HTTP_SERVICES}


def port_taken(port: int) -> bool:
    """Something already accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((HOST, port)) == 0


def program(name: str) -> str:
    """An executable of this environment, found beside the running interpreter first."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


# --- command lines and environments ------------------------------------------------------------


def s3_server_command(directory: Path, port: int, bucket: str) -> list[str]:
    """The local S3 server on 127.0.0.1:`port`, keeping `bucket` under `directory` on disk.
    Its access key pair is read from S3_ACCESS_KEY / S3_SECRET_KEY (see `s3_server_env`)."""
    # s3rver encrypts its list continuation tokens with DES, which OpenSSL 3 keeps in its
    # legacy provider: without it, a listing of more than 1000 keys fails.
    return [
        "node",
        "--openssl-legacy-provider",
        str(S3_SERVER / "server.js"),
        "--directory",
        str(directory),
        "--address",
        HOST,
        "--port",
        str(port),
        "--bucket",
        bucket,
    ]


def s3_server_env(access_key: str, secret_key: str) -> dict[str, str]:
    return {"S3_ACCESS_KEY": access_key, "S3_SECRET_KEY": secret_key}


def allowed_hosts(extra: str) -> str:
    """The Host headers `extra` names and MLflow's own defaults (localhost, private IPs):
    `--allowed-hosts` replaces those, and a server named `mlflow` would otherwise refuse the
    browser that reaches it at localhost:5000 through a published or forwarded port."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = [name.strip() for name in extra.split(",") if name.strip()]
    return ",".join(dict.fromkeys([*names, *get_default_allowed_hosts()]))


def mlflow_server_command(settings: Settings) -> list[str]:
    """The `mlflow server` command line. It holds no secret: `ps` shows argv to every user, so
    the store URI (which may hold a password) travels in `mlflow_auth.mlflow_server_env`."""
    allowed = (
        ["--allowed-hosts", allowed_hosts(settings.mlflow_allowed_hosts)]
        if settings.mlflow_allowed_hosts
        else []
    )
    auth = ["--app-name", "basic-auth"] if settings.mlflow_auth_db_url else []
    return [
        program("mlflow"),
        "server",
        "--artifacts-destination",
        settings.resolved_artifacts_destination,
        "--serve-artifacts",
        "--host",
        settings.mlflow_host,
        "--port",
        str(settings.mlflow_port),
        "--workers",
        "1",
        *auth,
        *allowed,
    ]


def api_command() -> list[str]:
    return [program("readmit"), "serve"]


def api_env(host: str, port: int) -> dict[str, str]:
    return {"READMIT_API_HOST": host, "READMIT_API_PORT": str(port)}


def api_workers(settings: Settings) -> int:
    """READMIT_API_WORKERS when set, otherwise one API worker per core."""
    if "api_workers" in settings.model_fields_set:
        return settings.api_workers
    return os.cpu_count() or 1


def ui_command() -> list[str]:
    return [program("readmit"), "ui"]


def ui_env(port: int) -> dict[str, str]:
    return {"READMIT_UI_HOST": HOST, "READMIT_UI_PORT": str(port)}


def exporter_command(host: str, port: int) -> list[str]:
    return [program("readmit"), "exporter", "--host", host, "--port", str(port)]


def prometheus_command(config: Path, storage: Path, port: int) -> list[str]:
    """The Prometheus server (Debian's `prometheus`) on 127.0.0.1 with the given config."""
    return [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address={HOST}:{port}",
        "--web.enable-lifecycle",
    ]
