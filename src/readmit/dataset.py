"""Obtain, verify and read the UCI archive, from a URL or a local zip or CSV."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pandas as pd
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from readmit.errors import DatasetError
from readmit.files import private_dir, private_file
from readmit.schema import FIELD_OF_SOURCE, INTEGER_FIELDS, SOURCE_NAMES
from readmit.settings import Settings

CSV_NAME = "diabetic_data.csv"
ROW_PROBLEM = "_row_problem"


def _no_problems() -> pd.Series:
    return pd.Series(dtype=object)


@dataclass(frozen=True)
class Dataset:
    """The source rows as strings, exactly as in the CSV, in `encounter_id` order.

    `problems` holds, by row index, why a row could not be read as it is (wrong field count,
    bytes that are not UTF-8): such rows are rejected at ingest like any other bad row.
    """

    frame: pd.DataFrame
    sha256: str
    source: str
    problems: pd.Series = field(default_factory=_no_problems)


def is_url(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def download(url: str, target_dir: Path, show_progress: bool = True) -> Path:
    """Fetch `url` into `target_dir` (kept as a cache); a partial file never takes the name."""
    name = Path(urlparse(url).path).name or "dataset.zip"
    target = target_dir / name
    if target.exists():
        return target
    private_dir(target_dir)
    partial = private_file(target.with_suffix(target.suffix + ".part"))
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as response:
            if response.status_code != 200:
                raise DatasetError(f"dataset: {url} answered HTTP {response.status_code}")
            total = int(response.headers.get("content-length", 0)) or None
            columns = (
                *Progress.get_default_columns()[:1],
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
            )
            with Progress(*columns, disable=not show_progress) as progress, partial.open("wb") as f:
                task = progress.add_task(f"downloading {name}", total=total)
                for chunk in response.iter_bytes(1 << 16):
                    f.write(chunk)
                    progress.update(task, advance=len(chunk))
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"dataset: cannot download {url}: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


def read_csv_bytes(path: Path) -> bytes:
    """The bytes of diabetic_data.csv, from a plain CSV or from anywhere inside a zip."""
    if not path.exists():
        raise DatasetError(f"dataset: file not found: {path}")
    if path.is_dir():
        raise DatasetError(f"dataset: {path} is a directory, not a zip or CSV file")
    if not zipfile.is_zipfile(path):
        if path.suffix.lower() == ".zip":
            raise DatasetError(f"dataset: {path} is not a readable zip (truncated or corrupt)")
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if Path(n).name == CSV_NAME]
            if not members:
                raise DatasetError(f"dataset: no {CSV_NAME} inside {path}")
            return archive.read(members[0])
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DatasetError(f"dataset: {path} is truncated or corrupt: {exc}") from exc


def verify_checksum(data: bytes, settings: Settings, source: str) -> str:
    """SHA-256 of the CSV; a mismatch is an error unless verification is switched off."""
    digest = hashlib.sha256(data).hexdigest()
    expected = settings.dataset_sha256.strip().lower()
    if settings.verify_checksum and digest != expected:
        raise DatasetError(
            f"dataset: checksum mismatch for {source}: got {digest}, expected {expected} "
            "(set READMIT_DATASET_SHA256 to the new checksum, or READMIT_VERIFY_CHECKSUM=false)"
        )
    return digest


def _decode(data: bytes) -> tuple[str, bool]:
    """The text of the file, and whether some bytes were not UTF-8 (kept as surrogates)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="surrogateescape"), True


def _not_utf8(values: list[str]) -> str | None:
    """Why a row decoded with surrogateescape is not UTF-8, or None when it is."""
    for position, value in enumerate(values):
        for char in value:
            if "\udc80" <= char <= "\udcff":
                return f"field {position + 1} has byte 0x{ord(char) - 0xDC00:02x}, not UTF-8"
    return None


def _readable(value: str) -> str:
    """A value with its undecodable bytes as U+FFFD, so it can be hashed and stored."""
    return value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _row(values: list[str], width: int, check_bytes: bool) -> tuple[list[str], str]:
    """The row fitted to `width` fields, and its problem ('' for a sound row)."""
    problem = ""
    if len(values) != width:
        problem = f"row has {len(values)} fields, expected {width}"
        # Extra fields stay in the last one, so the row keeps a hash of its own.
        values = [*values[: width - 1], ",".join(values[width - 1 :])] if values else []
        values += [""] * (width - len(values))
    if check_bytes and (bad := _not_utf8(values)):
        problem = problem or bad
        values = [_readable(v) for v in values]
    return values, problem


def _plain_and_regular(data: bytes) -> bool:
    """True when the C parser reads the file exactly: UTF-8, no quotes or NULs, same width.

    Without quotes a line's fields are its commas plus one; pandas' C parser would silently
    pad a short row and cut a value at a NUL, so any other file takes the careful path.
    """
    if b'"' in data or b"\x00" in data:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    widths = {line.count(",") for line in text.splitlines() if line}
    return len(widths) <= 1


def _parse_fast(data: bytes, source: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False, engine="c"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"dataset: {source} is not a readable CSV: {exc}") from exc
    _check_header(list(frame.columns), source)
    return frame[list(SOURCE_NAMES)].assign(**{ROW_PROBLEM: ""})


def _check_header(header: list[str], source: str) -> None:
    missing = [c for c in SOURCE_NAMES if c not in header]
    if missing:
        raise DatasetError(f"dataset: {source} lacks column(s): {', '.join(missing)}")


def parse_careful(data: bytes, source: str) -> pd.DataFrame:
    """Row by row: a row that cannot be read as one value per column is kept, with why."""
    text, check_bytes = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.lstrip("\ufeff") for name in next(reader, [])]
        _check_header(header, source)
        rows: list[list[str]] = []
        problems: list[str] = []
        for values in reader:
            if not values:
                continue  # a blank line
            row, problem = _row(values, len(header), check_bytes)
            rows.append(row)
            problems.append(problem)
    except csv.Error as exc:
        raise DatasetError(
            f"dataset: {source} is not a readable CSV (line {reader.line_num}): {exc}"
        ) from exc
    columns = dict(zip(header, zip(*rows, strict=True), strict=True)) if rows else {}
    frame = pd.DataFrame({name: list(columns.get(name, ())) for name in SOURCE_NAMES}, dtype=object)
    frame[ROW_PROBLEM] = problems
    return frame


def parse_csv(data: bytes, source: str) -> pd.DataFrame:
    """Every value as its source string: '?' stays '?', the category 'None' stays 'None'.

    A row that cannot be read as one value per column (wrong field count, bytes that are not
    UTF-8) is kept with why in ROW_PROBLEM, so ingest rejects that row and keeps the rest. A
    plain, regular file (the UCI one) is read by pandas' C parser, many times faster.
    """
    if _plain_and_regular(data):
        return _parse_fast(data, source)
    return parse_careful(data, source)


def order_by_encounter(frame: pd.DataFrame) -> pd.DataFrame:
    """Source rows in `encounter_id` order; unparseable ids go last, to be rejected later."""
    key = pd.to_numeric(frame["encounter_id"], errors="coerce")
    order = key.sort_values(kind="stable", na_position="last").index
    return frame.loc[order].reset_index(drop=True)


def typed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Validated source rows with field names (as in the databases); integers as integers."""
    typed = frame.rename(columns=FIELD_OF_SOURCE)
    for name in INTEGER_FIELDS:
        typed[name] = typed[name].astype("int64")
    return typed


def load_dataset(settings: Settings, show_progress: bool = True) -> Dataset:
    """Obtain the archive named by the settings, verify it and return its rows in order."""
    uri = settings.dataset_uri
    path = download(uri, settings.download_dir, show_progress) if is_url(uri) else Path(uri)
    data = read_csv_bytes(path.expanduser())
    digest = verify_checksum(data, settings, uri)
    frame = order_by_encounter(parse_csv(data, uri))
    problems = frame.pop(ROW_PROBLEM)
    return Dataset(frame=frame, sha256=digest, source=uri, problems=problems[problems != ""])
