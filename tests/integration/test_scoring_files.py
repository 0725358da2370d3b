"""The registered model scores the data set's own CSV as pandas reads it, to the API's answers.

The model is loaded by `mlflow.pyfunc.load_model` (and `mlflow models predict`) in a fresh
process, as a data team outside the API would; the API answers through /predict-batch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from readmit import registry
from readmit.dataset import parse_csv, read_csv_bytes, typed_rows
from readmit.schema import COLUMNS, FIELD_OF_SOURCE, FIELDS
from readmit.split import assign_splits
from tests.models import records

NULLABLE = [c.field for c in COLUMNS if c.feature and c.nullable]
SCRIPT = """
import sys, mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/readmission@production")
source = sys.argv[2]
frame = pd.read_csv(source) if source.endswith(".csv") else pd.read_pickle(source)
model.predict(frame).to_csv(sys.argv[3], index=False, float_format="%.17g")
"""


@pytest.fixture(scope="module")
def test_split_csv(dataset_uri, served, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The test split's lines of the data set's own file, and those rows as source strings."""
    data = read_csv_bytes(Path(dataset_uri))
    source = parse_csv(data, dataset_uri)
    lines = data.decode().splitlines()
    assert len(lines) == len(source) + 1
    test = np.asarray(assign_splits(source["patient_nbr"], served.settings.split_salt)) == "test"
    path = tmp_path_factory.mktemp("files") / "test_split.csv"
    chosen = [lines[0], *(line for line, keep in zip(lines[1:], test, strict=True) if keep)]
    path.write_text("\n".join(chosen) + "\n")
    return path, source[test].reset_index(drop=True)


def _fresh_process(served, source: Path, tmp_path: Path) -> np.ndarray:
    out = tmp_path / "out.csv"
    command = [
        sys.executable,
        "-c",
        SCRIPT,
        served.settings.resolved_tracking_uri,
        str(source),
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.read_csv(out, float_precision="round_trip")["probability"].to_numpy()


def _api(served, payload: list[dict]) -> np.ndarray:
    """/predict-batch answers, READMIT_MAX_BATCH records at a time; every record is scored."""
    size = served.settings.max_batch
    out: list[float] = []
    for start in range(0, len(payload), size):
        response = served.client.post(
            "/predict-batch", json={"records": payload[start : start + size]}
        )
        assert response.status_code == 200, response.text[:2000]
        body = response.json()
        assert body["rejected"] == 0, [r["error"] for r in body["results"] if r["error"]][:5]
        out += [r["probability"] for r in body["results"]]
    return np.asarray(out)


def _api_records(rows: pd.DataFrame) -> list[dict]:
    """The rows as a caller sends them to the API: field names, JSON numbers, null for '?'."""
    return records(typed_rows(rows)[[f for f in FIELDS if f != "readmitted"]])


def test_the_whole_test_split_read_with_pandas_defaults_scores_as_the_api(
    served, test_split_csv, tmp_path
):
    path, rows = test_split_csv
    read = pd.read_csv(path)
    assert read["max_glu_serum"].isna().any()  # pandas' defaults read the category "None" as NaN
    assert "A1Cresult" in read.columns and "glyburide-metformin" in read.columns
    fresh = _fresh_process(served, path, tmp_path)
    expected = _api(served, _api_records(rows))
    assert len(fresh) == len(expected) == len(rows) > 10_000
    np.testing.assert_array_equal(fresh, expected)


def test_the_frame_of_the_issue_and_every_missing_marker_score_as_the_api(
    served, test_split_csv, tmp_path
):
    path, rows = test_split_csv
    rows = rows.head(800)
    # Read as in MLflow's documentation: "?" as NaN, codes as text, renamed to the API's names.
    read = pd.read_csv(
        path,
        na_values="?",
        keep_default_na=False,
        nrows=len(rows),
        dtype={"diag_1": str, "diag_2": str, "diag_3": str},
    )
    frame = read.rename(columns=FIELD_OF_SOURCE).drop(columns=["readmitted"]).astype(object)
    payload = _api_records(rows)
    markers = [None, np.nan, pd.NA, "?"]
    for i in range(len(frame)):
        for j, name in enumerate(NULLABLE):
            if (i + j) % 3 == 0:  # about a third of every nullable field, each marker in each
                frame.at[i, name] = markers[(i + j) % 4]
                payload[i][name] = None
    for name in NULLABLE:
        assert {type(v) for v in frame[name]} >= {type(None), float, type(pd.NA), str}
    source = tmp_path / "frame.pkl"
    frame.to_pickle(source)
    fresh = _fresh_process(served, source, tmp_path)
    np.testing.assert_array_equal(fresh, _api(served, payload))


def test_mlflow_models_predict_scores_the_raw_file(served, test_split_csv, tmp_path):
    path, rows = test_split_csv
    small = tmp_path / "small.csv"
    small.write_text("".join(path.read_text().splitlines(keepends=True)[:41]))  # header + 40
    out = tmp_path / "predictions.json"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "predict",
        "-m",
        "models:/readmission@production",
        "-i",
        str(small),
        "-t",
        "csv",
        "-o",
        str(out),
        "--env-manager",
        "local",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": served.settings.resolved_tracking_uri}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    predicted = [p["probability"] for p in json.loads(out.read_text())["predictions"]]
    assert len(predicted) == 40
    np.testing.assert_allclose(
        predicted, _api(served, _api_records(rows.head(40))), rtol=0, atol=1e-12
    )


def test_mlflow_models_serve_takes_json_records_under_either_naming(served, test_split_csv):
    from fastapi.testclient import TestClient
    from mlflow.pyfunc.scoring_server import init

    path, rows = test_split_csv
    read = pd.read_csv(path, nrows=30)
    model = mlflow.pyfunc.load_model(registry.production_uri(served.settings))
    with TestClient(init(model)) as client:
        split = json.loads(read.to_json(orient="split", index=False))
        fields = json.loads(read.rename(columns=FIELD_OF_SOURCE).to_json(orient="records"))
        bodies = [{"dataframe_split": split}, {"dataframe_records": fields}]
        answers = [client.post("/invocations", json=body) for body in bodies]
        bad = client.post(
            "/invocations",
            json={
                "dataframe_split": {
                    **split,
                    "columns": ["sex" if c == "gender" else c for c in split["columns"]],
                }
            },
        )
    expected = _api(served, _api_records(rows.head(30)))
    for answer in answers:
        assert answer.status_code == 200, answer.text[:2000]
        predicted = [p["probability"] for p in answer.json()["predictions"]]
        np.testing.assert_allclose(predicted, expected, rtol=0, atol=1e-12)
    assert bad.status_code == 400 and "gender" in bad.json()["message"]


@pytest.mark.parametrize(
    ("dropped", "named"),
    [("A1Cresult", "a1cresult (or A1Cresult)"), ("race", "race"), ("diabetesMed", "diabetesmed")],
)
def test_a_missing_column_is_an_error_naming_it(served, test_split_csv, dropped, named):
    path, _ = test_split_csv
    model = mlflow.pyfunc.load_model(registry.production_uri(served.settings))
    frame = pd.read_csv(path, nrows=20).drop(columns=[dropped])
    with pytest.raises(MlflowException, match=re.escape(named)):
        model.predict(frame)


def test_a_bad_value_is_an_error_naming_column_and_row(served, test_split_csv):
    path, _ = test_split_csv
    model = mlflow.pyfunc.load_model(registry.production_uri(served.settings))
    frame = pd.read_csv(path, nrows=20)
    frame.loc[4, "gender"] = "Robot"
    with pytest.raises(MlflowException, match=r"gender: 'Robot' is not one of .* \(at index 4\)"):
        model.predict(frame)
