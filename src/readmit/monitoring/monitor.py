"""A monitoring run: a window of logged predictions against the reference of the model that
scored them, and a verdict.

Verdicts, the worst that applies:
- `degraded`: enough outcomes came back, and the live ROC-AUC's 95% interval lies wholly
  below READMIT_MONITOR_AUC_FLOOR, or the observed readmission rate differs from the mean
  predicted probability by more than READMIT_MONITOR_CALIBRATION_TOLERANCE;
- `drift`: a field, or the probability, moved past its threshold (see `drift`);
- `insufficient-data`: fewer than READMIT_MONITOR_MIN_ROWS predictions of the model in the
  window, or its reference cannot be read, so drift cannot be judged;
- `ok`: none of the above.
Each run is a row of monitor_runs; its figures and Evidently's HTML reports go to the MLflow
experiment READMIT_MONITOR_EXPERIMENT_NAME (a tracking server that is down is said in the
reasons; the run completes all the same).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from readmit.errors import ReadmitError, first_line
from readmit.monitoring.drift import DriftFigures, feature_and_prediction_drift
from readmit.monitoring.performance import LivePerformance, enough_outcomes, live_performance
from readmit.monitoring.reference import (
    Reference,
    ReferenceMissing,
    load_reference,
    remember_run,
    remembered_run,
)
from readmit.settings import Settings
from readmit.storage import monitor
from readmit.storage.db import WRITE_FIRST, transaction
from readmit.storage.monitor import monitor_engine

log = logging.getLogger(__name__)
OK, DRIFT, DEGRADED, INSUFFICIENT = "ok", "drift", "degraded", "insufficient-data"
VERDICTS = (OK, DRIFT, DEGRADED, INSUFFICIENT)
PRODUCTION_ALIAS = "production"


class WindowError(ReadmitError):
    """A window the user gave that cannot be read."""


@dataclass
class MonitorWindow:
    """Which logged predictions a run looks at: scored in the last `days`, at most the newest
    `rows` of them (None: no such bound), of `model_version` (None: the version that served
    the newest production prediction in the window)."""

    days: float | None = None
    rows: int | None = None
    model_version: str | None = None

    @classmethod
    def default(cls, settings: Settings) -> MonitorWindow:
        return cls(days=settings.monitor_window_days, rows=settings.monitor_window_rows)

    @staticmethod
    def parse_days(text: str) -> float | None:
        """'7d', '36h' or '90m' as days; 'all' as no time bound. WindowError otherwise."""
        text = text.strip().lower()
        if text == "all":
            return None
        units = {"d": 1.0, "h": 1 / 24, "m": 1 / 1440}
        number, unit = text[:-1], text[-1:]
        try:
            value = float(number) * units[unit]
        except (KeyError, ValueError):
            value = -1.0
        if not value > 0:
            raise WindowError(
                f"window: {text!r} is not a positive duration such as 7d, 36h or 90m (or all)"
            )
        return value

    def since(self, now: datetime) -> datetime | None:
        return None if self.days is None else now - timedelta(days=self.days)

    def describe(self) -> str:
        parts = [f"last {self.days:g} days" if self.days is not None else "all time"]
        if self.rows is not None:
            parts.append(f"newest {self.rows:,} rows")
        if self.model_version is not None:
            parts.append(f"version {self.model_version}")
        return ", ".join(parts)


@dataclass
class MonitorResult:
    verdict: str
    reasons: list[str]
    drift_detected: bool
    drifted_features: list[str]
    rows: int
    labelled_rows: int
    live_auc: float | None
    model_name: str | None = None
    model_version: str | None = None
    run_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    figures: dict[str, Any] = field(default_factory=dict)
    monitor_run_id: int | None = None
    mlflow_run_id: str | None = None
    drift: DriftFigures | None = field(default=None, repr=False)  # holds Evidently's reports

    def as_json(self) -> dict[str, Any]:
        """Plain JSON: a figure that is not a finite number is null."""
        body = {
            "verdict": self.verdict,
            "reasons": self.reasons,
            "drift_detected": self.drift_detected,
            "drifted_features": self.drifted_features,
            "rows": self.rows,
            "labelled_rows": self.labelled_rows,
            "live_auc": self.live_auc,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "run_at": self.run_at.isoformat(),
            "monitor_run_id": self.monitor_run_id,
            "mlflow_run_id": self.mlflow_run_id,
            "figures": self.figures,
        }
        return dict(finite(body))


def run_monitor(
    settings: Settings,
    window: MonitorWindow | None = None,
    report: Callable[[str], None] = lambda _: None,
) -> MonitorResult:
    """Judge one window of the prediction log, record the run, and return its result.
    Raises StorageError only when monitor-db itself cannot be read or written."""
    window = window or MonitorWindow.default(settings)
    clock = time.perf_counter()
    now = datetime.now(UTC)
    engine = monitor_engine(settings)
    try:
        monitor.ensure_tables(engine)
        logged = monitor.read_window(engine, last=window.rows, since=window.since(now))
        report(f"read {len(logged):,} logged predictions ({window.describe()})")
        result = judge(settings, logged, window, report)
        result.run_at = now
        result.mlflow_run_id = _log_to_mlflow(settings, result)
        with transaction(engine.execution_options(**{WRITE_FIRST: True}), "monitor-db") as conn:
            result.monitor_run_id = monitor.insert_run(conn, _run_row(result, window, logged, now))
    finally:
        engine.dispose()
    seconds = time.perf_counter() - clock
    log.info(
        "monitoring run",
        extra={
            "step": "monitor",
            "verdict": result.verdict,
            "rows": result.rows,
            "labelled_rows": result.labelled_rows,
            "model_version": result.model_version,
            "seconds": round(seconds, 3),
        },
    )
    return result


def judge(
    settings: Settings,
    logged: pd.DataFrame,
    window: MonitorWindow,
    report: Callable[[str], None] = lambda _: None,
) -> MonitorResult:
    """Drift, live performance and the verdict of logged rows (read_window's frame)."""
    rows, name, version, notes = _rows_of_one_model(logged, window.model_version)
    reasons = list(notes)
    drift = _drift(settings, rows, name, version, reasons, report)
    labelled = rows[rows["label"].notna()]
    performance = _performance(settings, labelled, reasons, report)
    verdict = _verdict(settings, drift, performance, reasons)
    figures: dict[str, Any] = {
        "window": {"days": window.days, "rows": window.rows, "description": window.describe()},
        "drift": None if drift is None else drift.as_json(),
        "performance": None if performance is None else performance.as_json(),
        "settings": {
            "min_rows": settings.monitor_min_rows,
            "min_labelled_rows": settings.monitor_min_labelled_rows,
            "auc_floor": settings.monitor_auc_floor,
            "calibration_tolerance": settings.monitor_calibration_tolerance,
        },
    }
    return MonitorResult(
        verdict=verdict,
        reasons=reasons,
        drift_detected=bool(drift and drift.drift_detected),
        drifted_features=[] if drift is None else drift.drifted_features,
        rows=len(rows),
        labelled_rows=len(labelled),
        live_auc=None if performance is None else performance.roc_auc,
        model_name=name,
        model_version=version,
        figures=figures,
        drift=drift,
    )


def _rows_of_one_model(
    logged: pd.DataFrame, version: str | None
) -> tuple[pd.DataFrame, str | None, str | None, list[str]]:
    """The rows of one model version: the one asked for, else the one that served the newest
    production prediction (else the newest prediction); other rows are left out and said so."""
    if logged.empty:
        return logged, None, None, []
    name: str | None
    if version is None:
        production = logged[logged["model_alias"] == PRODUCTION_ALIAS]
        newest = (production if not production.empty else logged).iloc[-1]
        name, version = str(newest["model_name"]), str(newest["model_version"])
    else:
        match = logged[logged["model_version"] == version]
        name = str(match["model_name"].iloc[-1]) if not match.empty else None
    keep = logged["model_version"] == version
    if name is not None:
        keep &= logged["model_name"] == name
    notes = []
    if (~keep).any():
        notes.append(f"{int((~keep).sum()):,} predictions of other model versions left out")
    return logged[keep].reset_index(drop=True), name, version, notes


def _drift(
    settings: Settings,
    rows: pd.DataFrame,
    name: str | None,
    version: str | None,
    reasons: list[str],
    report: Callable[[str], None],
) -> DriftFigures | None:
    if len(rows) < settings.monitor_min_rows:
        reasons.append(
            f"{len(rows):,} predictions in the window; drift needs {settings.monitor_min_rows:,}"
        )
        return None
    assert name is not None and version is not None
    try:
        reference = _reference(settings, name, version)
    except ReferenceMissing as exc:
        reasons.append(f"drift not judged: {exc}")
        return None
    report(
        f"drift of {len(rows):,} predictions of {name} version {version} against "
        f"{len(reference.inputs):,} training rows and {len(reference.probabilities):,} test "
        "probabilities"
    )
    drift = feature_and_prediction_drift(
        reference.inputs, rows, reference.probabilities, rows["probability"].to_numpy(float)
    )
    for field_name in drift.drifted_features:
        column = drift.features[field_name]
        reasons.append(
            f"{field_name} drifted: {column.method} {column.score:.3f} >= {column.threshold}"
        )
    if drift.prediction.drifted:
        p = drift.prediction
        reasons.append(f"probability drifted: {p.method} {p.score:.3f} >= {p.threshold}")
    if not drift.drift_detected:
        top = max(drift.features.items(), key=lambda item: item[1].score / item[1].threshold)
        reasons.append(
            f"no drift: largest {top[0]} {top[1].score:.3f} (< {top[1].threshold}), "
            f"probability {drift.prediction.score:.3f} (< {drift.prediction.threshold})"
        )
    return drift


def _reference(settings: Settings, name: str, version: str) -> Reference:
    """The reference of a registered version; any registry or store failure is ReferenceMissing.
    The version's run is remembered, so a registry that is down later does not stop drift."""
    from readmit.registry import run_id_of

    try:
        run_id = run_id_of(settings, name, version)
    except Exception as exc:
        remembered = remembered_run(settings, name, version)
        if remembered is None:
            first = first_line(exc) or type(exc).__name__
            message = f"cannot find the run of {name} version {version}: {first}"
            raise ReferenceMissing(message) from None
        run_id = remembered
    else:
        remember_run(settings, name, version, run_id)
    return load_reference(settings, run_id)


def _performance(
    settings: Settings, labelled: pd.DataFrame, reasons: list[str], report: Callable[[str], None]
) -> LivePerformance | None:
    labels = labelled["label"].to_numpy(dtype=np.int64)
    problem = enough_outcomes(labels, settings.monitor_min_labelled_rows)
    if problem:
        reasons.append(problem)
        return None
    patients = labelled["patient_key"].fillna(labelled["row_id"]).to_numpy(dtype=object)
    performance = live_performance(
        labels, labelled["probability"].to_numpy(float), patients, settings.random_seed
    )
    report(
        f"live ROC-AUC {performance.roc_auc:.4f} [{performance.roc_auc_ci_low:.4f}, "
        f"{performance.roc_auc_ci_high:.4f}] on {performance.labelled_rows:,} outcomes"
    )
    return performance


def _verdict(
    settings: Settings,
    drift: DriftFigures | None,
    performance: LivePerformance | None,
    reasons: list[str],
) -> str:
    degraded = False
    if performance is not None:
        floor, high = settings.monitor_auc_floor, performance.roc_auc_ci_high
        if high < floor:
            degraded = True
            reasons.append(
                f"live ROC-AUC {performance.roc_auc:.3f} and its 95% interval (up to "
                f"{high:.3f}) lie below the floor {floor}"
            )
        gap, tolerance = performance.calibration_gap, settings.monitor_calibration_tolerance
        if abs(gap) > tolerance:
            degraded = True
            reasons.append(
                f"calibration off: observed readmission rate {performance.observed_rate:.3f}, "
                f"mean predicted {performance.mean_predicted:.3f} (gap {gap:+.3f}, "
                f"tolerance {tolerance})"
            )
    if degraded:
        return DEGRADED
    if drift is None:
        return INSUFFICIENT
    return DRIFT if drift.drift_detected else OK


def _run_row(
    result: MonitorResult, window: MonitorWindow, logged: pd.DataFrame, now: datetime
) -> dict[str, Any]:
    times = [t.to_pydatetime() for t in logged["scored_at"]] if not logged.empty else []
    return {
        "run_at": now,
        "window_since": window.since(now),
        "window_limit": window.rows,
        "first_scored_at": min(times, default=None),
        "last_scored_at": max(times, default=None),
        "model_name": result.model_name,
        "model_version": result.model_version,
        "rows": result.rows,
        "labelled_rows": result.labelled_rows,
        "verdict": result.verdict,
        "figures": finite({**result.figures, "reasons": result.reasons}),
        "mlflow_run_id": result.mlflow_run_id,
    }


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float as None: JSON (and PostgreSQL's json type)
    has no such numbers, and a distance against a constant reference column is one."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _log_to_mlflow(settings: Settings, result: MonitorResult) -> str | None:
    """Log the figures and the HTML reports; a tracking server that cannot be reached or
    refuses is said in the reasons and returns None."""
    try:
        return _mlflow_run(settings, result)
    except Exception as exc:
        first = first_line(exc) or type(exc).__name__
        result.reasons.append(f"MLflow unreachable, report not logged: {first}")
        log.warning("monitoring report not logged", extra={"error": first})
        return None


def _mlflow_run(settings: Settings, result: MonitorResult) -> str:
    import mlflow

    from readmit.registry import Tag
    from readmit.tracking import configure

    experiment = configure(settings, settings.monitor_experiment_name)
    tags = {
        Tag.MODEL_NAME: result.model_name or "",
        Tag.MODEL_VERSION: result.model_version or "",
        Tag.VERDICT: result.verdict,
    }
    name = f"monitor-{result.run_at:%Y%m%dT%H%M%S}"
    with mlflow.start_run(experiment_id=experiment, run_name=name, tags=tags) as run:
        mlflow.log_metrics({k: v for k, v in _metrics(result).items() if math.isfinite(v)})
        mlflow.log_dict(result.as_json(), "monitor/figures.json")
        if result.drift is not None:
            with tempfile.TemporaryDirectory() as tmp:
                for path in result.drift.save_html(Path(tmp)):
                    mlflow.log_artifact(str(path), "monitor")
        return str(run.info.run_id)


def _metrics(result: MonitorResult) -> dict[str, float]:
    metrics = {"rows": float(result.rows), "labelled_rows": float(result.labelled_rows)}
    drift = result.figures.get("drift")
    if drift is not None:
        metrics["drift_share"] = float(drift["drift_share"])
        metrics["prediction_drift_score"] = float(drift["prediction_drift"]["score"])
    performance = result.figures.get("performance")
    if performance is not None:
        for key in ("roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "brier", "calibration_gap"):
            metrics[f"live_{key}"] = float(performance[key])
    return metrics
