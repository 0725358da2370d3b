"""Champion and challenger in the API: who answers a record, and the challenger's shadow.

Modes (READMIT_CHALLENGER_MODE): `off`, the champion answers everything; `shadow`, the champion
answers and the challenger scores the same records after the response is sent, on a thread of
its own, so it never delays or fails a request (its failures are counted, logged and ignored);
`canary`, READMIT_CANARY_PERCENT of patients are answered by the challenger. A patient's arm is
a hash of its keyed pseudonym (of the encounter id when there is no patient), so a patient
always gets the same variant, in every API worker and across restarts; a record with neither
is answered by the champion. Every score reaches the prediction log with its variant.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from readmit.errors import first_line
from readmit.monitoring.prediction_log import PredictionLog
from readmit.monitoring.pseudonym import pseudonym
from readmit.registry import CHALLENGER
from readmit.serving.metrics import Metrics
from readmit.serving.model_store import LoadedModel
from readmit.storage.monitor import Variant

log = logging.getLogger(__name__)
SHADOW_MAX_PENDING = 20_000  # records waiting for the challenger; more are dropped, counted
FAILURE_LOG_SECONDS = 10.0  # a failing challenger logs once per this interval, with a count
_SCALE = float(16**15)
Answer = Literal["champion", "challenger"]  # the variants that answer callers


def bucket(key: bytes, patient_nbr: int | None, encounter_id: int | None) -> float | None:
    """Where a record falls in [0, 1): from its patient's pseudonym (HMAC of the number), else
    from a keyed hash of its encounter id; None when it has neither."""
    if patient_nbr is not None:
        digest = pseudonym(key, patient_nbr)
    elif encounter_id is not None:
        digest = hmac.new(key, f"encounter:{encounter_id}".encode(), hashlib.sha256).hexdigest()
    else:
        return None
    return int(digest[:15], 16) / _SCALE


def in_canary(key: bytes, record: dict[str, Any], percent: float) -> bool:
    """Is this record answered by the challenger in canary mode (a share of `percent`)?"""
    where = bucket(key, record.get("patient_nbr"), record.get("encounter_id"))
    return where is not None and where < percent / 100.0


@dataclass(frozen=True, slots=True)
class Plan:
    """Who answers the records of one request: the champion and challenger it started with
    (a swap meanwhile does not change them), the mode and the canary's share."""

    champion: LoadedModel
    challenger: LoadedModel | None
    mode: str
    percent: float
    key: bytes

    @property
    def shadowed(self) -> bool:
        return self.mode == "shadow" and self.challenger is not None

    @property
    def canary(self) -> bool:
        return self.mode == "canary" and self.challenger is not None and self.percent > 0

    def answering(self, record: dict[str, Any]) -> tuple[LoadedModel, Answer]:
        """The model answering one record, and its variant."""
        if self.canary and in_canary(self.key, record, self.percent):
            assert self.challenger is not None
            return self.challenger, "challenger"
        return self.champion, "champion"

    def arms(self, records: list[dict[str, Any]]) -> list[tuple[LoadedModel, str, list[int]]]:
        """The records' indexes per answering model (the champion's first; empty arms left
        out)."""
        if not self.canary:
            return [(self.champion, Variant.CHAMPION.value, list(range(len(records))))]
        challenged = [in_canary(self.key, r, self.percent) for r in records]
        assert self.challenger is not None
        found = [
            (self.champion, Variant.CHAMPION.value, [i for i, c in enumerate(challenged) if not c]),
            (self.challenger, Variant.CHALLENGER.value, [i for i, c in enumerate(challenged) if c]),
        ]
        return [arm for arm in found if arm[2]]


def make_plan(
    champion: LoadedModel, challenger: LoadedModel | None, mode: str, percent: float, key: bytes
) -> Plan:
    """A challenger that is the champion's own version is no challenger."""
    if challenger is not None and challenger.version == champion.version:
        challenger = None
    return Plan(champion, challenger, mode, percent, key)


@dataclass(slots=True)
class ShadowJob:
    """One request's records, to be scored by the challenger the request started with."""

    request_id: str
    challenger: LoadedModel
    records: list[dict[str, Any]]  # validated, as logged
    score: Callable[[LoadedModel], list[float]]  # the same scoring path as the answer's


class ShadowScorer:
    """A bounded queue and one thread scoring queued jobs with the challenger."""

    def __init__(self, metrics: Metrics, prediction_log: PredictionLog | None) -> None:
        self.metrics = metrics
        self.prediction_log = prediction_log
        self._queue: deque[ShadowJob] = deque()
        self._pending = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures_unlogged = 0
        self._failure_logged_at = float("-inf")

    async def submit(self, job: ShadowJob) -> None:
        """Run after the response is sent (a background task of the request, on the event
        loop): constant time; beyond SHADOW_MAX_PENDING records, dropped and counted."""
        self.enqueue(job)

    def enqueue(self, job: ShadowJob) -> None:
        count = len(job.records)
        with self._lock:
            if self._pending + count > SHADOW_MAX_PENDING:
                self.metrics.shadow_dropped.inc(count)
                return
            self._queue.append(job)
            self._pending += count
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Score what is queued, then stop (before the prediction log stops, so it is logged)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    return
                job = self._queue.popleft()
                self._pending -= len(job.records)
            self.run(job)

    def run(self, job: ShadowJob) -> None:
        """Score one job and log it as `shadow`; any failure is counted, logged, ignored."""
        model = job.challenger
        try:
            clock = time.perf_counter()
            probabilities = job.score(model)
            seconds = time.perf_counter() - clock
        except Exception as exc:
            self._failed(job, exc)
            return
        self.metrics.observe_predictions(
            probabilities, model.model.threshold, Variant.SHADOW.value, seconds
        )
        if self.prediction_log is not None:
            self.prediction_log.record(
                job.request_id,
                (model.name, model.version, CHALLENGER),
                model.model.threshold,
                job.records,
                probabilities,
                Variant.SHADOW.value,
            )

    def _failed(self, job: ShadowJob, exc: Exception) -> None:
        self.metrics.shadow_failures.inc(len(job.records))
        self._failures_unlogged += 1
        now = time.monotonic()
        if now - self._failure_logged_at < FAILURE_LOG_SECONDS:
            return
        log.warning(
            "shadow scoring failed: %s: %s",
            type(exc).__name__,
            first_line(exc)[:300],
            extra={
                "request_id": job.request_id,
                "model_version": job.challenger.version,
                "failed_requests": self._failures_unlogged,
            },
        )
        self._failures_unlogged = 0
        self._failure_logged_at = now
