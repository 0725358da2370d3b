"""Obtain, verify and read the UCI archive, from a URL or a local zip or CSV."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pandas as pd
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from readmit.errors import DatasetError
from readmit.schema import COLUMNS, INTEGER_FIELDS, SOURCE_NAMES
from readmit.settings import Settings

CSV_NAME = "diabetic_data.csv"


@dataclass(frozen=True)
class Dataset:
    """The source rows as strings, exactly as in the CSV, in `encounter_id` order."""

    frame: pd.DataFrame
    sha256: str
    source: str


def is_url(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def download(url: str, target_dir: Path, show_progress: bool = True) -> Path:
    """Fetch `url` into `target_dir` (kept as a cache); a partial file never takes the name."""
    name = Path(urlparse(url).path).name or "dataset.zip"
    target = target_dir / name
    if target.exists():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as response:
            if response.status_code != 200:
                raise DatasetError(f"dataset: {url} answered HTTP {response.status_code}")
            total = int(response.headers.get("content-length", 0)) or None
            columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(),
                       TransferSpeedColumn())  # fmt: skip
            with Progress(*columns, disable=not show_progress) as progress, partial.open("wb") as f:
                task = progress.add_task(f"downloading {name}", total=total)
                for chunk in response.iter_bytes(1 << 16):
                    f.write(chunk)
                    progress.update(task, advance=len(chunk))
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"dataset: cannot download {url}: {exc}") from exc
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


def parse_csv(data: bytes, source: str) -> pd.DataFrame:
    """Every value as its source string: '?' stays '?', the category 'None' stays 'None'."""
    try:
        frame = pd.read_csv(
            io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False, engine="c"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"dataset: {source} is not a readable CSV: {exc}") from exc
    missing = [c for c in SOURCE_NAMES if c not in frame.columns]
    if missing:
        raise DatasetError(f"dataset: {source} lacks column(s): {', '.join(missing)}")
    return frame[list(SOURCE_NAMES)]


def order_by_encounter(frame: pd.DataFrame) -> pd.DataFrame:
    """Source rows in `encounter_id` order; unparseable ids go last, to be rejected later."""
    key = pd.to_numeric(frame["encounter_id"], errors="coerce")
    order = key.sort_values(kind="stable", na_position="last").index
    return frame.loc[order].reset_index(drop=True)


def typed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Validated source rows with field names (as in the databases); integers as integers."""
    typed = frame.rename(columns={c.source: c.field for c in COLUMNS})
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
    return Dataset(frame=frame, sha256=digest, source=uri)
