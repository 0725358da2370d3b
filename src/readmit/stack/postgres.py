"""PostgreSQL for the stack: the server that answers at READMIT_STACK_POSTGRES_URL, or else a
private cluster initialised under the data dir, and the stack's databases on it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from readmit.errors import ReadmitError
from readmit.stack.processes import ProcessRecord, launch
from readmit.stack.services import port_taken

DATABASES = ("raw", "clean", "monitor", "airflow", "mlflow", "mlflow_auth")


class PostgresError(ReadmitError):
    """No PostgreSQL server could be used or started."""


def connection_problem(url: str, timeout: int = 3) -> str | None:
    """None when the server at `url` accepts a connection, else the reason in one line."""
    engine = sa.create_engine(url, connect_args={"connect_timeout": timeout})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return None
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return reason[-1] if reason else type(exc).__name__
    finally:
        engine.dispose()


def reachable(url: str, timeout: int = 3) -> bool:
    return connection_problem(url, timeout) is None


def database_urls(server_url: str, prefix: str) -> dict[str, str]:
    """SQLAlchemy URLs of the stack's DATABASES on the server of `server_url`."""
    base = make_url(server_url)
    return {
        name: base.set(database=f"{prefix}{name}").render_as_string(hide_password=False)
        for name in DATABASES
    }


def ensure_databases(server_url: str, prefix: str) -> list[str]:
    """Create whichever of the stack's databases is missing; returns the ones created."""
    urls = database_urls(server_url, prefix)
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    created = []
    try:
        with engine.connect() as conn:
            existing = set(conn.execute(sa.text("select datname from pg_database")).scalars())
            for url in urls.values():
                name = make_url(url).database
                if name not in existing:
                    conn.execute(sa.text(f'create database "{name}"'))
                    created.append(str(name))
    finally:
        engine.dispose()
    return created


def drop_databases(server_url: str, prefix: str) -> None:
    """Drop the stack's databases (used by tests that ran a stack under their own prefix)."""
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for url in database_urls(server_url, prefix).values():
                conn.execute(sa.text(f'drop database if exists "{make_url(url).database}" (force)'))
    finally:
        engine.dispose()


def _pg_bin(name: str) -> str:
    """A server program: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise PostgresError(
            f"no PostgreSQL answers at the configured URL and `{name}` is not installed "
            "(install PostgreSQL's server, e.g. Debian's postgresql package)"
        )
    return str(candidates[-1])


def _owner() -> str | None:
    """initdb and postgres refuse to run as root: run them as `postgres` then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresError("running as root and no `postgres` user to own the cluster") from None
    return "postgres"


def private_cluster_url(port: int, password: str) -> str:
    return URL.create(
        "postgresql+psycopg",
        username="postgres",
        password=password,
        host="127.0.0.1",
        port=port,
        database="postgres",
    ).render_as_string(hide_password=False)


def start_private_cluster(
    pgdata: Path, port: int, password: str, log: Path, run_dir: Path
) -> ProcessRecord:
    """initdb `pgdata` on first use (password auth over TCP, peer auth on its own socket),
    then run `postgres` on 127.0.0.1:`port`."""
    url = private_cluster_url(port, password)
    if port_taken(port):
        raise PostgresError(
            f"port {port} is already in use; set READMIT_STACK_PRIVATE_PG_PORT to a free port"
        )
    user = _owner()
    socket_dir = pgdata.parent / "pg-socket"
    for folder in (pgdata, socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(folder, user, user)
    if not (pgdata / "PG_VERSION").exists():
        pwfile = pgdata.parent / "pg-password"
        descriptor = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(password + "\n")
        if user:
            shutil.chown(pwfile, user, user)
        try:
            done = subprocess.run(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    f"--pwfile={pwfile}",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
                user=user,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise PostgresError(
                f"initdb {pgdata} failed{' as user postgres' if user else ''}: {' '.join(reason)}"
            )
    command = [
        _pg_bin("postgres"),
        "-D",
        str(pgdata),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={socket_dir}",
    ]
    if user:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        shutil.chown(log, user, user)
    rec = launch("postgres", command, dict(os.environ), log, run_dir, user=user)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not rec.running:
            break
        if reachable(url, timeout=2):
            return rec
        time.sleep(0.5)
    tail = " | ".join(log.read_text(errors="replace").splitlines()[-3:])
    raise PostgresError(f"the private PostgreSQL cluster did not start on port {port}: {tail}")
