"""Pipeline and model metrics for Prometheus, read on each scrape from raw-db, clean-db and the
registry: batches, rows per table, the last success of each step, the production model.

A source that cannot be read is skipped for that scrape (and logged), so one database being
down does not hide the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from readmit.errors import first_line
from readmit.settings import Settings
from readmit.storage import clean, raw
from readmit.storage.db import make_engine

log = logging.getLogger(__name__)


class PipelineCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.raw_engine = make_engine(settings.resolved_raw_db_url, "raw-db")
        self.clean_engine = make_engine(settings.resolved_clean_db_url, "clean-db")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = GaugeMetricFamily("readmit_pipeline_rows", "Rows per table", labels=["table"])
        last = GaugeMetricFamily(
            "readmit_pipeline_last_success_timestamp_seconds",
            "When each step last succeeded (unix time)",
            labels=["step"],
        )
        ok = GaugeMetricFamily(
            "readmit_pipeline_step_success", "1 if the step's last run succeeded", labels=["step"]
        )
        yield from self._raw(rows, last, ok)
        self._clean(rows, last, ok)
        yield from self._model(last, ok)
        yield rows
        yield last
        yield ok

    def _raw(
        self, rows: GaugeMetricFamily, last: GaugeMetricFamily, ok: GaugeMetricFamily
    ) -> Iterator[GaugeMetricFamily]:
        batches = GaugeMetricFamily(
            "readmit_pipeline_batches", "Ingest batches by status", labels=["status"]
        )
        try:
            summary = raw.batch_summary(self.raw_engine)
            table_rows = raw.table_rows(self.raw_engine)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("raw-db unreadable", extra={"error": first_line(exc)})
            return
        for status in (raw.SUCCEEDED, raw.FAILED):
            batches.add_metric([status], summary.by_status.get(status, 0))
        for name, count in table_rows.items():
            rows.add_metric([name], count)
        if summary.last_success is not None:
            last.add_metric(["ingest"], summary.last_success.timestamp())
        if summary.latest_status is not None:
            ok.add_metric(["ingest"], 1.0 if summary.latest_status == raw.SUCCEEDED else 0.0)
        yield batches

    def _clean(
        self, rows: GaugeMetricFamily, last: GaugeMetricFamily, ok: GaugeMetricFamily
    ) -> None:
        try:
            table_rows = clean.table_rows(self.clean_engine)
            built = clean.last_build_time(self.clean_engine)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("clean-db unreadable", extra={"error": first_line(exc)})
            return
        for name, count in table_rows.items():
            rows.add_metric([name], count)
        if built is not None:
            last.add_metric(["clean"], built.timestamp())
            ok.add_metric(["clean"], 1.0)

    def _model(self, last: GaugeMetricFamily, ok: GaugeMetricFamily) -> Iterator[GaugeMetricFamily]:
        from readmit.registry import PRODUCTION, Tag, by_alias, client_for, missing_artifacts

        version = GaugeMetricFamily(
            "readmit_production_model_version", "Version number of @production"
        )
        auc = GaugeMetricFamily(
            "readmit_production_model_test_roc_auc", "Test ROC-AUC of @production"
        )
        present = GaugeMetricFamily(
            "readmit_production_model_artifacts_present",
            "1 when the files of @production are in the artifact store, 0 when they are missing",
        )
        by_version = GaugeMetricFamily(
            "readmit_model_version_test_roc_auc", "Test ROC-AUC of each version", labels=["version"]
        )
        try:
            client = client_for(self.settings)
            name = self.settings.model_name
            for v in client.search_model_versions(f"name='{name}'"):
                score = v.tags.get(Tag.CANDIDATE_TEST_AUC)
                if score:
                    by_version.add_metric([str(v.version)], float(score))
            production = by_alias(client, name, PRODUCTION)
            experiment = client.get_experiment_by_name(self.settings.experiment_name)
            runs: list[Any] = []
            if experiment is not None:
                runs = client.search_runs(
                    [experiment.experiment_id],
                    "tags.mlflow.runName LIKE 'train-%'",
                    order_by=["attributes.start_time DESC"],
                    max_results=20,
                )
        except Exception as exc:
            log.warning("registry unreadable", extra={"error": first_line(exc)})
            return
        if production is not None:
            try:
                gone = missing_artifacts(client, name, str(production.version))
                present.add_metric([], 0.0 if gone else 1.0)
            except Exception as exc:
                log.warning("artifact store unreadable", extra={"error": first_line(exc)})
            version.add_metric([], float(production.version))
            score = production.tags.get(Tag.CANDIDATE_TEST_AUC)
            if score:
                auc.add_metric([], float(score))
        finished = [r for r in runs if r.info.status == "FINISHED" and r.info.end_time]
        if finished:
            last.add_metric(["train"], max(r.info.end_time for r in finished) / 1000)
        if runs:
            ok.add_metric(["train"], 1.0 if runs[0].info.status in ("FINISHED", "RUNNING") else 0.0)
        yield version
        yield auc
        yield present
        yield by_version


class MonitorCollector(Collector):
    """The latest monitoring run in monitor-db: drift, live performance and its verdict.
    No run yet (or monitor-db unreadable): no monitor gauges, so alerts see them absent."""

    def __init__(self, settings: Settings) -> None:
        from readmit.storage.monitor import monitor_engine

        self.engine = monitor_engine(settings)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from readmit.monitoring.monitor import VERDICTS
        from readmit.storage.monitor import latest_comparisons, latest_runs

        try:
            with self.engine.connect() as conn:
                runs = latest_runs(conn, 1)
                comparisons = latest_comparisons(conn, 1)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("monitor-db unreadable", extra={"error": first_line(exc)})
            return
        if comparisons:
            yield from _comparison_gauges(comparisons[0])
        if not runs:
            return
        run = runs[0]
        figures = run["figures"]
        yield _gauge(
            "readmit_monitor_last_run_timestamp_seconds",
            "When the latest monitoring run finished (unix time)",
            run["run_at"].timestamp(),
        )
        yield _gauge(
            "readmit_monitor_labelled_rows",
            "Predictions with an outcome in the latest run's window",
            run["labelled_rows"],
        )
        verdict = GaugeMetricFamily(
            "readmit_monitor_verdict", "1 for the latest run's verdict", labels=["verdict"]
        )
        for name in VERDICTS:
            verdict.add_metric([name], 1.0 if run["verdict"] == name else 0.0)
        yield verdict
        yield from _drift_gauges(figures.get("drift"))
        yield from _performance_gauges(figures.get("performance"))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], float(value))
    return gauge


def _drift_gauges(drift: dict[str, Any] | None) -> Iterator[GaugeMetricFamily]:
    """Absent when the latest run could not judge drift (too few rows, no reference)."""
    if not drift:
        return
    detected = bool(drift["drifted_features"]) or bool(drift["prediction_drift"]["drifted"])
    yield _gauge(
        "readmit_monitor_drift_share", "Share of input fields that drifted", drift["drift_share"]
    )
    if drift["prediction_drift"]["score"] is not None:
        yield _gauge(
            "readmit_monitor_prediction_drift_score",
            "Drift score of the predicted probability (normed Wasserstein distance)",
            drift["prediction_drift"]["score"],
        )
    yield _gauge("readmit_monitor_drift_detected", "1 when any drift was detected", detected)
    scores = GaugeMetricFamily(
        "readmit_monitor_feature_drift_score",
        "Drift score of each input field (its threshold is in the run's figures)",
        labels=["feature"],
    )
    for feature, column in drift["features"].items():
        if column["score"] is not None:
            scores.add_metric([feature], float(column["score"]))
    yield scores


def _performance_gauges(performance: dict[str, Any] | None) -> Iterator[GaugeMetricFamily]:
    """Absent until enough outcomes came back for the latest run's window."""
    if not performance:
        return
    for suffix, key, about in (
        ("", "roc_auc", "Live ROC-AUC on the predictions with an outcome"),
        ("_ci_low", "roc_auc_ci_low", "Lower end of the live ROC-AUC's 95% interval"),
        ("_ci_high", "roc_auc_ci_high", "Upper end of the live ROC-AUC's 95% interval"),
    ):
        yield _gauge(f"readmit_monitor_live_auc{suffix}", about, performance[key])


def _comparison_gauges(comparison: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    """The latest champion-challenger comparison: each model's live figures on the compared
    encounters, the difference with its interval, and the decision."""
    from readmit.monitoring.compare import DECISIONS

    figures = comparison["figures"]
    yield _gauge(
        "readmit_compare_last_run_timestamp_seconds",
        "When champion and challenger were last compared (unix time)",
        comparison["run_at"].timestamp(),
    )
    yield _gauge(
        "readmit_compare_labelled_encounters",
        "Labelled encounters in the latest comparison",
        comparison["labelled"],
    )
    decision = GaugeMetricFamily(
        "readmit_compare_decision", "1 for the latest comparison's decision", labels=["decision"]
    )
    for name in DECISIONS:
        decision.add_metric([name], 1.0 if comparison["decision"] == name else 0.0)
    yield decision
    for key, about in (
        ("roc_auc", "Live ROC-AUC of each model on the compared encounters"),
        ("brier", "Live Brier score of each model on the compared encounters"),
    ):
        gauge = GaugeMetricFamily(
            f"readmit_compare_live_{key}", about, labels=["variant", "version"]
        )
        for arm in (figures.get("champion") or {}, figures.get("challenger") or {}):
            if arm.get(key) is not None:
                gauge.add_metric([arm["variant"], str(arm["model_version"])], float(arm[key]))
        yield gauge
    for suffix, key, about in (
        ("", "auc_difference", "Live ROC-AUC of the challenger minus the champion's"),
        ("_ci_low", "ci_low", "Lower end of the difference's 95% interval"),
        ("_ci_high", "ci_high", "Upper end of the difference's 95% interval"),
    ):
        if figures.get(key) is not None:
            yield _gauge(f"readmit_compare_auc_difference{suffix}", about, figures[key])


def registry_for(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(settings))
    registry.register(MonitorCollector(settings))
    return registry


def serve_forever(settings: Settings, host: str, port: int) -> None:
    """Expose the pipeline metrics at http://host:port/metrics until interrupted."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=registry_for(settings))
    while True:
        time.sleep(3600)
