"""Start, watch and stop the local server processes: the MLflow tracking server and a local
S3-compatible server (s3rver over a folder, see s3server/) standing in for MinIO where no
MinIO runs.

Each process gets its own process group, so stopping it stops every child it started.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from readmit.errors import ReadmitError, first_line
from readmit.files import SOURCE_ROOT, private_dir
from readmit.settings import Settings
from readmit.stack.s3 import BUCKET


class ServiceError(ReadmitError):
    """A service did not start or did not become healthy."""


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
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_taken(port: int) -> bool:
    """Something already accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


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


def program(name: str) -> str:
    """An executable of this environment, found beside the running interpreter first."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def _spawn(name: str, command: list[str], env: dict[str, str], log: Path, url: str) -> Service:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return Service(name=name, process=process, url=url, log=log)


def s3_env(endpoint: str) -> dict[str, str]:
    """Credentials and endpoint for a local S3 server."""
    return {
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "readmit-local"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "readmit-local-secret"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }


S3_SERVER = SOURCE_ROOT / "s3server"
S3_HEALTH_PATH = "/_readmit/health"


def s3_server_problem() -> str | None:
    """Why the local S3 server cannot start here, or None."""
    if shutil.which("node") is None:
        return "`node` (Debian package nodejs)"
    if not (S3_SERVER / "server.js").exists():
        return f"{S3_SERVER / 'server.js'} (run from a checkout of the repository)"
    if not (S3_SERVER / "node_modules" / "s3rver").is_dir():
        return f"the S3 server's packages (`make s3server-deps`, or `npm ci --prefix {S3_SERVER}`)"
    return None


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
        "127.0.0.1",
        "--port",
        str(port),
        "--bucket",
        bucket,
    ]


def s3_server_env(access_key: str, secret_key: str) -> dict[str, str]:
    return {"S3_ACCESS_KEY": access_key, "S3_SECRET_KEY": secret_key}


def start_s3_server(port: int, log: Path, directory: Path, bucket: str = BUCKET) -> Service:
    """The local S3 server with `bucket`, its objects on disk under `directory`."""
    problem = s3_server_problem()
    if problem is not None:
        raise ServiceError(f"cannot start the S3 server: not installed: {problem}")
    env = s3_env(f"http://127.0.0.1:{port}")
    keys = s3_server_env(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    command = s3_server_command(directory, port, bucket)
    service = _spawn("s3", command, {**os.environ, **keys}, log, env["MLFLOW_S3_ENDPOINT_URL"])
    wait_healthy(service, S3_HEALTH_PATH, timeout=30)
    return service


def mlflow_server_command(settings: Settings) -> list[str]:
    """The `mlflow server` command line. It holds no secret: `ps` shows argv to every user, so
    the store URI (which may hold a password) travels in `mlflow_server_env`."""
    allowed = (
        ["--allowed-hosts", settings.mlflow_allowed_hosts] if settings.mlflow_allowed_hosts else []
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


def mlflow_server_env(settings: Settings) -> dict[str, str]:
    """What `mlflow server` needs in its environment on top of the caller's. With
    authentication on, this also writes the auth config and creates the users' database."""
    env = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_BACKEND_STORE_URI": settings.resolved_backend_store_uri,
    }
    if settings.mlflow_auth_db_url:
        env.update(_auth_env(settings, settings.mlflow_auth_db_url))
    return env


AUTH_CONFIG = "mlflow-auth.ini"


def _auth_env(settings: Settings, database_url: str) -> dict[str, str]:
    """MLflow's basic-auth app: config file (0600, it holds the database password), and the
    admin it creates on first start, who is also the login of readmit's clients."""
    username = settings.mlflow_tracking_username
    password = settings.mlflow_tracking_password
    secret = password.get_secret_value() if password else ""
    if not username or len(secret) < 12:
        raise ServiceError(
            "mlflow: READMIT_MLFLOW_AUTH_DB_URL turns authentication on, which needs "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (12 characters at least) "
            "for the admin login"
        )
    ensure_database(database_url)
    config = {
        "default_permission": "NO_PERMISSIONS",
        "database_uri": database_url,
        "admin_username": username,
        "admin_password": secret,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        # A password check costs a scrypt hash (about 0.1 s of CPU); without this cache every
        # request of the polling API and exporter pays it. One worker: nothing goes stale.
        "auth_cache_ttl_seconds": "60",
    }
    # configparser reads "%" as interpolation: double it.
    lines = ["[mlflow]", *(f"{k} = {v.replace('%', '%%')}" for k, v in config.items())]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = (settings.data_dir / AUTH_CONFIG).resolve()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("\n".join(lines) + "\n")
    csrf_key = hashlib.sha256(f"readmit-mlflow-csrf:{secret}".encode()).hexdigest()
    return {"MLFLOW_AUTH_CONFIG_PATH": str(path), "MLFLOW_FLASK_SERVER_SECRET_KEY": csrf_key}


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of `url` when it is missing (its login must be allowed to
    create databases then); a SQLite file is created by its first user."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database or _connects(url):
        return
    engine = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            query = sa.text("select 1 from pg_database where datname = :name")
            if conn.execute(query, {"name": parsed.database}).first() is None:
                name = conn.dialect.identifier_preparer.quote(parsed.database)
                conn.execute(sa.text(f"create database {name}"))
    except sa.exc.DBAPIError as exc:
        from readmit.storage.db import safe_url

        reason = first_line(exc.orig or exc)
        raise ServiceError(
            f"mlflow: cannot create the users' database {safe_url(url)}: {reason}"
        ) from exc
    finally:
        engine.dispose()


def _connects(url: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            return True
    except sa.exc.DBAPIError:
        return False
    finally:
        engine.dispose()


def standalone_mlflow_env(settings: Settings) -> dict[str, str]:
    """The whole environment of an MLflow server run on its own (not by the stack): this
    process's, the S3 endpoint of the settings, and `mlflow_server_env`."""
    env = dict(os.environ)
    if settings.s3_endpoint_url:
        env.update(s3_env(settings.s3_endpoint_url))
    return {**env, **mlflow_server_env(settings)}


def start_mlflow_server(settings: Settings, log: Path, timeout: float = 90) -> Service:
    """The MLflow tracking server of the settings, healthy when this returns."""
    private_dir(settings.data_dir)
    url = f"http://{settings.mlflow_host}:{settings.mlflow_port}"
    service = _spawn(
        "mlflow", mlflow_server_command(settings), standalone_mlflow_env(settings), log, url
    )
    wait_healthy(service, "/health", timeout=timeout)
    return service


def start_api(
    settings: Settings, log: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> Service:
    """`readmit serve` as a process; returns once it answers /health (ready or not)."""
    url = f"http://{settings.api_host}:{settings.api_port}"
    service = _spawn("api", [program("readmit"), "serve"], {**os.environ, **(env or {})}, log, url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and service.process.poll() is None:
        try:
            httpx.get(f"{url}/health", timeout=2.0)
            return service
        except httpx.HTTPError:
            time.sleep(0.3)
    service.stop()
    raise ServiceError(f"api did not start at {url}: see {log}")


def start_exporter(host: str, port: int, log: Path, env: dict[str, str] | None = None) -> Service:
    """`readmit exporter` as a process; returns once /metrics answers."""
    url = f"http://{host}:{port}"
    command = [program("readmit"), "exporter", "--host", host, "--port", str(port)]
    service = _spawn("exporter", command, {**os.environ, **(env or {})}, log, url)
    wait_healthy(service, "/metrics", timeout=60)
    return service


def start_prometheus(config: Path, port: int, storage: Path, log: Path) -> Service:
    """The Prometheus server (Debian's `prometheus`) on 127.0.0.1 with the given config."""
    command = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]
    service = _spawn("prometheus", command, dict(os.environ), log, f"http://127.0.0.1:{port}")
    wait_healthy(service, "/-/ready", timeout=60)
    return service
