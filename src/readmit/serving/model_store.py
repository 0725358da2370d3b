"""The model being served: resolved from `@production`, loaded off the request path, swapped
atomically, re-checked in the background.

A failed load leaves the previous model serving; an unreachable MLflow leaves it serving too.
Both are counted in /metrics and logged.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from readmit.model import MODEL_FILE, ReadmissionModel
from readmit.registry import PRODUCTION
from readmit.serving.metrics import Metrics
from readmit.settings import Settings

log = logging.getLogger("readmit.serving.model_store")


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version; immutable, so a request keeps the one it started with."""

    name: str
    version: str
    model: ReadmissionModel
    loaded_at: str
    folder: Path

    @property
    def info(self) -> dict[str, Any]:
        return self.model.info


def load_version(settings: Settings, version: str) -> LoadedModel:
    """Download one registered version and load its model folder."""
    import mlflow

    uri = f"models:/{settings.model_name}/{version}"
    target = Path(tempfile.mkdtemp(prefix=f"readmit-model-{version}-"))
    folder = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(target)))
    files = list(folder.rglob(MODEL_FILE))
    if not files:
        raise FileNotFoundError(f"{uri} holds no {MODEL_FILE}")
    model = ReadmissionModel.load(files[0].parent)
    loaded_at = datetime.now(UTC).isoformat(timespec="seconds")
    return LoadedModel(settings.model_name, version, model, loaded_at, target)


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
            try:
                loaded = load_version(self.settings, version)
            except Exception as exc:
                self._failed("load", exc)
                return False
            self._current = loaded
            self.last_error = None
            test_auc = loaded.info.get("test_metrics", {}).get("roc_auc")
            self.metrics.model_loaded(loaded.name, loaded.version, test_auc)
            if current is not None:
                # The old model is fully in memory: requests holding it are unaffected.
                shutil.rmtree(current.folder, ignore_errors=True)
            log.info(
                "model loaded",
                extra={"model_version": version, "previous_version": current and current.version},
            )
            return True

    def _failed(self, step: str, exc: Exception) -> None:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        self.last_error = f"{step} failed: {type(exc).__name__}: {first_line}"
        self.metrics.reload_failed(step)
        log.warning("model %s failed", step, extra={"error": self.last_error})

    def start(self) -> None:
        """Load now, then poll every READMIT_MODEL_POLL_SECONDS in a daemon thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="model-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.model_poll_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._current is not None:
            shutil.rmtree(self._current.folder, ignore_errors=True)
