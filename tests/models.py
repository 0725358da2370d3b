"""Log and register small real models in a temporary MLflow, for registry and API tests."""

from __future__ import annotations

import json

import mlflow
import pandas as pd

from readmit import registry
from readmit.model import ReadmissionModel
from readmit.schema import MODEL_FIELDS
from readmit.settings import Settings
from readmit.tracking import configure, log_model

MODEL_INPUTS = list(MODEL_FIELDS)
API_KEY = "test-key-123"


def log_and_register(settings: Settings, model: ReadmissionModel, inputs: pd.DataFrame) -> str:
    """A new version of the settings' model name, at @staging, as training would leave it."""
    experiment = configure(settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = log_model(model, inputs.head(3))
    return registry.register(settings, info.model_uri, run.info.run_id, {"readmit.test": "yes"})


def records(frame: pd.DataFrame) -> list[dict]:
    """Test-set rows as API payloads: the source's '?' as null, numbers as JSON numbers."""
    out = json.loads(frame.to_json(orient="records"))
    return [{k: (None if v == "?" else v) for k, v in r.items()} for r in out]
