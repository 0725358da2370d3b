"""The API's patient history lookup: the feature view's rows, held in process.

Feast's online read costs milliseconds per call here (bench/api.py measures it), over the
0.5 ms a /predict may spend on history, and its online store keeps only each patient's latest
row, while a replayed encounter must get the history as of itself. So the API serves from this
cache of the feature view's source rows (clean-db `patient_history`, the same definitions Feast
applies and materialises), reloaded when a newer materialisation is recorded in clean-db.

Per patient: encounter ids in order and the history through each. The history of encounter `e`
is the row of the patient's last encounter before `e` (every row when `e` is not given or is
new): never `e` itself or a later one.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from readmit.errors import first_line
from readmit.schema import HISTORY_FIELDS, is_missing
from readmit.settings import Settings
from readmit.storage.clean import last_materialisation, open_clean_db, read_history

log = logging.getLogger(__name__)
Source = Literal["store", "request", "new_patient", "unavailable"]
ZEROS: dict[str, int] = dict.fromkeys(HISTORY_FIELDS, 0)


@dataclass(frozen=True)
class Snapshot:
    """One materialisation's history, by patient: (encounter ids, history rows)."""

    materialisation: int | None
    patients: dict[int, tuple[list[int], list[tuple[int, ...]]]]

    @classmethod
    def from_rows(cls, materialisation: int | None, rows: Any) -> Snapshot:
        order = np.lexsort((rows["encounter_id"].to_numpy(), rows["patient_nbr"].to_numpy()))
        patients_col = rows["patient_nbr"].to_numpy()[order]
        ids = rows["encounter_id"].to_numpy()[order].tolist()
        values = [tuple(v) for v in rows[list(HISTORY_FIELDS)].to_numpy()[order].tolist()]
        starts = np.flatnonzero(np.r_[True, patients_col[1:] != patients_col[:-1]]).tolist()
        ends = [*starts[1:], len(ids)]
        patients = {
            int(patients_col[s]): (ids[s:e], values[s:e]) for s, e in zip(starts, ends, strict=True)
        }
        return cls(materialisation, patients)

    def history(self, patient_nbr: int, encounter_id: int | None) -> tuple[dict[str, int], Source]:
        found = self.patients.get(patient_nbr)
        if found is None:
            return dict(ZEROS), "new_patient"
        ids, values = found
        before = len(ids) if encounter_id is None else bisect_left(ids, encounter_id)
        if before == 0:
            return dict(ZEROS), "store"
        return dict(zip(HISTORY_FIELDS, values[before - 1], strict=True)), "store"


class HistoryLookup:
    """The history cache of one API process, refreshed in the background."""

    def __init__(self, settings: Settings, on_unavailable: Any = None) -> None:
        self.settings = settings
        self.snapshot: Snapshot | None = None
        self.last_error: str | None = None
        self._on_unavailable = on_unavailable or (lambda: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Reload when clean-db records a newer materialisation; False when the store cannot
        be read (the previous snapshot, if any, goes on serving)."""
        try:
            engine = open_clean_db(self.settings)
            try:
                newest = last_materialisation(engine)
                if newest is None:
                    raise LookupError("the feature store has not been materialised yet")
                if self.snapshot is not None and self.snapshot.materialisation == newest:
                    return True
                snapshot = Snapshot.from_rows(newest, read_history(engine))
            finally:
                engine.dispose()
        except Exception as exc:  # a store that is down degrades the answer, never the API
            self.last_error = first_line(exc)
            log.warning("patient history store unavailable", extra={"error": self.last_error})
            return False
        self.snapshot, self.last_error = snapshot, None
        log.info(
            "patient history loaded",
            extra={"materialisation": newest, "patients": len(snapshot.patients)},
        )
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="history-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        self.refresh()
        while not self._stop.wait(self.settings.history_poll_seconds):
            self.refresh()

    def resolve(self, records: Iterable[dict[str, Any]]) -> list[Source]:
        """Fill each record's history in place; returns where each record's history came from.

        History fields the caller sent win (`request`); a record without `patient_nbr` and
        without history is scored as a new patient. One pass over the snapshot in memory: a
        batch costs no round trip per record."""
        snapshot = self.snapshot
        sources: list[Source] = []
        for record in records:
            if any(not is_missing(record.get(name)) for name in HISTORY_FIELDS):
                for name in HISTORY_FIELDS:
                    if is_missing(record.get(name)):
                        record[name] = 0
                sources.append("request")
                continue
            patient: Any = record.get("patient_nbr")
            if is_missing(patient):
                record.update(ZEROS)
                sources.append("new_patient")
                continue
            if snapshot is None:
                record.update(ZEROS)
                self._on_unavailable()
                sources.append("unavailable")
                continue
            encounter: Any = record.get("encounter_id")
            at = None if is_missing(encounter) else int(encounter)
            history, source = snapshot.history(int(patient), at)
            record.update(history)
            sources.append(source)
        return sources


def timed_lookups(lookup: HistoryLookup, patients: list[int], rounds: int = 1) -> float:
    """Mean seconds per single-record lookup (for the bench)."""
    clock = time.perf_counter()
    for _ in range(rounds):
        for patient in patients:
            lookup.resolve([{"patient_nbr": patient}])
    return (time.perf_counter() - clock) / (rounds * max(len(patients), 1))
