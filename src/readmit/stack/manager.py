"""`readmit stack up | down | status`: the full stack on one machine, without containers.

PostgreSQL (raw, clean, monitor, airflow, mlflow), an S3 server with the artifact bucket, the MLflow
tracking server, Airflow 3 (api-server, scheduler, dag-processor, triggerer; LocalExecutor),
the API, the UI, the pipeline exporter and Prometheus, each bound to 127.0.0.1, with process
records and logs under <data dir>/stack.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa
import yaml
from pydantic import SecretStr

from readmit.errors import ReadmitError, first_line
from readmit.files import SOURCE_ROOT
from readmit.services import (
    S3_HEALTH_PATH,
    mlflow_server_command,
    mlflow_server_env,
    port_taken,
    program,
    s3_server_command,
    s3_server_env,
    s3_server_problem,
)
from readmit.settings import Settings
from readmit.stack import airflow, postgres, processes, s3
from readmit.storage.db import safe_url

Report = Callable[[str], None]
MARKER = "READMIT_STACK_HOME"
PROMETHEUS_CONFIG = SOURCE_ROOT / "observability" / "prometheus"
INSTALL_HINTS = {
    "prometheus": "Debian package prometheus",
    "airflow": "`pip install -e '.[stack]'`, or `make install`",
    "mlflow": "`make install`",
    "readmit": "`make install`",
}


class StackError(ReadmitError):
    """A service of the stack did not start, or the stack is not up."""


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def env_file(self) -> Path:
        return self.root / "stack.env"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def s3_store(self) -> Path:
        """The S3 server's objects, on disk (one folder per bucket)."""
        return self.root / "s3store"

    @property
    def s3_snapshot(self) -> Path:
        """Where earlier versions saved the in-memory bucket at `stack down`."""
        return self.root / "s3" / s3.BUCKET

    @property
    def prometheus(self) -> Path:
        return self.root / "prometheus"


def paths_for(settings: Settings) -> Paths:
    return Paths(settings.data_dir.resolve() / "stack")


@dataclass(frozen=True)
class Secrets:
    airflow_password: str
    jwt_secret: str
    api_key: str
    s3_access_key: str
    s3_secret_key: str
    postgres_password: str
    pseudonym_key: str
    mlflow_password: str


MLFLOW_USER = "readmit"


def load_secrets(paths: Paths, settings: Settings) -> Secrets:
    """Generated once per data dir and kept in a 0600 file (READMIT_API_KEY wins if set)."""
    if paths.secrets.exists():
        stored = json.loads(paths.secrets.read_text())
    else:
        stored = {
            "airflow_password": secrets.token_urlsafe(12),
            "jwt_secret": secrets.token_urlsafe(64),
            "api_key": secrets.token_urlsafe(24),
            "s3_access_key": "readmit",
            "s3_secret_key": secrets.token_urlsafe(24),
        }
        paths.root.mkdir(parents=True, exist_ok=True)
        _write_private(paths.secrets, json.dumps(stored, indent=1))
    added = {"postgres_password": 18, "pseudonym_key": 32, "mlflow_password": 18}  # later versions
    if any(name not in stored for name in added):
        for name, size in added.items():
            stored.setdefault(name, secrets.token_urlsafe(size))
        _write_private(paths.secrets, json.dumps(stored, indent=1))
    if settings.api_key:
        stored["api_key"] = settings.api_key
    return Secrets(**stored)


@dataclass(frozen=True)
class Endpoints:
    server_url: str
    databases: dict[str, str]
    s3: str
    mlflow: str
    airflow: str
    api: str
    ui: str
    exporter: str
    prometheus: str


def endpoints_for(settings: Settings, server_url: str) -> Endpoints:
    local = "http://127.0.0.1"
    return Endpoints(
        server_url=server_url,
        databases=postgres.database_urls(server_url, settings.stack_db_prefix),
        s3=f"{local}:{settings.s3_port}",
        mlflow=f"{local}:{settings.mlflow_port}",
        airflow=f"{local}:{settings.airflow_port}",
        api=f"{local}:{settings.api_port}",
        ui=f"{local}:{settings.ui_port}",
        exporter=f"{local}:{settings.exporter_port}",
        prometheus=f"{local}:{settings.prometheus_port}",
    )


def client_env(settings: Settings, ends: Endpoints, keys: Secrets) -> dict[str, str]:
    """What a `readmit` command needs to work against the stack (also written to stack.env)."""
    return {
        "READMIT_DATA_DIR": str(settings.data_dir.resolve()),
        "READMIT_DATASET_URI": settings.dataset_uri,
        "READMIT_RAW_DB_URL": ends.databases["raw"],
        "READMIT_CLEAN_DB_URL": ends.databases["clean"],
        "READMIT_MONITOR_DB_URL": ends.databases["monitor"],
        "MLFLOW_TRACKING_URI": ends.mlflow,
        "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
        "MLFLOW_TRACKING_PASSWORD": keys.mlflow_password,
        "READMIT_MLFLOW_BACKEND_STORE_URI": ends.databases["mlflow"],
        "READMIT_MLFLOW_ARTIFACTS_DESTINATION": f"s3://{s3.BUCKET}",
        "MLFLOW_S3_ENDPOINT_URL": ends.s3,
        "AWS_ACCESS_KEY_ID": keys.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": keys.s3_secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "READMIT_API_KEY": keys.api_key,
        "READMIT_API_URL": ends.api,
        "READMIT_PROMETHEUS_URL": ends.prometheus,
    }


# --- health ----------------------------------------------------------------------------------


def _get(url: str, attempts: int = 3, timeout: float = 5.0) -> httpx.Response | None:
    """GET with a short timeout, tried again when the service is slow rather than down.

    A service busy with start-up work (the Airflow API server while DAGs are parsed on two
    cores) can miss one short deadline; a refused connection is final at once.
    """
    for _ in range(attempts):
        try:
            return httpx.get(url, timeout=timeout)
        except httpx.ConnectError:
            return None
        except httpx.HTTPError:
            continue
    return None


def _http_ok(url: str) -> tuple[bool, str]:
    reply = _get(url)
    if reply is None:
        return False, "not answering"
    return reply.status_code == 200, f"HTTP {reply.status_code}"


def _api_health(url: str) -> tuple[bool, str]:
    reply = _get(f"{url}/health")
    if reply is None:
        return False, "not answering"
    try:
        body = reply.json()
    except ValueError:
        return False, f"HTTP {reply.status_code}"
    if reply.status_code == 200:
        model = body.get("model") or {}
        return True, f"serving {model.get('name', '?')} v{model.get('version', '?')}"
    if reply.status_code == 503 and body.get("live"):
        return True, f"up, no model yet ({body.get('detail')})"
    return False, f"HTTP {reply.status_code}"


def _s3_health(url: str) -> tuple[bool, str]:
    """The S3 server answers, and the folder that holds its objects is there."""
    reply = _get(url + S3_HEALTH_PATH)
    if reply is None:
        return False, "not answering"
    try:
        store = Path(reply.json()["directory"])
    except (ValueError, KeyError, TypeError):
        return False, f"HTTP {reply.status_code}, not the stack's S3 server"
    if reply.status_code != 200:
        return False, f"HTTP {reply.status_code}"
    if not (store / s3.BUCKET).is_dir():
        return False, f"bucket folder {store / s3.BUCKET} is missing"
    return True, f"objects on disk in {store} ({s3.usage(store).describe()})"


def _airflow_component(url: str, key: str) -> tuple[bool, str]:
    reply = _get(f"{url}/api/v2/monitor/health")
    if reply is None or reply.status_code != 200:
        return False, "api-server not answering"
    status = (reply.json().get(key) or {}).get("status")
    return status == "healthy", str(status)


def checks(ends: Endpoints) -> dict[str, Callable[[], tuple[bool, str]]]:
    """Service name -> health check returning (healthy, detail)."""

    def pg() -> tuple[bool, str]:
        ok = postgres.reachable(ends.server_url, timeout=2)
        return ok, "accepting connections" if ok else "not answering"

    return {
        "postgres": pg,
        "s3": lambda: _s3_health(ends.s3),
        "mlflow": lambda: _http_ok(f"{ends.mlflow}/health"),
        "airflow-api-server": lambda: _http_ok(f"{ends.airflow}/api/v2/monitor/health"),
        "airflow-scheduler": lambda: _airflow_component(ends.airflow, "scheduler"),
        "airflow-dag-processor": lambda: _airflow_component(ends.airflow, "dag_processor"),
        "airflow-triggerer": lambda: _airflow_component(ends.airflow, "triggerer"),
        "api": lambda: _api_health(ends.api),
        "ui": lambda: _http_ok(f"{ends.ui}/_stcore/health"),
        "exporter": lambda: _http_ok(f"{ends.exporter}/metrics"),
        "prometheus": lambda: _http_ok(f"{ends.prometheus}/-/ready"),
    }


SERVICES = (
    "postgres",
    "s3",
    "mlflow",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "api",
    "ui",
    "exporter",
    "prometheus",
)


# --- up ----------------------------------------------------------------------------------------


@dataclass
class Stack:
    settings: Settings
    paths: Paths
    secrets: Secrets
    endpoints: Endpoints
    private_postgres: bool
    launched: list[str] = field(default_factory=list)


def _server_url(settings: Settings, paths: Paths) -> tuple[str, bool]:
    """The PostgreSQL to use: the private cluster while the stack runs one, else the configured
    server if it answers, else a private cluster."""
    rec = processes.record(paths.run, "postgres") if paths.run.exists() else None
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


def _check_programs(paths: Paths) -> None:
    """Every program the stack runs, and the files it reads, before anything starts."""
    missing = [
        f"`{p}` ({INSTALL_HINTS[p]})" for p in INSTALL_HINTS if shutil.which(program(p)) is None
    ]
    s3_problem = s3_server_problem()
    if s3_problem is not None:
        missing.append(s3_problem)
    for needed in (airflow.dags_folder(), PROMETHEUS_CONFIG / "prometheus.yml"):
        if not needed.exists():
            missing.append(f"{needed} (run the stack from a checkout of the repository)")
    if missing:
        raise StackError("not installed: " + "; ".join(missing))


def _launch(stack: Stack, name: str, command: list[str], env: dict[str, str]) -> None:
    rec = processes.record(stack.paths.run, name)
    if rec is not None and rec.running:
        return
    full_env = {**os.environ, **env, MARKER: str(stack.paths.root)}
    processes.launch(name, command, full_env, stack.paths.logs / f"{name}.log", stack.paths.run)
    stack.launched.append(name)


def _prometheus_config(stack: Stack) -> Path:
    """prometheus.yml with the stack's ports and absolute rule paths."""
    config = yaml.safe_load((PROMETHEUS_CONFIG / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS_CONFIG / "rules" / "*.yml")]
    targets = {
        "prometheus": stack.endpoints.prometheus,
        "readmit-api": stack.endpoints.api,
        "readmit-pipeline": stack.endpoints.exporter,
    }
    for job in config["scrape_configs"]:
        url = targets[job["job_name"]]
        job["static_configs"] = [{"targets": [url.removeprefix("http://")]}]
    stack.paths.prometheus.mkdir(parents=True, exist_ok=True)
    target = stack.paths.prometheus / "prometheus.yml"
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def _ports(settings: Settings) -> dict[str, tuple[int, str]]:
    """Service -> (port, the setting that moves it)."""
    return {
        "s3": (settings.s3_port, "READMIT_S3_PORT"),
        "mlflow": (settings.mlflow_port, "READMIT_MLFLOW_PORT"),
        "airflow-api-server": (settings.airflow_port, "READMIT_AIRFLOW_PORT"),
        "api": (settings.api_port, "READMIT_API_PORT"),
        "ui": (settings.ui_port, "READMIT_UI_PORT"),
        "exporter": (settings.exporter_port, "READMIT_EXPORTER_PORT"),
        "prometheus": (settings.prometheus_port, "READMIT_PROMETHEUS_PORT"),
    }


def _check_ports(stack: Stack) -> None:
    """Refuse to start when another program holds a service's port: its health checks would
    answer for a service that is not the stack's."""
    taken = []
    for name, (port, setting) in _ports(stack.settings).items():
        rec = processes.record(stack.paths.run, name)
        if (rec is None or not rec.running) and port_taken(port):
            taken.append(f"{name} port {port} (set {setting})")
    if taken:
        raise StackError(
            "ports already in use by another program: " + "; ".join(taken) + ". Stop that "
            "program or move the service to a free port."
        )


def _wait(stack: Stack, names: list[str], timeout: float, report: Report) -> None:
    """Wait until each named service is healthy; StackError names the ones that are not."""
    health = checks(stack.endpoints)
    pending = list(names)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            ok, detail = health[name]()
            if ok:
                report(f"{name}: healthy ({detail})")
                pending.remove(name)
                continue
            rec = processes.record(stack.paths.run, name)
            if rec is not None and not rec.running:
                raise StackError(f"{name} exited during start-up: {_tail(stack, name)}")
        if pending:
            time.sleep(1.0)
    if pending:
        detail = "; ".join(f"{n}: {_tail(stack, n)}" for n in pending)
        raise StackError(f"not healthy after {timeout:.0f} s: {detail}")


def _tail(stack: Stack, name: str, lines: int = 3) -> str:
    log = stack.paths.logs / f"{name}.log"
    if not log.exists():
        return "(no log)"
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return " | ".join(line.strip()[:200] for line in tail) + f" (log: {log})"


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


def up(settings: Settings, report: Report, timeout: float = 240.0) -> Stack:
    """Start every service that is not running yet and wait until all are healthy.

    If start-up fails (or is interrupted), only what this call started is stopped: services
    of a stack that was already up keep running.
    """
    paths = paths_for(settings)
    _check_programs(paths)
    _private_dirs(paths)
    with _exclusive(paths):
        stack = prepare(settings)
        _check_ports(stack)
        _write_private(
            paths.state,
            json.dumps({"server_url": stack.endpoints.server_url, "s3": stack.endpoints.s3}),
        )
        try:
            _up(stack, report, timeout)
        except BaseException:
            report("start-up failed: stopping what this command started (logs are kept)")
            for name in reversed(stack.launched):
                rec = processes.record(paths.run, name)
                if rec is not None:
                    processes.stop(rec, paths.run)
            raise
        env_lines = [
            f"{k}={v}" for k, v in client_env(settings, stack.endpoints, stack.secrets).items()
        ]
        _write_private(paths.env_file, "\n".join(env_lines) + "\n")
    return stack


def _private_dirs(paths: Paths) -> None:
    """The stack folder holds credentials: only its owner may read it. A private cluster run
    as `postgres` by root needs to pass through it, hence execute for others then."""
    for folder in (paths.root, paths.run, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    paths.root.chmod(0o711 if os.geteuid() == 0 else 0o700)
    paths.run.chmod(0o700)


def _write_private(path: Path, text: str) -> None:
    """Write a file that only its owner can read, from its first byte."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


@contextmanager
def _exclusive(paths: Paths) -> Iterator[None]:
    """One `stack up` or `stack down` at a time per data dir."""
    with (paths.root / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(
                f"another `readmit stack` command is running on {paths.root}"
            ) from None
        yield


def _up(stack: Stack, report: Report, timeout: float) -> None:
    settings, paths, ends, keys = stack.settings, stack.paths, stack.endpoints, stack.secrets
    env = client_env(settings, ends, keys)
    if stack.private_postgres:
        rec = processes.record(paths.run, "postgres")
        if rec is None or not rec.running:
            report(f"postgres: no server at the configured URL; private cluster in {paths.pgdata}")
            postgres.start_private_cluster(
                paths.pgdata,
                settings.stack_private_pg_port,
                keys.postgres_password,
                paths.logs / "postgres.log",
                paths.run,
            )
    else:
        report(f"postgres: using the running server at {safe_url(ends.server_url)}")
    try:
        created = postgres.ensure_databases(ends.server_url, settings.stack_db_prefix)
    except sa.exc.SQLAlchemyError as exc:
        first = first_line(getattr(exc, "orig", None) or exc)
        raise StackError(f"postgres: could not create the stack's databases: {first}") from None
    if created:
        report(f"postgres: created databases {', '.join(created)}")

    command = s3_server_command(paths.s3_store, settings.s3_port, s3.BUCKET)
    _launch(stack, "s3", command, s3_server_env(keys.s3_access_key, keys.s3_secret_key))
    _wait(stack, ["s3"], 60, report)
    if paths.s3_snapshot.is_dir():
        store = s3.client(ends.s3, keys.s3_access_key, keys.s3_secret_key)
        imported = s3.import_snapshot(store, paths.s3_snapshot)
        report(
            f"s3: imported {imported} objects saved by an earlier version from {paths.s3_snapshot}"
        )

    # Behind MLflow's login: its users live in their own database, its config file in the
    # stack's private folder; every client gets the login from `client_env`.
    server_settings = settings.model_copy(
        update={
            "data_dir": paths.root,
            "mlflow_backend_store_uri": ends.databases["mlflow"],
            "mlflow_artifacts_destination": f"s3://{s3.BUCKET}",
            "mlflow_auth_db_url": ends.databases["mlflow_auth"],
            "mlflow_tracking_username": MLFLOW_USER,
            "mlflow_tracking_password": SecretStr(keys.mlflow_password),
        }
    )
    command = mlflow_server_command(server_settings)
    _launch(stack, "mlflow", command, {**env, **mlflow_server_env(server_settings)})

    airflow.write_passwords(paths.airflow_home, keys.airflow_password)
    af_settings = airflow.airflow_env(
        paths.airflow_home,
        ends.databases["airflow"],
        settings.airflow_port,
        settings.airflow_parallelism,
        keys.jwt_secret,
    )
    af_env = {**env, **af_settings}
    migrate_log = paths.logs / "airflow-db-migrate.log"
    with migrate_log.open("ab") as out:
        migrated = subprocess.run(
            [program("airflow"), "db", "migrate"],
            env={**os.environ, **af_env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if migrated.returncode != 0:
        raise StackError(f"airflow db migrate failed: see {migrate_log}")
    report("airflow: metadata database migrated")
    for component in airflow.COMPONENTS:
        command = airflow.component_command(program("airflow"), component, settings.airflow_port)
        _launch(stack, f"airflow-{component}", command, af_env)

    _wait(stack, ["mlflow"], 120, report)
    api_env = {
        **env,
        "READMIT_API_HOST": "127.0.0.1",
        "READMIT_API_PORT": str(settings.api_port),
        "READMIT_PSEUDONYM_KEY": keys.pseudonym_key,
    }
    _launch(stack, "api", [program("readmit"), "serve"], api_env)
    ui_env = {**env, "READMIT_UI_HOST": "127.0.0.1", "READMIT_UI_PORT": str(settings.ui_port)}
    _launch(stack, "ui", [program("readmit"), "ui"], ui_env)
    exporter = [
        program("readmit"),
        "exporter",
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.exporter_port),
    ]
    _launch(stack, "exporter", exporter, env)
    config = _prometheus_config(stack)
    _launch(
        stack,
        "prometheus",
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={paths.prometheus / 'data'}",
            f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
            "--web.enable-lifecycle",
        ],
        {},
    )
    rest = [n for n in SERVICES if n not in ("postgres", "s3", "mlflow")]
    _wait(stack, rest, timeout, report)


# --- down and status -----------------------------------------------------------------------


def down(settings: Settings, report: Report) -> list[str]:
    """Stop every process the stack started; returns the names stopped.

    The services go newest first, S3 and PostgreSQL last, once nothing writes to them. The S3
    server has every object on disk already: stopping it loses nothing.
    """
    paths = paths_for(settings)
    if not paths.run.exists():
        return []
    with _exclusive(paths):
        return _down(paths, report)


def _down(paths: Paths, report: Report) -> list[str]:
    stopped, stuck = [], []

    def stop(rec: processes.ProcessRecord) -> None:
        if processes.stop(rec, paths.run):
            stopped.append(rec.name)
            report(f"{rec.name}: stopped (process group {rec.pid})")
        else:
            stuck.append(rec.name)

    recorded = processes.records(paths.run)
    tree = processes.descendants([r.pid for r in recorded if r.running])
    last = ("s3", "postgres")
    for rec in reversed(recorded):
        if rec.name not in last:
            stop(rec)
    for name in last:
        final = processes.record(paths.run, name)
        if final is not None:
            stop(final)
    for pid, started in tree.items():
        if processes.kill_if_same(pid, started):
            report(
                f"stopped leftover process {pid} (started by a stack service, outside its group)"
            )
    for pid in stragglers(paths):
        _kill(pid)
        report(f"stopped leftover process {pid} started by the stack")
    if stuck:
        raise StackError(f"could not stop {', '.join(stuck)}")
    return stopped


def stragglers(paths: Paths) -> list[int]:
    """Processes carrying this stack's marker in their environment (started by it)."""
    marker = f"{MARKER}={paths.root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str


def status(settings: Settings) -> list[ServiceStatus]:
    """Each service: its recorded process (if the stack started it) and its health."""
    paths = paths_for(settings)
    server_url = settings.stack_postgres_url
    if paths.state.exists():
        server_url = json.loads(paths.state.read_text()).get("server_url", server_url)
    ends = endpoints_for(settings, server_url)
    result = []
    for name, check in checks(ends).items():
        rec = processes.record(paths.run, name) if paths.run.exists() else None
        running = rec is not None and rec.running
        healthy, detail = check()
        if name == "postgres" and rec is None and healthy:
            detail += " (external server, not managed by the stack)"
        result.append(ServiceStatus(name, rec.pid if rec else None, running, healthy, detail))
    return result
