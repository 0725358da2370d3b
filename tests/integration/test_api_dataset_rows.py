"""Rows of the data set's own file, as pandas parses them and sent as JSON, are accepted under
the data set's column names (A1Cresult, diabetesMed, glyburide-metformin) and score as the same
rows under the API's field names."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from readmit.dataset import parse_csv, read_csv_bytes, typed_rows
from readmit.schema import FIELDS
from readmit.serving.schemas import EXAMPLE
from tests.models import records

ROWS = 300


@pytest.fixture(scope="module")
def file_rows(dataset_uri) -> tuple[list[dict], list[dict]]:
    """The first rows of diabetic_data.csv: as `pd.read_csv` parses them (the data set's names
    and values, NaN as null), and as API field names and types."""
    data = read_csv_bytes(Path(dataset_uri))
    head = b"\n".join(data.splitlines()[: ROWS + 1]) + b"\n"
    parsed = pd.read_csv(io.BytesIO(head))
    as_parsed = json.loads(parsed.to_json(orient="records"))
    typed = typed_rows(parse_csv(head, dataset_uri))
    as_fields = records(typed[[f for f in FIELDS if f != "readmitted"]])
    return as_parsed, as_fields


def _batch(client, rows: list[dict]) -> list[float]:
    response = client.post("/predict-batch", json={"records": rows})
    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    assert body["rejected"] == 0, [r["error"] for r in body["results"] if r["error"]][:5]
    return [r["probability"] for r in body["results"]]


def test_file_rows_as_parsed_score_as_the_same_rows_under_field_names(served, file_rows):
    as_parsed, as_fields = file_rows
    assert {"A1Cresult", "diabetesMed", "glyburide-metformin", "readmitted"} <= set(as_parsed[0])
    assert any(r["max_glu_serum"] is None for r in as_parsed)  # pandas reads "None" as NaN
    expected = _batch(served.client, as_fields)
    assert len(expected) == ROWS
    np.testing.assert_array_equal(_batch(served.client, as_parsed), expected)
    for i in (0, 1, ROWS - 1):
        response = served.client.post("/predict", json=as_parsed[i])
        assert response.status_code == 200, response.text
        assert response.json()["probability"] == expected[i]


def test_a_numeric_diagnosis_code_scores_as_its_text(served):
    as_text = served.client.post("/predict", json={**EXAMPLE, "diag_2": "250.01"}).json()
    as_number = served.client.post("/predict", json={**EXAMPLE, "diag_2": 250.01})
    assert as_number.status_code == 200, as_number.text
    assert as_number.json()["probability"] == as_text["probability"]


def test_a_field_under_both_names_is_refused_naming_both(served):
    both = {**EXAMPLE, "A1Cresult": ">8"}
    response = served.client.post("/predict", json=both)
    assert response.status_code == 422
    assert "A1Cresult and a1cresult name the same field" in response.text
    batch = served.client.post("/predict-batch", json={"records": [EXAMPLE, both]}).json()
    assert batch["scored"] == 1
    assert "A1Cresult and a1cresult name the same field" in batch["results"][1]["error"]


def test_a_bad_value_under_the_data_sets_name_is_named(served):
    renamed = {k: v for k, v in EXAMPLE.items() if k != "diabetesmed"}
    response = served.client.post("/predict", json={**renamed, "diabetesMed": "Maybe"})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "diabetesmed"]]
