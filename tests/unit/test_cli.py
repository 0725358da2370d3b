"""The CLI turns every bad input into one line naming what and where, and a non-zero exit."""

from __future__ import annotations

import json
import zipfile

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from readmit.cli import app
from tests.synthetic import synthetic_rows

runner = CliRunner()


def _run(tmp_path, *args, **env):
    base = {"READMIT_DATA_DIR": str(tmp_path / "state"), "READMIT_VERIFY_CHECKSUM": "true"}
    return runner.invoke(app, list(args), env={**base, **env})


def _assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _raw_rows(tmp_path) -> int:
    db = tmp_path / "state" / "raw.db"
    if not db.exists():
        return 0
    engine = sa.create_engine(f"sqlite:///{db}")
    tables = sa.inspect(engine).get_table_names()
    with engine.connect() as conn:
        return sum(
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in tables
            if t.startswith("raw_")
        )


def _csv(tmp_path, frame=None):
    path = tmp_path / "diabetic_data.csv"
    (synthetic_rows(300) if frame is None else frame).to_csv(path, index=False)
    return path


def test_missing_file(tmp_path):
    result = _run(tmp_path, "ingest", READMIT_DATASET_URI=str(tmp_path / "absent.zip"))
    _assert_one_line_error(result, "file not found", "absent.zip")
    assert _raw_rows(tmp_path) == 0


def test_bad_url(tmp_path):
    result = _run(tmp_path, "ingest", READMIT_DATASET_URI="http://127.0.0.1:9/data.zip")
    _assert_one_line_error(result, "cannot download", "http://127.0.0.1:9/data.zip")


def test_truncated_zip(tmp_path):
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(_csv(tmp_path), "diabetic_data.csv")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole.read_bytes()[:400])
    result = _run(tmp_path, "ingest", READMIT_DATASET_URI=str(cut))
    _assert_one_line_error(result, "cut.zip")
    assert _raw_rows(tmp_path) == 0


def test_csv_with_a_missing_column(tmp_path):
    path = _csv(tmp_path, synthetic_rows(50).drop(columns=["num_medications"]))
    result = _run(
        tmp_path, "ingest", READMIT_DATASET_URI=str(path), READMIT_VERIFY_CHECKSUM="false"
    )
    _assert_one_line_error(result, "lacks column(s): num_medications")
    assert _raw_rows(tmp_path) == 0


def test_wrong_checksum(tmp_path):
    result = _run(tmp_path, "ingest", READMIT_DATASET_URI=str(_csv(tmp_path)))
    _assert_one_line_error(result, "checksum mismatch", "READMIT_VERIFY_CHECKSUM")
    assert _raw_rows(tmp_path) == 0


@pytest.mark.parametrize("command", ["ingest", "clean", "status"])
def test_unreachable_database(tmp_path, command):
    url = "postgresql+psycopg://postgres@127.0.0.1:1/raw"
    result = _run(tmp_path, command, READMIT_RAW_DB_URL=url, READMIT_CLEAN_DB_URL=url)
    _assert_one_line_error(
        result, "cannot connect to postgresql+psycopg://postgres@127.0.0.1:1/raw"
    )


def test_clean_before_any_ingest(tmp_path):
    result = _run(tmp_path, "clean")
    _assert_one_line_error(result, "raw-db", "run `readmit ingest` first")


def test_ingest_clean_status_on_a_small_file(tmp_path):
    env = {
        "READMIT_DATASET_URI": str(_csv(tmp_path)),
        "READMIT_VERIFY_CHECKSUM": "false",
        "READMIT_BATCH_SIZE": "100",
    }
    first = _run(tmp_path, "ingest", **env)
    assert first.exit_code == 0, first.output
    assert "batch 1/3" in first.output and "2 pending" in first.output
    rest = _run(tmp_path, "ingest", "--all", **env)
    assert "batch 2/3" in rest.output and "batch 3/3" in rest.output and "0 pending" in rest.output
    noop = _run(tmp_path, "ingest", **env)
    assert "nothing to do" in noop.output
    assert _raw_rows(tmp_path) == 300
    cleaned = _run(tmp_path, "clean", **env)
    assert cleaned.exit_code == 0, cleaned.output
    assert "clean done: build" in cleaned.output
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state' / 'clean.db'}")
    with engine.begin() as conn:  # a clean-db laid out by an older feature list
        conn.execute(sa.text("ALTER TABLE clean_train DROP COLUMN diag_1_code3"))
    rebuilt = _run(tmp_path, "clean", **env)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "diag_1_code3" in {c["name"] for c in sa.inspect(engine).get_columns("clean_train")}
    status = _run(tmp_path, "status", **env)
    assert status.exit_code == 0, status.output
    assert "raw_train" in status.output and "last clean build" in status.output
    audit = [
        json.loads(line)
        for line in (tmp_path / "state" / "logs" / "pipeline.jsonl").read_text().splitlines()
    ]
    batches = [e for e in audit if e["msg"] == "batch loaded"]
    assert [e["batch_id"] for e in batches] == [1, 2, 3]
    assert sum(sum(e["inserted"].values()) for e in batches) == 300
    build = next(e for e in audit if e["msg"] == "clean build written")
    assert build["raw_batches"] == [1, 2, 3] and build["build_id"] in cleaned.output


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("READMIT_MODEL_NAME", "readmission' OR name LIKE '%"),
        ("READMIT_MODEL_NAME", ""),
        ("READMIT_STACK_DB_PREFIX", 'x"; DROP DATABASE raw; --'),
        ("READMIT_STACK_DB_PREFIX", "Upper-Case"),
    ],
)
def test_a_setting_that_would_reach_a_query_is_refused_naming_it(tmp_path, variable, value):
    result = _run(tmp_path, "ingest", **{variable: value})
    _assert_one_line_error(result, variable)
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("exporter", "READMIT_EXPORTER_PORT"),
        ("s3-server", "READMIT_S3_PORT"),
        ("monitor", "READMIT_MONITOR_WINDOW_DAYS"),
        ("monitor", "the one serving production"),
    ],
)
def test_help_names_the_setting_an_option_defaults_to(command, shown):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert shown in result.output


@pytest.mark.parametrize("value", ["abc", "-5", "inf"])
def test_a_bad_tuning_budget_is_one_line_naming_the_setting(tmp_path, value):
    result = _run(tmp_path, "train", READMIT_TUNE_SECONDS=value)
    _assert_one_line_error(result, "READMIT_TUNE_SECONDS")
