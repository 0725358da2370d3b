"""The models being served: the champion (`@production`) and, unless READMIT_CHALLENGER_MODE is
off, the challenger (`@challenger`); each resolved, loaded off the request path, checked,
swapped atomically and re-checked in the background, independently of the other.

A version is loaded from its plain files and must score its own input example before it is
swapped in (`readmit.registered`). A refused version, a failed load and an unreachable MLflow
all leave the previous model serving; each is counted in /metrics, logged, and named in /health.
A refused version is remembered, so it is not fetched again on every poll. A champion is kept
when @production is removed; a challenger is dropped when @challenger is. Under several
workers, /reload-model makes every worker check both aliases, and each worker records the
version it serves for /health (`reload.py`).
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
from readmit.registry import CHALLENGER, PRODUCTION
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


class ServedAlias:
    """One alias's served version; `refresh` swaps in the version the alias names now."""

    def __init__(self, settings: Settings, metrics: Metrics, alias: str) -> None:
        self.settings = settings
        self.metrics = metrics
        self.alias = alias
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._refused: dict[str, str] = {}  # version -> why it must not be served

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def is_champion(self) -> bool:
        return self.alias == PRODUCTION

    def holder(self) -> str | None:
        """The version the alias names now (raises when MLflow cannot be asked)."""
        from readmit.registry import by_alias, client_for

        holder = by_alias(client_for(self.settings), self.settings.model_name, self.alias)
        return None if holder is None else str(holder.version)

    def refresh(self) -> bool:
        """Check the alias; load and swap in a new version. True when the model changed."""
        with self._lock:
            try:
                version = self.holder()
            except Exception as exc:
                self._failed("resolve", exc)
                return False
            current = self._current
            if version is None:
                return self._unset(current)
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
            if self.is_champion:
                self.metrics.model_loaded(loaded.name, loaded.version, loaded.info.test_roc_auc)
            else:
                self.metrics.challenger_loaded(loaded.name, loaded.version)
            log.info(
                "model loaded",
                extra={
                    "alias": self.alias,
                    "model_version": version,
                    "previous_version": current and current.version,
                },
            )
            return True

    def _unset(self, current: LoadedModel | None) -> bool:
        """No version holds the alias: a champion keeps serving, a challenger is dropped."""
        if self.is_champion:
            self.last_error = f"no version of {self.settings.model_name} is @{self.alias}"
            return False
        self.last_error = None
        if current is None:
            return False
        self._current = None
        self.metrics.challenger_loaded(current.name, None)
        log.info("challenger removed", extra={"previous_version": current.version})
        return True

    def _refuse(self, version: str, reason: str) -> None:
        """Counted on every check while the alias names it, so the alert keeps firing."""
        current = self._current
        keeping = f"still serving v{current.version}" if current else "no model is served"
        self.last_error = f"v{version} refused ({keeping}): {reason}"
        self.metrics.reload_failed("check", challenger=not self.is_champion)
        log.warning(
            "model refused", extra={"alias": self.alias, "model_version": version, "error": reason}
        )

    def _failed(self, step: str, exc: Exception) -> None:
        self.last_error = f"{step} failed: {type(exc).__name__}: {first_line(exc)}"
        self.metrics.reload_failed(step, challenger=not self.is_champion)
        log.warning("model %s failed", step, extra={"alias": self.alias, "error": self.last_error})


class ModelStore:
    """The champion and the challenger; `current`, `last_error` and `refresh` are the
    champion's, `challenger` the other alias (checked only when the challenger mode is on)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.champion = ServedAlias(settings, metrics, PRODUCTION)
        self.challenger = ServedAlias(settings, metrics, CHALLENGER)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.signal = reload.shared(settings.api_workers)
        self._generation = 0  # of the signal, last acted on
        self._published: str | None = None  # the version last written for /health

    @property
    def challenger_enabled(self) -> bool:
        return self.settings.challenger_mode != "off"

    @property
    def current(self) -> LoadedModel | None:
        return self.champion.current

    @property
    def last_error(self) -> str | None:
        return self.champion.last_error

    def production_version(self) -> str | None:
        """The version `@production` names now (raises when MLflow cannot be asked)."""
        return self.champion.holder()

    def refresh(self) -> bool:
        """Check `@production`; load and swap in a new version. True when the model changed."""
        changed = self.champion.refresh()
        current = self.champion.current
        version = None if current is None else current.version
        if self.signal is not None and self._published != version:
            self.signal.publish(version)
            self._published = version
        return changed

    def workers_serving(self) -> dict[str, int] | None:
        """Under several workers, how many serve each version (None with one process)."""
        return None if self.signal is None else self.signal.versions()

    def refresh_all(self) -> tuple[bool, bool]:
        """Check both aliases, each on its own (a failing one leaves the other alone); whether
        the champion and the challenger changed."""
        champion = self.refresh()
        challenger = self.challenger.refresh() if self.challenger_enabled else False
        return champion, challenger

    def reload_everywhere(self) -> tuple[bool, bool, str | None]:
        """POST /reload-model: check both aliases here, then make every other worker check
        them too. Whether this worker's champion and challenger changed, and how many workers
        confirmed (None with one process)."""
        changed, challenger_changed = self.refresh_all()
        if self.signal is None:
            return changed, challenger_changed, None
        generation = self.signal.request()
        self._act_on(generation, refresh=False)
        confirmed = self.signal.wait(generation)
        workers = f"{confirmed} of {self.signal.workers} workers checked @production"
        return changed, challenger_changed, workers

    def _act_on(self, generation: int, refresh: bool = True) -> None:
        if refresh:
            self.refresh_all()
        self._generation = generation
        if self.signal is not None:
            self.signal.acknowledge(generation)

    def start(self) -> None:
        """Load now, then poll every READMIT_MODEL_POLL_SECONDS in a daemon thread (and,
        under several workers, watch for /reload-model taken by another one)."""
        self.refresh_all()
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
                self.refresh_all()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
