"""Seconds to parse the UCI CSV: readmit's row-tolerant reader against pandas' C engine.

Usage: READMIT_DATASET_URI=<zip> python bench/parse.py
readmit keeps a malformed row (wrong field count, bytes that are not UTF-8, a NUL) for
rejection instead of failing the whole file: a plain regular file is checked, then read by the
C parser; any other file row by row. This prints both paths next to plain pandas.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pandas as pd

from readmit.dataset import parse_careful, parse_csv, read_csv_bytes


def _best_of(runs: int, action: object) -> float:
    times = []
    for _ in range(runs):
        clock = time.perf_counter()
        action()  # type: ignore[operator]
        times.append(time.perf_counter() - clock)
    return min(times)


def main() -> None:
    data = read_csv_bytes(Path(os.environ["READMIT_DATASET_URI"]))
    rows = len(parse_csv(data, "bench"))

    def pandas_c() -> pd.DataFrame:
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False)

    ours = _best_of(3, lambda: parse_csv(data, "bench"))
    careful = _best_of(3, lambda: parse_careful(data, "bench"))
    baseline = _best_of(3, pandas_c)
    print(f"{rows:,} rows, best of 3")
    print(f"readmit parse_csv (plain file, checked then C parser): {ours:.2f} s")
    print(f"readmit parse_careful (path of a file with bad rows):  {careful:.2f} s")
    print(f"pandas read_csv C engine (baseline):                   {baseline:.2f} s")


if __name__ == "__main__":
    main()
