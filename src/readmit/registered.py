"""A registered version, loaded from its plain files and proven able to score.

Nothing executable comes from the registry: the version's MLmodel (YAML) says where the readmit
model folder is, that folder holds JSON and the boosters' own files, and the input example is
JSON. The version's python_model.pkl is never unpickled. Serving (before a swap), promotion and
training (to score the champion) all load versions here, and all apply the same check: the
model scores the input example stored with it, one finite probability in [0, 1] per row.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model

from readmit.errors import ReadmitError, first_line
from readmit.model import MODEL_FILE, ReadmissionModel
from readmit.settings import Settings
from readmit.tracking import connect

READMIT_ARTIFACT = "readmit_model"  # the artifact key tracking.log_model gives the model folder


class ModelUnavailable(ReadmitError):
    """The version's files could not be fetched (registry or artifact store failing)."""


class ArtifactsMissing(ModelUnavailable):
    """The registry names the version, but its files are gone from the artifact store."""


def missing_artifacts_message(name: str, version: str, where: str) -> str:
    return f"the artifacts of {name} v{version} are missing from the artifact store ({where})"


class ModelRefused(ReadmitError):
    """The version is not a readmit model, does not load, or cannot score its input example."""

    def __init__(self, name: str, version: str, reason: str) -> None:
        super().__init__(f"registry: {name} v{version} refused: {reason}")
        self.version = version
        self.reason = reason


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)[:300]}"


def check_scores(model: ReadmissionModel, example: pd.DataFrame) -> str | None:
    """Why `model` cannot serve `example` (None when it can): both scoring paths must give one
    finite probability in [0, 1] per row."""
    if example.empty:
        return "its input example has no rows"
    try:
        bulk = np.asarray(model.predict_frame(example), dtype=np.float64)
        rows = [{str(k): v for k, v in row.items()} for row in example.to_dict("records")]
        single = np.asarray([model.predict_record(row) for row in rows])
    except Exception as exc:
        return f"scoring its input example failed: {_first_line(exc)}"
    for path, scores in (("bulk", bulk), ("one-record", single)):
        if scores.shape != (len(example),):
            return f"{path} scoring gave shape {scores.shape} for {len(example)} example rows"
        if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
            return f"{path} scoring gave probabilities outside [0, 1]: {scores.tolist()}"
    return None


def read_version_folder(folder: Path) -> tuple[ReadmissionModel, pd.DataFrame]:
    """The readmit model and the input example of a downloaded version; ValueError says why not."""
    try:
        mlmodel = Model.load(str(folder / "MLmodel"))
    except Exception as exc:
        raise ValueError(f"not an MLflow model: {_first_line(exc)}") from exc
    artifacts = mlmodel.flavors.get("python_function", {}).get("artifacts") or {}
    entry = artifacts.get(READMIT_ARTIFACT)
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ValueError(f"not a readmit model: its MLmodel names no {READMIT_ARTIFACT} artifact")
    model_dir = (folder / entry["path"]).resolve()
    if not model_dir.is_relative_to(folder.resolve()) or not (model_dir / MODEL_FILE).is_file():
        raise ValueError(f"not a readmit model: no {MODEL_FILE} in {entry['path']}")
    try:
        model = ReadmissionModel.load(model_dir)
    except Exception as exc:
        raise ValueError(f"its model files do not load: {_first_line(exc)}") from exc
    try:
        example = mlmodel.load_input_example(str(folder))
    except Exception as exc:
        raise ValueError(f"its input example does not load: {_first_line(exc)}") from exc
    if not isinstance(example, pd.DataFrame):
        raise ValueError("it has no stored input example to check it with")
    return model, example


def load_checked(settings: Settings, version: str) -> ReadmissionModel:
    """Download `version`, load it from its plain files, and check it scores its input example.

    The download lives in a temporary folder removed before returning, on success or failure:
    the loaded model holds everything in memory. Raises ModelUnavailable when the files cannot
    be fetched, ModelRefused (with the reason) when the version must not be served.
    """
    connect(settings)
    name = settings.model_name
    uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix=f"readmit-model-{version}-") as tmp:
        try:
            folder = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
        except Exception as exc:
            raise ModelUnavailable(f"registry: cannot fetch {uri}: {_first_line(exc)}") from exc
        if not (folder / "MLmodel").is_file():  # MLflow downloads nothing without an error
            raise ArtifactsMissing(missing_artifacts_message(name, version, uri))
        try:
            model, example = read_version_folder(folder)
        except ValueError as exc:
            raise ModelRefused(name, version, str(exc)) from exc
    reason = check_scores(model, example)
    if reason is not None:
        raise ModelRefused(name, version, reason)
    return model
