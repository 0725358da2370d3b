"""A smaller data set for the orchestration tests: the header and the first rows of the real
CSV, byte for byte, written to a temporary file with its own checksum."""

from __future__ import annotations

import hashlib
from pathlib import Path

from readmit.dataset import read_csv_bytes


def write_subset(dataset_uri: str, rows: int, folder: Path) -> tuple[Path, str]:
    """Path and SHA-256 of a CSV holding the first `rows` rows of the data set."""
    lines = read_csv_bytes(Path(dataset_uri)).splitlines(keepends=True)
    data = b"".join(lines[: rows + 1])
    target = folder / f"diabetic_data_first_{rows}.csv"
    target.write_bytes(data)
    return target, hashlib.sha256(data).hexdigest()
