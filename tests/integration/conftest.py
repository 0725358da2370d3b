"""A real MLflow tracking server on a PostgreSQL store with S3 artifacts (the local S3 server,
objects on disk), per session."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from readmit import registry
from readmit.model import Calibration, ReadmissionModel, TrainingInfo
from readmit.pipeline.train import fit_lightgbm
from readmit.serving.app import create_app
from readmit.settings import Settings
from readmit.stack.foreground import free_port, start_s3_server
from tests.databases import create_database, drop_database
from tests.models import API_KEY, MODEL_INPUTS, log_and_register, records
from tests.monitoring import PATIENT
from tests.services import start_mlflow_server


@dataclass
class MlflowServer:
    tracking_uri: str
    backend_uri: str
    s3_endpoint: str
    logs: Path
    username: str
    password: str
    pid: int

    @property
    def client_settings(self) -> dict[str, Any]:
        """Settings fields of a client of this server: its URI and its login (settings made
        before the server started hold no login)."""
        return {
            "mlflow_tracking_uri": self.tracking_uri,
            "mlflow_tracking_username": self.username,
            "mlflow_tracking_password": SecretStr(self.password),
        }

    @property
    def s3_store(self) -> Path:
        """The folder the S3 server keeps its objects in."""
        return self.logs / "s3store"


MLFLOW_USER = "readmit-tests"


@pytest.fixture(scope="session")
def mlflow_server(
    pg_admin_url: str, s3_server_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """The server behind MLflow's login, as deployed; its login is in this process's
    environment (MLFLOW_TRACKING_USERNAME/PASSWORD), where every client and child finds it."""
    logs = tmp_path_factory.mktemp("services")
    backend = create_database(pg_admin_url)
    users = create_database(pg_admin_url)
    s3 = start_s3_server(free_port(), logs / "s3.log", logs / "s3store")
    password = secrets.token_urlsafe(18)
    settings = Settings(
        data_dir=logs,
        mlflow_backend_store_uri=backend,
        mlflow_artifacts_destination="s3://mlflow-artifacts",
        mlflow_port=free_port(),
        s3_endpoint_url=s3.url,
        mlflow_auth_db_url=users,
        mlflow_tracking_username=MLFLOW_USER,
        mlflow_tracking_password=password,
    )
    server = start_mlflow_server(settings, logs / "mlflow.log")
    login = {"MLFLOW_TRACKING_USERNAME": MLFLOW_USER, "MLFLOW_TRACKING_PASSWORD": password}
    saved = {name: os.environ.get(name) for name in login}
    os.environ.update(login)
    try:
        yield MlflowServer(
            server.url, backend, s3.url, logs, MLFLOW_USER, password, server.process.pid
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
        s3.stop()
        drop_database(pg_admin_url, backend)
        drop_database(pg_admin_url, users)


@dataclass
class SmallBuild:
    """Raw-db and clean-db (SQLite) built by the real pipeline from the first rows of the file."""

    settings: Settings


@pytest.fixture(scope="session")
def small_build(full_dataset, tmp_path_factory: pytest.TempPathFactory) -> SmallBuild:
    from readmit.dataset import Dataset
    from readmit.pipeline.clean import build_clean
    from readmit.pipeline.ingest import ingest

    rows = 24_000
    sample = Dataset(full_dataset.frame.head(rows), full_dataset.sha256, full_dataset.source)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("small"), batch_size=rows, dataset_uri=full_dataset.source
    )
    ingest(settings, all_batches=True, dataset=sample)
    build_clean(settings)
    return SmallBuild(settings)


@pytest.fixture(scope="session")
def small_data(small_build: SmallBuild):
    from readmit.pipeline.train import load_training_data

    return load_training_data(small_build.settings)


@dataclass
class Served:
    settings: Settings
    client: TestClient
    model: ReadmissionModel
    inputs: pd.DataFrame


@pytest.fixture(scope="module")
def lightgbm_model(small_data) -> ReadmissionModel:
    x, y = small_data.encoded("train"), small_data.labels("train")
    xv, yv = small_data.encoded("validation"), small_data.labels("validation")
    estimator, _, _ = fit_lightgbm(x, y, xv, yv, seed=0, max_rounds=80)
    return ReadmissionModel(
        small_data.build.transform,
        estimator,
        Calibration(0.9, -0.1),
        0.12,
        info=TrainingInfo(run_id="r1", estimator="lightgbm", test_metrics={"roc_auc": 0.66}),
    )


@pytest.fixture(scope="module")
def served(small_data, lightgbm_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    settings = Settings(
        data_dir=folder,
        mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db",
        api_key=API_KEY,
        model_poll_seconds=3600,
    )
    inputs = small_data.test_inputs[MODEL_INPUTS]
    registry.promote(settings, log_and_register(settings, lightgbm_model, inputs))
    with TestClient(create_app(settings)) as client:
        yield Served(settings, client, lightgbm_model, inputs)


@pytest.fixture(scope="module")
def registered(small_data, lightgbm_model, tmp_path_factory) -> Settings:
    """Settings whose MLflow holds the small LightGBM at @production (for apps made per test)."""
    folder = tmp_path_factory.mktemp("monitor-api")
    settings = Settings(
        data_dir=folder,
        mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db",
        api_key=API_KEY,
        model_poll_seconds=3600,
    )
    inputs = small_data.test_inputs[MODEL_INPUTS]
    registry.promote(settings, log_and_register(settings, lightgbm_model, inputs))
    return settings


@pytest.fixture(scope="module")
def payloads(small_data) -> list[dict]:
    """Test-set records with encounter and patient ids (patients repeat: 3 encounters each)."""
    rows = records(small_data.test_inputs[MODEL_INPUTS].head(30))
    return [
        {**r, "encounter_id": 500_000 + i, "patient_nbr": PATIENT + i // 3}
        for i, r in enumerate(rows)
    ]


@pytest.fixture(params=["postgresql", "sqlite"])
def monitor_url(request, tmp_path) -> str:
    """A fresh monitor-db: a PostgreSQL database on the test server, or a SQLite file."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/monitor.db"
    return request.getfixturevalue("pg_database_factory")()
