import hashlib
import io
import zipfile

import pytest

from readmit.dataset import ROW_PROBLEM, load_dataset, parse_careful, parse_csv
from readmit.errors import DatasetError
from readmit.settings import Settings
from tests.synthetic import synthetic_rows


def _csv_bytes(n: int = 50) -> bytes:
    buffer = io.StringIO()
    synthetic_rows(n).iloc[::-1].to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def _settings(tmp_path, uri, data: bytes | None = None, **extra) -> Settings:
    checksum = hashlib.sha256(data).hexdigest() if data is not None else "0" * 64
    return Settings(
        data_dir=tmp_path / "state", dataset_uri=str(uri), dataset_sha256=checksum, **extra
    )


def test_reads_the_csv_from_anywhere_inside_a_zip_in_encounter_order(tmp_path):
    data = _csv_bytes()
    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("some/folder/diabetic_data.csv", data)
        archive.writestr("some/folder/IDs_mapping.csv", "x,y\n")
    dataset = load_dataset(_settings(tmp_path, path, data), show_progress=False)
    assert len(dataset.frame) == 50
    assert dataset.sha256 == hashlib.sha256(data).hexdigest()
    ids = dataset.frame["encounter_id"].astype(int).tolist()
    assert ids == sorted(ids)


def test_none_and_question_mark_stay_source_strings(tmp_path):
    data = _csv_bytes(200)
    path = tmp_path / "diabetic_data.csv"
    path.write_bytes(data)
    frame = load_dataset(_settings(tmp_path, path, data), show_progress=False).frame
    assert "None" in set(frame["max_glu_serum"]) and "None" in set(frame["A1Cresult"])
    assert frame.notna().all().all()
    assert "?" in set(frame["diag_3"])


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"file not found: .*nowhere\.zip"):
        load_dataset(_settings(tmp_path, tmp_path / "nowhere.zip"), show_progress=False)


def test_truncated_zip(tmp_path):
    data = _csv_bytes()
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("diabetic_data.csv", data)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    with pytest.raises(DatasetError, match=r"cut\.zip.*(truncated|corrupt)"):
        load_dataset(_settings(tmp_path, cut, data), show_progress=False)


def test_zip_without_the_csv(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "nothing here")
    with pytest.raises(DatasetError, match=r"no diabetic_data\.csv inside"):
        load_dataset(_settings(tmp_path, path), show_progress=False)


def test_csv_with_a_missing_column_names_it(tmp_path):
    frame = synthetic_rows(20).drop(columns=["A1Cresult", "insulin"])
    data = frame.to_csv(index=False).encode()
    path = tmp_path / "diabetic_data.csv"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match="lacks column\\(s\\): A1Cresult, insulin"):
        load_dataset(_settings(tmp_path, path, data), show_progress=False)


def test_wrong_checksum_is_an_error_unless_opted_out(tmp_path):
    data = _csv_bytes()
    path = tmp_path / "diabetic_data.csv"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset(_settings(tmp_path, path), show_progress=False)
    opted_out = _settings(tmp_path, path, verify_checksum=False)
    assert len(load_dataset(opted_out, show_progress=False).frame) == 50


def test_bad_url_is_a_clear_error_and_leaves_no_partial_file(tmp_path):
    settings = _settings(tmp_path, "http://127.0.0.1:9/dataset_diabetes.zip")
    with pytest.raises(DatasetError, match=r"cannot download http://127\.0\.0\.1:9/"):
        load_dataset(settings, show_progress=False)
    assert not list(settings.download_dir.glob("*"))


def test_copy_text_escapes_specials_and_writes_nulls():
    import pandas as pd

    from readmit.storage.db import copy_text

    frame = pd.DataFrame({"a": ["x\ty", None, "back\\slash", "\\N"], "b": [1, 2, 3, 4]})
    assert copy_text(frame) == "x\\ty\t1\n\\N\t2\nback\\\\slash\t3\n\\\\N\t4\n"


def _with_bad_lines(n: int = 40) -> bytes:
    """A CSV of `n` good rows plus rows of each unreadable kind (encounter ids 90001-90004)."""
    lines = _csv_bytes(n).decode().splitlines()
    good = lines[1].split(",")

    def row(encounter: str, values: list[str]) -> str:
        return ",".join([encounter, *values[1:]])

    bad = {
        "90001": row("90001", [*good, "extra"]),  # 51 fields
        "90002": row("90002", good[:-1]),  # 49 fields
        "90003": row("90003", good),  # non-UTF-8 byte, below
        "90004": row("90004", good),  # NUL inside a value, below
    }
    bad["90003"] = bad["90003"].replace(good[4], good[4] + "\udcff", 1)
    bad["90004"] = bad["90004"].replace(good[4], good[4][:1] + "\x00" + good[4][1:], 1)
    text = "\n".join([*lines, *bad.values()]) + "\n"
    return text.encode("utf-8", errors="surrogateescape")


def test_unreadable_rows_are_kept_with_why_and_the_rest_of_the_file_reads(tmp_path):
    data = _with_bad_lines()
    path = tmp_path / "diabetic_data.csv"
    path.write_bytes(data)
    dataset = load_dataset(_settings(tmp_path, path, data), show_progress=False)
    assert len(dataset.frame) == 44
    ids = dataset.frame["encounter_id"]
    problems = {ids[i]: reason for i, reason in dataset.problems.items()}
    assert problems == {
        "90001": "row has 51 fields, expected 50",
        "90002": "row has 49 fields, expected 50",
        "90003": "field 5 has byte 0xff, not UTF-8",
    }
    # The NUL row reads whole (no truncation), for the validation to refuse it.
    nul_row = dataset.frame[ids == "90004"].iloc[0]
    assert "\x00" in nul_row.iloc[4] and len(nul_row.iloc[4]) > 2


def test_the_fast_and_the_careful_reader_agree_on_a_plain_file():
    data = _csv_bytes(300)
    fast = parse_csv(data, "test")
    careful = parse_careful(data, "test")
    assert fast.equals(careful.astype(fast.dtypes.to_dict()))
    assert fast[ROW_PROBLEM].eq("").all()
