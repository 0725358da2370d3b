"""The monitoring reference of a model: what its inputs and its probabilities looked like when
it was trained, stored with its training run so a monitor never recomputes them from a clean-db
that has since changed.

Two run artifacts, written by training (`log_reference`) and read by the monitor
(`load_reference`, cached per run under the data dir, 0600 files in 0700 folders):
- `reference/train_inputs.parquet`: the input fields of every training row of the clean build,
  as the API receives and the prediction log stores them (missing values null, no
  identifiers);
- `reference/test_probabilities.parquet`: the model's probability and the outcome of every
  test-split row, the reference of prediction drift.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from readmit.errors import ReadmitError, first_line
from readmit.files import private_dir
from readmit.schema import HISTORY_FIELDS, MISSING, MODEL_FIELDS
from readmit.settings import Settings
from readmit.storage.raw import open_raw_db, read_model_inputs

log = logging.getLogger(__name__)
REFERENCE_DIR = "reference"
INPUTS_FILE = "train_inputs.parquet"
PROBABILITIES_FILE = "test_probabilities.parquet"
REFERENCE_FIELDS = MODEL_FIELDS
SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,200}")


class ReferenceMissing(ReadmitError):
    """The model's run holds no monitoring reference (or it cannot be fetched)."""


@dataclass
class Reference:
    run_id: str
    inputs: pd.DataFrame  # REFERENCE_FIELDS of the training rows, missing values None
    probabilities: np.ndarray  # the model's probabilities on its test split
    labels: np.ndarray  # the outcomes of those test rows (1: readmitted within 30 days)


def as_logged(frame: pd.DataFrame) -> pd.DataFrame:
    """Input fields as the prediction log holds them: any missing marker as None, an absent
    history count (also one a reference saved before it existed) as 0, integers as integers."""
    out = pd.DataFrame(index=range(len(frame)))
    for name in REFERENCE_FIELDS:
        if name in HISTORY_FIELDS and name not in frame:
            out[name] = 0
            continue
        values = frame[name].reset_index(drop=True)
        if pd.api.types.is_numeric_dtype(values):
            out[name] = values.fillna(0 if name in HISTORY_FIELDS else np.nan)
        else:
            values = values.astype(object)
            out[name] = values.where(values.notna() & (values != MISSING), None)
    return out


def log_reference(
    settings: Settings,
    train_rows: pd.DataFrame,
    test_probabilities: np.ndarray,
    test_labels: np.ndarray,
) -> None:
    """Write the reference of the active run: the inputs of `train_rows` (clean_train rows of
    the build) read back from raw-db, and the test probabilities with their outcomes."""
    raw_engine = open_raw_db(settings)
    try:
        inputs = read_model_inputs(raw_engine, train_rows, "train")
    finally:
        raw_engine.dispose()
    probabilities = pd.DataFrame(
        {"probability": np.asarray(test_probabilities, dtype=np.float64), "label": test_labels}
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / REFERENCE_DIR
        folder.mkdir()
        as_logged(inputs).to_parquet(folder / INPUTS_FILE, index=False)
        probabilities.to_parquet(folder / PROBABILITIES_FILE, index=False)
        mlflow.log_artifacts(str(folder), REFERENCE_DIR)


def _run_file(settings: Settings, name: str, version: str) -> Path | None:
    key = f"{name}@{version}"
    if not SAFE_KEY.fullmatch(key):
        return None
    return settings.data_dir / "monitor-reference" / "versions" / key


def remember_run(settings: Settings, name: str, version: str, run_id: str) -> None:
    """Note which run a version came from, for runs while the registry is unreachable."""
    path = _run_file(settings, name, version)
    if path is None or not SAFE_KEY.fullmatch(run_id):
        return
    private_dir(path.parent)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as out:
        out.write(run_id)
    Path(out.name).replace(path)


def remembered_run(settings: Settings, name: str, version: str) -> str | None:
    path = _run_file(settings, name, version)
    if path is None or not path.exists():
        return None
    return path.read_text().strip() or None


def load_reference(settings: Settings, run_id: str) -> Reference:
    """The reference stored with `run_id`, from the local cache or downloaded once into it.
    ReferenceMissing when the run has none (trained before references were stored) or the
    artifact store cannot be read."""
    cache = settings.data_dir / "monitor-reference" / run_id
    if not (cache / INPUTS_FILE).exists() or not (cache / PROBABILITIES_FILE).exists():
        _download(run_id, cache)
    inputs = pd.read_parquet(cache / INPUTS_FILE)
    probabilities = pd.read_parquet(cache / PROBABILITIES_FILE)
    return Reference(
        run_id=run_id,
        inputs=inputs.astype(object).where(inputs.notna(), None),
        probabilities=probabilities["probability"].to_numpy(dtype=np.float64),
        labels=probabilities["label"].to_numpy(dtype=np.int64),
    )


def _download(run_id: str, cache: Path) -> None:
    """Download into a private temporary folder next to the cache, then move it into place
    whole, so a reader never sees half a reference."""
    parent = private_dir(cache.parent)
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=REFERENCE_DIR, dst_path=tmp
            )
        except Exception as exc:
            first = first_line(exc) or type(exc).__name__
            raise ReferenceMissing(
                f"run {run_id} has no monitoring reference ({REFERENCE_DIR}/): {first}"
            ) from None
        found = Path(local)
        if not (found / INPUTS_FILE).exists() or not (found / PROBABILITIES_FILE).exists():
            raise ReferenceMissing(f"run {run_id}: {REFERENCE_DIR}/ lacks its files")
        for path in found.iterdir():
            path.chmod(0o600)
        shutil.rmtree(cache, ignore_errors=True)
        found.rename(cache)
        cache.chmod(0o700)
