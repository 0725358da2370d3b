"""The model being served: resolved from `@production`, loaded off the request path, checked,
swapped atomically, re-checked in the background.

A version is loaded from its plain files and must score its own input example before it is
swapped in (`readmit.registered`). A refused version, a failed load and an unreachable MLflow
all leave the previous model serving; each is counted in /metrics, logged, and named in /health.
A refused version is remembered, so it is not fetched again on every poll. Under several
workers, /reload-model makes every worker check `@production` (`reload.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from readmit.errors import first_line
from readmit.model import ReadmissionModel, TrainingInfo
from readmit.registered import ModelRefused, load_checked
from readmit.registry import PRODUCTION
from readmit.serving import reload
from readmit.serving.metrics import Metrics
from readmit.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version; immutable, so a request keeps the one it started with."""

    name: str
    version: str
    model: ReadmissionModel
    loaded_at: str

    @property
    def info(self) -> TrainingInfo:
        return self.model.info


def load_version(settings: Settings, version: str) -> LoadedModel:
    """Load one registered version, checked; its download is already removed on return."""
    model = load_checked(settings, version)
    loaded_at = datetime.now(UTC).isoformat(timespec="seconds")
    return LoadedModel(settings.model_name, version, model, loaded_at)


class ModelStore:
    """Holds the current model; `refresh` swaps in a new production version when there is one."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self._refused: dict[str, str] = {}  # version -> why it must not be served
        self.signal = reload.shared(settings.api_workers)
        self._generation = 0  # of the signal, last acted on

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def production_version(self) -> str | None:
        """The version `@production` names now (raises when MLflow cannot be asked)."""
        from readmit.registry import by_alias, client_for

        holder = by_alias(client_for(self.settings), self.settings.model_name, PRODUCTION)
        return None if holder is None else str(holder.version)

    def refresh(self) -> bool:
        """Check `@production`; load and swap in a new version. True when the model changed."""
        with self._lock:
            try:
                version = self.production_version()
            except Exception as exc:
                self._failed("resolve", exc)
                return False
            current = self._current
            if version is None:
                self.last_error = f"no version of {self.settings.model_name} is @production"
                return False
            if current is not None and current.version == version:
                self.last_error = None
                return False
            if version in self._refused:
                self._refuse(version, self._refused[version])
                return False
            try:
                loaded = load_version(self.settings, version)
            except ModelRefused as exc:
                self._refused[version] = exc.reason
                self._refuse(version, exc.reason)
                return False
            except Exception as exc:
                self._failed("load", exc)
                return False
            self._current = loaded
            self.last_error = None
            self.metrics.model_loaded(loaded.name, loaded.version, loaded.info.test_roc_auc)
            log.info(
                "model loaded",
                extra={"model_version": version, "previous_version": current and current.version},
            )
            return True

    def _refuse(self, version: str, reason: str) -> None:
        """Counted on every check while @production names it, so the alert keeps firing."""
        current = self._current
        keeping = f"still serving v{current.version}" if current else "no model is served"
        self.last_error = f"v{version} refused ({keeping}): {reason}"
        self.metrics.reload_failed("check")
        log.warning("model refused", extra={"model_version": version, "error": reason})

    def _failed(self, step: str, exc: Exception) -> None:
        self.last_error = f"{step} failed: {type(exc).__name__}: {first_line(exc)}"
        self.metrics.reload_failed(step)
        log.warning("model %s failed", step, extra={"error": self.last_error})

    def reload_everywhere(self) -> tuple[bool, str | None]:
        """POST /reload-model: check `@production` here, then make every other worker check
        it too. Whether this worker's model changed, and how many workers confirmed (None
        with one process)."""
        changed = self.refresh()
        if self.signal is None:
            return changed, None
        generation = self.signal.request()
        self._act_on(generation, refresh=False)
        confirmed = self.signal.wait(generation)
        return changed, f"{confirmed} of {self.signal.workers} workers checked @production"

    def _act_on(self, generation: int, refresh: bool = True) -> None:
        if refresh:
            self.refresh()
        self._generation = generation
        if self.signal is not None:
            self.signal.acknowledge(generation)

    def start(self) -> None:
        """Load now, then poll every READMIT_MODEL_POLL_SECONDS in a daemon thread (and,
        under several workers, watch for /reload-model taken by another one)."""
        self.refresh()
        if self.signal is not None:
            self._act_on(self.signal.generation(), refresh=False)
        self._thread = threading.Thread(target=self._poll, name="model-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        every = self.settings.model_poll_seconds
        step = every if self.signal is None else min(every, reload.CHECK_SECONDS)
        due = time.monotonic() + every
        while not self._stop.wait(step):
            if self.signal is not None:
                generation = self.signal.generation()
                if generation != self._generation:
                    self._act_on(generation)
                    continue
            if time.monotonic() >= due:
                due = time.monotonic() + every
                self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
