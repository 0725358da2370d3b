"""The MLflow server's environment: its stores, and with authentication on, the basic-auth
app's config file and users' database, made before the server starts."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from typing import NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from readmit.errors import first_line
from readmit.settings import Settings
from readmit.stack.errors import ServiceError
from readmit.stack.s3 import s3_env

AUTH_CONFIG = "mlflow-auth.ini"


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


def standalone_mlflow_env(settings: Settings) -> dict[str, str]:
    """The whole environment of an MLflow server run on its own (not by the stack): this
    process's, the S3 endpoint of the settings, and `mlflow_server_env`."""
    env = dict(os.environ)
    if settings.s3_endpoint_url:
        env.update(s3_env(settings.s3_endpoint_url))
    return {**env, **mlflow_server_env(settings)}


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


def run_mlflow_server(command: list[str], env: dict[str, str]) -> NoReturn:
    """Run `command` (`mlflow server …`) in this process with `env`, and leave without the
    interpreter's final garbage collection. Over MLflow's imports that collection takes a
    second after uvicorn has stopped, several on a busy machine: past a container's stop grace
    period, so a SIGTERM ended in a SIGKILL. Nothing is left to collect: MLflow has waited for
    its server process, and output is flushed here."""
    from mlflow.cli import cli

    os.environ.update(env)
    code = 0
    try:
        cli.main(args=command[1:], prog_name="mlflow")
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
