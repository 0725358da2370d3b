"""Where each service of the stack answers, and the settings a `readmit` command needs to work
against the stack (also written to stack.env)."""

from __future__ import annotations

from dataclasses import dataclass

from readmit.settings import Settings
from readmit.stack import postgres, s3, services
from readmit.stack.credentials import MLFLOW_USER, Secrets


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
    return Endpoints(
        server_url=server_url,
        databases=postgres.database_urls(server_url, settings.stack_db_prefix),
        s3=services.S3.url(settings),
        mlflow=services.MLFLOW.url(settings),
        airflow=services.AIRFLOW_API_SERVER.url(settings),
        api=services.API.url(settings),
        ui=services.UI.url(settings),
        exporter=services.EXPORTER.url(settings),
        prometheus=services.PROMETHEUS.url(settings),
    )


def client_env(settings: Settings, ends: Endpoints, keys: Secrets) -> dict[str, str]:
    """What a `readmit` command needs to work against the stack."""
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
