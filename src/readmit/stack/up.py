"""`readmit stack up`: the full stack on one machine, without containers.

PostgreSQL (raw, clean, monitor, airflow, mlflow), an S3 server with the artifact bucket, the
MLflow tracking server, Airflow 3 (api-server, scheduler, dag-processor, triggerer;
LocalExecutor), the API, the UI, the pipeline exporter and Prometheus, each bound to
127.0.0.1, with process records and logs under <data dir>/stack. What each service runs and
how it is checked is in the service table (services.py); this module starts them in order.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import sqlalchemy as sa
import yaml
from pydantic import SecretStr

from readmit.errors import first_line
from readmit.settings import Settings
from readmit.stack import airflow, postgres, processes, s3, services
from readmit.stack.credentials import MLFLOW_USER
from readmit.stack.endpoints import client_env
from readmit.stack.errors import StackError
from readmit.stack.launch import Report, Stack, launch, stop_launched, wait
from readmit.stack.layout import exclusive, paths_for, private_dirs, write_private
from readmit.stack.mlflow_server import mlflow_server_env
from readmit.stack.preflight import PROMETHEUS_CONFIG, check_ports, check_programs, prepare
from readmit.storage.db import safe_url


def up(settings: Settings, report: Report, timeout: float = 240.0) -> Stack:
    """Start every service that is not running yet and wait until all are healthy.

    If start-up fails (or is interrupted), only what this call started is stopped: services
    of a stack that was already up keep running.
    """
    paths = paths_for(settings)
    check_programs()
    private_dirs(paths)
    with exclusive(paths):
        stack = prepare(settings)
        check_ports(stack)
        state = {"server_url": stack.endpoints.server_url, "s3": stack.endpoints.s3}
        write_private(paths.state, json.dumps(state))
        try:
            _start(stack, report, timeout)
        except BaseException:
            report("start-up failed: stopping what this command started (logs are kept)")
            stop_launched(stack)
            raise
        env = client_env(settings, stack.endpoints, stack.secrets)
        write_private(paths.env_file, "".join(f"{k}={v}\n" for k, v in env.items()))
    return stack


def _start(stack: Stack, report: Report, timeout: float) -> None:
    """Each service in the order it needs the others: storage first, then the servers that
    use it, then the ones that call those."""
    env = client_env(stack.settings, stack.endpoints, stack.secrets)
    _start_postgres(stack, report)
    _start_s3(stack, report)
    _start_mlflow(stack, env)
    _start_airflow(stack, env, report)
    wait(stack, [services.MLFLOW.name], 120, report)
    _start_api(stack, env)
    _start_ui(stack, env)
    spec = services.EXPORTER
    launch(
        stack, spec.name, services.exporter_command(services.HOST, spec.port(stack.settings)), env
    )
    _start_prometheus(stack)
    started = (services.S3.name, services.MLFLOW.name)
    rest = [s.name for s in services.HTTP_SERVICES if s.name not in started]
    wait(stack, rest, timeout, report)


def _start_postgres(stack: Stack, report: Report) -> None:
    """The configured server, or the stack's private cluster; then the stack's databases."""
    settings, paths, ends = stack.settings, stack.paths, stack.endpoints
    if not stack.private_postgres:
        report(f"postgres: using the running server at {safe_url(ends.server_url)}")
    else:
        rec = processes.record(paths.run, services.POSTGRES)
        if rec is None or not rec.running:
            report(f"postgres: no server at the configured URL; private cluster in {paths.pgdata}")
            postgres.start_private_cluster(
                paths.pgdata,
                settings.stack_private_pg_port,
                stack.secrets.postgres_password,
                paths.logs / "postgres.log",
                paths.run,
            )
    try:
        created = postgres.ensure_databases(ends.server_url, settings.stack_db_prefix)
    except sa.exc.SQLAlchemyError as exc:
        first = first_line(getattr(exc, "orig", None) or exc)
        raise StackError(f"postgres: could not create the stack's databases: {first}") from None
    if created:
        report(f"postgres: created databases {', '.join(created)}")


def _start_s3(stack: Stack, report: Report) -> None:
    """The S3 server over the stack's store; a bucket saved by an earlier version goes in once."""
    paths, keys = stack.paths, stack.secrets
    command = services.s3_server_command(paths.s3_store, stack.settings.s3_port, s3.BUCKET)
    launch(
        stack,
        services.S3.name,
        command,
        services.s3_server_env(keys.s3_access_key, keys.s3_secret_key),
    )
    wait(stack, [services.S3.name], 60, report)
    if paths.s3_snapshot.is_dir():
        store = s3.client(stack.endpoints.s3, keys.s3_access_key, keys.s3_secret_key)
        imported = s3.import_snapshot(store, paths.s3_snapshot)
        report(
            f"s3: imported {imported} objects saved by an earlier version from {paths.s3_snapshot}"
        )


def _start_mlflow(stack: Stack, env: dict[str, str]) -> None:
    """Behind MLflow's login: its users live in their own database, its config file in the
    stack's private folder; every client gets the login from `client_env`."""
    databases = stack.endpoints.databases
    server_settings = stack.settings.model_copy(
        update={
            "data_dir": stack.paths.root,
            "mlflow_backend_store_uri": databases["mlflow"],
            "mlflow_artifacts_destination": f"s3://{s3.BUCKET}",
            "mlflow_auth_db_url": databases["mlflow_auth"],
            "mlflow_tracking_username": MLFLOW_USER,
            "mlflow_tracking_password": SecretStr(stack.secrets.mlflow_password),
        }
    )
    command = services.mlflow_server_command(server_settings)
    launch(stack, services.MLFLOW.name, command, {**env, **mlflow_server_env(server_settings)})


def _start_airflow(stack: Stack, env: dict[str, str], report: Report) -> None:
    """The metadata database migrated, then Airflow's four processes."""
    settings, paths = stack.settings, stack.paths
    airflow.write_passwords(paths.airflow_home, stack.secrets.airflow_password)
    af_env = {
        **env,
        **airflow.airflow_env(
            paths.airflow_home,
            stack.endpoints.databases["airflow"],
            settings.airflow_port,
            settings.airflow_parallelism,
            stack.secrets.jwt_secret,
        ),
    }
    migrate_log = paths.logs / "airflow-db-migrate.log"
    with migrate_log.open("ab") as out:
        migrated = subprocess.run(
            [services.program("airflow"), "db", "migrate"],
            env={**os.environ, **af_env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if migrated.returncode != 0:
        raise StackError(f"airflow db migrate failed: see {migrate_log}")
    report("airflow: metadata database migrated")
    for component in airflow.COMPONENTS:
        command = airflow.component_command(
            services.program("airflow"), component, settings.airflow_port
        )
        launch(stack, f"airflow-{component}", command, af_env)


def _start_api(stack: Stack, env: dict[str, str]) -> None:
    spec = services.API
    api_env = {
        **env,
        **services.api_env(services.HOST, spec.port(stack.settings)),
        "READMIT_API_WORKERS": str(services.api_workers(stack.settings)),
        "READMIT_PSEUDONYM_KEY": stack.secrets.pseudonym_key,
    }
    launch(stack, spec.name, services.api_command(), api_env)


def _start_ui(stack: Stack, env: dict[str, str]) -> None:
    spec = services.UI
    launch(
        stack,
        spec.name,
        services.ui_command(),
        {**env, **services.ui_env(spec.port(stack.settings))},
    )


def _start_prometheus(stack: Stack) -> None:
    spec = services.PROMETHEUS
    storage = stack.paths.prometheus / "data"
    command = services.prometheus_command(
        _prometheus_config(stack), storage, spec.port(stack.settings)
    )
    launch(stack, spec.name, command, {})


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
