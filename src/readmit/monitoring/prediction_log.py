"""The prediction log writer: every scored record reaches monitor-db, off the request path.

A route hands over what it scored (`add`, constant time, never touching the database). A
background thread expands that into rows and writes them in bulk every
READMIT_PREDICTION_LOG_FLUSH_SECONDS or READMIT_PREDICTION_LOG_FLUSH_ROWS. When monitor-db is
down or slow, rows go to an append-only spill file (0600 in a 0700 folder) and are replayed
once it answers again; each row's id is made at scoring time, so a replay never duplicates.
At most READMIT_PREDICTION_LOG_MAX_PENDING rows wait (memory plus spill file); beyond that,
rows are dropped, counted in /metrics and logged. Stopping flushes what is left (to the spill
file if the database is still down; the next start replays it).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from readmit.errors import StorageError, first_line
from readmit.monitoring.pseudonym import pseudonym, pseudonym_key
from readmit.schema import HISTORY_FIELDS, MODEL_FIELDS, is_missing
from readmit.serving.metrics import Metrics
from readmit.settings import Settings
from readmit.storage import monitor
from readmit.storage.db import WRITE_FIRST
from readmit.storage.monitor import Variant

log = logging.getLogger(__name__)
LOGGED_FIELDS = MODEL_FIELDS
SPILL_PATTERN = "predictions-*.jsonl"


@dataclass(slots=True)
class Scored:
    """The records one request scored, as the route had them (validated, not yet rows).
    Not frozen: a frozen dataclass costs several times more to build, on the request path."""

    batch_id: str
    scored_at: datetime
    request_id: str
    model_name: str
    model_version: str
    model_alias: str
    threshold: float
    records: list[dict[str, Any]]
    probabilities: list[float]
    variant: str = Variant.CHAMPION.value

    def head(self, count: int) -> Scored:
        return replace(self, records=self.records[:count], probabilities=self.probabilities[:count])

    def rows(self, key: bytes) -> list[dict[str, Any]]:
        """One log row per record: the patient as a keyed pseudonym, never the number."""
        variant = str(self.variant)
        return [
            {
                "row_id": f"{self.batch_id}-{index}",
                "scored_at": self.scored_at,
                "request_id": self.request_id,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "model_alias": self.model_alias,
                "encounter_id": record.get("encounter_id"),
                "patient_key": _patient_key(key, record.get("patient_nbr")),
                "probability": float(probability),
                "readmitted_30d": bool(probability >= self.threshold),
                "threshold": self.threshold,
                "features": logged_fields(record),
                "variant": variant,
            }
            for index, (record, probability) in enumerate(
                zip(self.records, self.probabilities, strict=True)
            )
        ]


def _patient_key(key: bytes, patient_nbr: Any) -> str | None:
    return None if patient_nbr is None else pseudonym(key, patient_nbr)


def logged_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The model's input fields of a validated record, as /predict's Encounter holds them:
    any missing marker as null, an absent history count as 0; identifiers left out."""
    fields = {}
    for name in LOGGED_FIELDS:
        value = record.get(name)
        fields[name] = None if value is None or is_missing(value) else value
    for name in HISTORY_FIELDS:
        if fields[name] is None:
            fields[name] = 0
    return fields


class SpillFile:
    """This process's append-only file of rows waiting for monitor-db, locked while it lives,
    so another process replays it only once this one is gone."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rows = 0
        self.path: Path | None = None
        self._handle: IO[str] | None = None

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write and sync rows; the caller counts them in `rows` (under its lock)."""
        handle = self._open()
        handle.write("".join(json.dumps(_plain(row)) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())

    def read(self) -> list[dict[str, Any]]:
        if self.path is None or self.rows == 0:
            return []
        return _parse(self.path)

    def clear(self) -> None:
        if self._handle is not None:
            os.ftruncate(self._handle.fileno(), 0)

    def close(self) -> None:
        if self._handle is not None and self.path is not None:
            if self.rows == 0:
                self.path.unlink(missing_ok=True)
            self._handle.close()
            self._handle = None
            self.path = None

    def _open(self) -> IO[str]:
        """Created under a hidden name and locked before it gets the name others look for."""
        if self._handle is None:
            private_folder(self.folder)
            name = f"predictions-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
            draft = self.folder / f".{name}"
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.rename(draft, self.folder / name)
            self.path = self.folder / name
            self._handle = os.fdopen(descriptor, "a", encoding="utf-8")
        return self._handle


def private_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "scored_at": row["scored_at"].isoformat()}


def _parse(path: Path) -> list[dict[str, Any]]:
    """Rows of a spill file; a torn last line (a crash mid-write) is skipped and logged."""
    rows, torn = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            row["scored_at"] = datetime.fromisoformat(row["scored_at"])
            row.setdefault("variant", Variant.CHAMPION.value)  # spilled before variants existed
        except (ValueError, KeyError, TypeError):
            torn += 1
            continue
        rows.append(row)
    if torn:
        log.error("spill file %s: %d unreadable line(s) skipped", path.name, torn)
    return rows


def orphan_files(folder: Path, own: Path | None) -> Iterator[tuple[Path, IO[str]]]:
    """Spill files of processes that are gone (their lock is free), each locked while used."""
    for path in sorted(folder.glob(SPILL_PATTERN)) if folder.is_dir() else []:
        if own is not None and path == own:
            continue
        try:
            handle = path.open("r", encoding="utf-8")
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield path, handle
        finally:
            handle.close()


class PredictionLog:
    """Queue, background writer and spill file of one API process."""

    def __init__(self, settings: Settings, metrics: Metrics, engine: Engine | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.engine = engine or monitor.monitor_engine(
            settings, settings.prediction_log_timeout_seconds
        )
        self.spill = SpillFile(settings.prediction_spill_dir)
        self._key = b""
        self._queue: deque[Scored] = deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._flushing = threading.RLock()  # one flush at a time: a caller's waits for the writer's
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._tables_ready = False
        # Row ids: a random token per writer and a counter; unique across processes and
        # restarts, and far cheaper per request than a fresh uuid4.
        self._token = uuid.uuid4().hex[:16]
        self._counter = itertools.count()

    @property
    def pending(self) -> int:
        """Rows waiting for monitor-db: queued in memory plus in this process's spill file."""
        return self._queued + self.spill.rows

    def record(
        self,
        request_id: str,
        model: tuple[str, str, str],
        threshold: float,
        records: list[dict[str, Any]],
        probabilities: list[float],
        variant: str = Variant.CHAMPION.value,
    ) -> None:
        """Request path: stamp what one request scored (scoring time, a unique id from which
        the row ids derive) and queue it. `model` is (name, version, alias); `variant` says
        whether the caller got these scores (champion, challenger) or not (shadow)."""
        name, version, alias = model
        batch_id = f"{self._token}-{next(self._counter)}"
        self.add(
            Scored(
                batch_id,
                datetime.now(UTC),
                request_id,
                name,
                version,
                alias,
                threshold,
                records,
                probabilities,
                variant,
            )
        )

    def add(self, scored: Scored) -> None:
        """Request path: queue the records in constant time; drop (counted) beyond the bound."""
        count = len(scored.records)
        with self._lock:
            room = self.settings.prediction_log_max_pending - self.pending
            kept = max(0, min(count, room))
            if kept:
                self._queue.append(scored if kept == count else scored.head(kept))
                self._queued += kept
            depth = self.pending
        if kept < count:
            self.metrics.log_dropped.inc(count - kept)
            log.warning(
                "prediction log full: %d scored record(s) dropped",
                count - kept,
                extra={"request_id": scored.request_id, "pending": depth},
            )
        if self._queued >= self.settings.prediction_log_flush_rows:
            self._wake.set()

    def start(self) -> None:
        """Resolve the pseudonym key now (a missing key fails the start, not a request) and
        start the writer thread."""
        self._key = pseudonym_key(self.settings)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Flush and stop: rows still queued reach monitor-db or the spill file."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.spill.close()
        self.engine.dispose()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.prediction_log_flush_seconds)
            self._wake.clear()
            self._flush_guarded()
        self._flush_guarded()

    def _flush_guarded(self) -> None:
        """An unexpected error is logged and counted; the writer keeps running."""
        try:
            self.flush()
        except Exception:
            self.metrics.log_flush_failures.inc()
            log.exception("prediction log: flush failed")

    def flush(self) -> None:
        """Write what waits: spilled rows first, then the queue; after a failure (or while
        the database is known to be down) the queue goes to the spill file instead."""
        with self._flushing:
            written = time.monotonic() >= self._retry_at and self._replay() and self._write_queue()
            if not written:
                self._spill_queue()
            self.metrics.log_pending.set(self.pending)

    def _take(self) -> list[Scored]:
        """Up to FLUSH_ROWS rows' worth of queued items (still counted as pending)."""
        taken, rows = [], 0
        with self._lock:
            while self._queue and rows < self.settings.prediction_log_flush_rows:
                taken.append(self._queue.popleft())
                rows += len(taken[-1].records)
        return taken

    def _write_queue(self) -> bool:
        while taken := self._take():
            rows = [row for scored in taken for row in scored.rows(self._key)]
            if not self._insert(rows):
                self._to_spill(rows)
                return False
            with self._lock:
                self._queued -= len(rows)
        return True

    def _spill_queue(self) -> None:
        while taken := self._take():
            self._to_spill([row for scored in taken for row in scored.rows(self._key)])

    def _to_spill(self, rows: list[dict[str, Any]]) -> None:
        """Move rows from the queue to the spill file; if that fails too, they are dropped."""
        try:
            self.spill.append(rows)
            spilled = len(rows)
            self.metrics.log_spilled.inc(spilled)
        except OSError as exc:
            spilled = 0
            self.metrics.log_dropped.inc(len(rows))
            log.error("prediction log: spill file failed, %d row(s) dropped: %s", len(rows), exc)
        with self._lock:
            self._queued -= len(rows)
            self.spill.rows += spilled

    def _replay(self) -> bool:
        """Spilled rows (this process's, then those of processes that are gone) to the
        database; True when nothing is left waiting."""
        if self.spill.rows:
            if not self._insert_chunks(self.spill.read()):
                return False
            with self._lock:
                self.spill.clear()
                self.spill.rows = 0
        for path, _ in orphan_files(self.settings.prediction_spill_dir, self.spill.path):
            if not self._insert_chunks(_parse(path)):
                return False
            path.unlink(missing_ok=True)
            log.info("prediction log: replayed spill file %s", path.name)
        return True

    def _insert_chunks(self, rows: list[dict[str, Any]]) -> bool:
        step = self.settings.prediction_log_flush_rows
        return all(self._insert(rows[i : i + step]) for i in range(0, len(rows), step))

    def _insert(self, rows: list[dict[str, Any]]) -> bool:
        """One bulk insert in one transaction; a failure is counted, logged and retried later."""
        try:
            if not self._tables_ready:
                monitor.ensure_tables(self.engine)
            with self.engine.execution_options(**{WRITE_FIRST: True}).begin() as conn:
                added = monitor.insert_predictions(conn, rows)
        except (SQLAlchemyError, StorageError, OSError) as exc:
            self._tables_ready = False
            self._retry_at = time.monotonic() + self.settings.prediction_log_retry_seconds
            self.metrics.log_flush_failures.inc()
            log.warning(
                "prediction log: monitor-db write failed, rows kept for a retry: %s",
                first_line(getattr(exc, "orig", None) or exc) or type(exc).__name__,
            )
            return False
        self._tables_ready = True
        self.metrics.log_rows.inc(added)
        return True
