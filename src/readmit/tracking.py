"""MLflow tracking: where runs go, the logged model's format, and the evaluation plots.

Embedded mode keeps a SQLite store and local artifacts under the data dir; the full stack
points `MLFLOW_TRACKING_URI` at a tracking server (PostgreSQL store, S3 artifacts).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, Schema, TensorSpec

from readmit.errors import ReadmitError
from readmit.files import private_dir
from readmit.model import ReadmissionModel
from readmit.pyfunc_model import ReadmissionPyfunc
from readmit.schema import BY_FIELD, HISTORY_COLUMNS, HISTORY_FIELDS, INPUT_FIELDS, Column, Kind
from readmit.settings import Settings, apply_mlflow_client_defaults, export_mlflow_login
from readmit.storage.db import safe_url

MODEL_ARTIFACT = "model"
apply_mlflow_client_defaults()


class MlflowUnavailable(ReadmitError):
    """The tracking server cannot be reached."""


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def connect(settings: Settings) -> str:
    """Point MLflow at the configured store and check a server answers and accepts the login;
    return its URI."""
    uri = settings.resolved_tracking_uri
    if is_remote(uri):
        export_mlflow_login(settings)
        _check_server(settings, uri.rstrip("/"))
    else:
        private_dir(settings.data_dir)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _check_server(settings: Settings, uri: str) -> None:
    password = settings.mlflow_tracking_password
    login = (
        (settings.mlflow_tracking_username, password.get_secret_value())
        if settings.mlflow_tracking_username and password
        else None
    )
    try:
        httpx.get(f"{uri}/health", timeout=5.0).raise_for_status()
        probe = httpx.get(
            f"{uri}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=login,
            timeout=5.0,
        )
    except httpx.HTTPError as exc:
        raise MlflowUnavailable(
            f"mlflow: tracking server {safe_url(uri)} is unreachable: {exc}"
        ) from exc
    if probe.status_code in (401, 403):
        given = "refused the login of MLFLOW_TRACKING_USERNAME" if login else "asks for a login"
        raise MlflowUnavailable(
            f"mlflow: tracking server {safe_url(uri)} {given} (HTTP {probe.status_code}): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server"
        )


def configure(settings: Settings, experiment_name: str | None = None) -> str:
    """Connect, and return the id of the experiment runs go to (created on first use):
    training's by default."""
    uri = connect(settings)
    name = experiment_name or settings.experiment_name
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None if is_remote(uri) else (settings.data_dir / "mlartifacts").resolve().as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


def git_commit(settings: Settings) -> str:
    """The commit the code came from: READMIT_GIT_COMMIT (set in images), else git, else unknown."""
    if settings.git_commit:
        return settings.git_commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def input_schema() -> Schema:
    """The raw fields of one encounter, under the API's names and the data set's own.

    Every column is typed Any: pandas gives a number column as int64, or as float64 once it
    holds a NaN, and a text column holding only missing values as float64, none of which
    MLflow's typed columns take. The model checks each value itself (`readmit.inputs`) and
    the field's kind and values are in the model's metadata (`input_fields`). A field whose
    data set name differs (A1Cresult, diabetesMed, glyburide-metformin, ...) is optional under
    both names, for MLflow drops columns its signature does not name; the model says which
    required column is absent.
    """
    specs: list[ColSpec | TensorSpec] = []
    for name in INPUT_FIELDS:
        source = BY_FIELD[name].source
        if source == name:
            specs.append(ColSpec(AnyType(), name))
        else:
            specs += [
                ColSpec(AnyType(), name, required=False),
                ColSpec(AnyType(), source, required=False),
            ]
    specs += [ColSpec(AnyType(), name, required=False) for name in HISTORY_FIELDS]
    return Schema(specs)


def signature() -> ModelSignature:
    return ModelSignature(inputs=input_schema(), outputs=Schema([ColSpec("double", "probability")]))


def _described(column: Column) -> dict[str, Any]:
    about: dict[str, Any] = {
        "source": column.source,
        "kind": str(column.kind),
        "nullable": column.nullable,
    }
    if column.categories:
        about["categories"] = list(column.categories)
    if column.missing_as is not None:
        about["missing_as"] = column.missing_as
    if column.kind is Kind.INTEGER:
        about["maximum"] = column.maximum
    if column.description:
        about["description"] = column.description
    return about


def input_fields() -> dict[str, dict[str, Any]]:
    """What each input field takes, for the registered model's metadata."""
    fields = {name: _described(BY_FIELD[name]) for name in INPUT_FIELDS}
    fields.update({column.source: _described(column) for column in HISTORY_COLUMNS})
    return fields


def log_model(model: ReadmissionModel, input_example: pd.DataFrame) -> Any:
    """Log the model folder as a pyfunc model of the active run; returns MLflow's ModelInfo."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save(Path(tmp) / "readmit_model")
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=ReadmissionPyfunc(),
            artifacts={"readmit_model": str(folder)},
            code_paths=[str(Path(__file__).parent)],
            signature=signature(),
            input_example=input_example,
            metadata={"input_fields": input_fields()},
            pip_requirements=_requirements(),
        )


def _requirements() -> list[str]:
    from importlib.metadata import version

    names = ["mlflow", "numpy", "pandas", "scikit-learn", "xgboost-cpu", "lightgbm"]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name)}")
        except Exception:
            continue
    return pins


def log_figure(figure: Any, name: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, f"plots/{name}")
    plt.close(figure)


def log_table(frame: pd.DataFrame, name: str) -> None:
    mlflow.log_text(frame.to_csv(index=False), name)


def as_float_dict(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in values.items()
        if isinstance(v, int | float | np.floating | np.integer)
    }
