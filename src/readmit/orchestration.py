"""The scheduled steps as plain functions returning JSON-able summaries.

The Airflow DAGs are thin wiring over these: a task calls one, its log gets every progress
line and the summary, and the summary becomes the task's XCom. Kept free of Airflow imports so
the steps stay testable and runnable without a scheduler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from readmit.logs import configure_file_logging
from readmit.settings import Settings
from readmit.storage.db import safe_url
from readmit.summaries import (
    Summary,
    clean_summary,
    ingest_summary,
    materialise_summary,
    train_summary,
)

Report = Callable[[str], None]

# Names of the Airflow Assets that chain the DAGs: raw-db gained a batch -> clean-db rebuilt
# -> a model trained; a monitoring run that finds drift or degradation asks for training too.
RAW_ASSET = "readmit_raw_db"
CLEAN_ASSET = "readmit_clean_db"
RETRAIN_ASSET = "readmit_retrain_requested"
RETRAIN_VERDICTS = ("drift", "degraded")

log = logging.getLogger(__name__)


def _audit(settings: Settings) -> None:
    configure_file_logging(settings.data_dir / "logs" / "pipeline.jsonl", settings.log_level)


def ingest_next_batch(settings: Settings, report: Report) -> dict[str, Any]:
    """Load the next pending batch; `batches_added` is 0 once every batch is in."""
    from readmit.pipeline.ingest import ingest

    _audit(settings)
    clock = time.perf_counter()
    result = ingest(settings, all_batches=False, report=report)
    return _closing(ingest_summary(settings, result, time.perf_counter() - clock), report)


def build_clean(settings: Settings, report: Report) -> dict[str, Any]:
    """Rebuild clean-db from every batch in raw-db."""
    from readmit.pipeline.clean import build_clean as build

    _audit(settings)
    return _closing(clean_summary(settings, build(settings, report=report)), report)


def materialise_history(settings: Settings, report: Report) -> dict[str, Any]:
    """Load the new build's patient history into the feature store's online store."""
    from readmit.feature_store.repo import materialize

    _audit(settings)
    return _closing(materialise_summary(settings, materialize(settings, report=report)), report)


def train_and_register(settings: Settings, report: Report) -> dict[str, Any]:
    """Train on the latest clean build, register, and promote when better than @production."""
    from readmit.pipeline.train import train

    _audit(settings)
    return _closing(train_summary(settings, train(settings, report=report)), report)


def _closing(summary: Summary, report: Report) -> dict[str, Any]:
    """The task log's last line; the facts become the task's XCom."""
    report(f"{summary.step} summary: {summary.line}")
    return summary.facts


def monitor(settings: Settings, report: Report) -> dict[str, Any]:
    """One monitoring run over the latest window of the prediction log; `retrain` says
    whether its verdict asks for a new model, `why` says why in one line."""
    from readmit.monitoring.monitor import run_monitor

    _audit(settings)
    clock = time.perf_counter()
    result = run_monitor(settings, report=report)
    retrain = result.verdict in RETRAIN_VERDICTS
    summary = {
        "verdict": result.verdict,
        "reasons": list(result.reasons),
        "drift_detected": bool(result.drift_detected),
        "drifted_features": list(result.drifted_features),
        "rows": int(result.rows),
        "labelled_rows": int(result.labelled_rows),
        "live_auc": None if result.live_auc is None else round(float(result.live_auc), 4),
        "retrain": retrain,
        "why": _why(result.verdict, list(result.reasons)),
        "seconds": round(time.perf_counter() - clock, 2),
        "monitor_db": safe_url(settings.resolved_monitor_db_url),
    }
    report(
        f"monitor summary: verdict {summary['verdict']} over {summary['rows']:,} rows "
        f"({summary['labelled_rows']:,} labelled), drifted {summary['drifted_features'] or 'none'}"
        f", live AUC {summary['live_auc']}; "
        f"{'retraining requested' if retrain else 'no retraining'}: {summary['why']}; "
        f"{summary['seconds']} s; monitor-db {summary['monitor_db']}"
    )
    return summary


def challenger_version(settings: Settings, report: Report) -> str | None:
    """The @challenger version, or None when there is none or the registry cannot say."""
    from readmit.registry import CHALLENGER, alias_holder

    try:
        version = alias_holder(settings, CHALLENGER)
    except Exception as exc:
        report(f"registry unreadable, no comparison: {type(exc).__name__}: {exc}")
        return None
    report(
        f"@challenger is v{version}" if version else "no @challenger version: nothing to compare"
    )
    return version


def compare(settings: Settings, report: Report) -> dict[str, Any]:
    """Champion against challenger on live outcomes; with READMIT_COMPARE_APPLY, a `promote`
    moves @production to the challenger. The summary holds the decision and the figures."""
    from readmit.monitoring.compare import run_compare

    _audit(settings)
    clock = time.perf_counter()
    result = run_compare(
        settings, settings.compare_window_days, settings.compare_apply, report=report
    )
    summary = {
        "decision": result.decision,
        "mode": result.mode,
        "champion_version": result.champion.model_version,
        "challenger_version": result.challenger.model_version,
        "labelled": result.labelled,
        "auc_difference": result.auc_difference,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "applied": result.applied,
        "reasons": list(result.reasons),
        "seconds": round(time.perf_counter() - clock, 2),
    }
    applied = "applied" if result.applied else "not applied"
    report(f"compare summary: {result.line()}; {applied}; {summary['seconds']} s")
    return summary


def _why(verdict: str, reasons: list[str]) -> str:
    return f"{verdict}: {'; '.join(reasons)}" if reasons else verdict


def retrain_request(summary: dict[str, Any]) -> dict[str, Any]:
    """What the `readmit_retrain_requested` Asset event records: the verdict and its reasons."""
    keys = ("verdict", "why", "reasons", "drifted_features", "rows", "labelled_rows", "live_auc")
    return {key: summary[key] for key in keys}
