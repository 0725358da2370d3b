"""Prometheus metrics of the API, on a registry of its own (one per app instance).

With several workers (`workers.py`) the values live in prometheus_client's multiprocess files
and `render` adds up every worker's: counters and histograms are summed, and each gauge says
how its workers' values combine (`multiprocess_mode`: summed for what each worker holds,
the lowest for "a model is loaded", the latest for the served model's AUC). That mode is on
only after `use_multiprocess`: Feast, imported by MLflow's plugins in any process that uses
MLflow, sets prometheus_client's multiprocess variables to a folder of its own, which would
otherwise make every app in the process write to, and read, the same files.

Scores are labelled by `variant`: `champion` and `challenger` answered callers, `shadow` are
the challenger's scores nobody was given (sum `variant!="shadow"` for what callers got).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20))
SCORING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)
VARIANTS = ("champion", "challenger", "shadow")  # storage.monitor.Variant's values
PREDICTED_CLASSES = ("readmitted_30d", "not_readmitted")
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
CLOSE_REASONS = ("over_limit", "header_timeout", "header_too_large")
SHED_REASONS = ("in_flight", "queued")

_folder: str | None = None  # every worker's values, once `use_multiprocess` was called


def use_multiprocess(folder: Path) -> None:
    """Every metric made after this call in this process and its children writes to `folder`,
    and `render` adds up all the files there."""
    global _folder
    os.environ[MULTIPROCESS_DIR] = str(folder)
    values.ValueClass = values.MultiProcessValue()
    _folder = str(folder)


class Metrics:
    """Every metric the API exports; names are stable, dashboards and alerts use them."""

    def __init__(self) -> None:
        if _folder is None:
            values.ValueClass = values.MutexValue  # in memory, whatever the environment says
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "readmit_http_requests_total",
            "HTTP requests",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.errors = Counter(
            "readmit_http_errors_total",
            "HTTP responses with status >= 400",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "readmit_http_request_duration_seconds",
            "Request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "readmit_predictions_total",
            "Scored encounters by predicted class and variant",
            ["predicted_class", "variant"],
            registry=r,
        )
        self.probability = Histogram(
            "readmit_prediction_probability",
            "Predicted probability of 30-day readmission, by variant",
            ["variant"],
            buckets=PROBABILITY_BUCKETS,
            registry=r,
        )
        self.scoring = Histogram(
            "readmit_scoring_duration_seconds",
            "Time a model took to score one request's records, by variant",
            ["variant"],
            buckets=SCORING_BUCKETS,
            registry=r,
        )
        # Children looked up once: labels() on every request costs a lock and a dict lookup.
        self._by_variant = {
            v: (
                self.predictions.labels(predicted_class=PREDICTED_CLASSES[0], variant=v),
                self.predictions.labels(predicted_class=PREDICTED_CLASSES[1], variant=v),
                self.probability.labels(variant=v),
                self.scoring.labels(variant=v),
            )
            for v in VARIANTS
        }
        # A gauge, not an Info: Info has no multiprocess mode. The samples are the same.
        self.model_info = Gauge(
            "readmit_model_info",
            "The model being served",
            ["name", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._served: tuple[str, str] | None = None
        self.model_ready = Gauge(
            "readmit_model_loaded",
            "1 when a model is loaded (in every worker)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.reloads = Counter("readmit_model_reloads_total", "Models swapped in", registry=r)
        self.reload_failures = Counter(
            "readmit_model_reload_failures_total",
            "Failed model checks or loads",
            ["step"],
            registry=r,
        )
        # Known label values start at 0, so dashboards and alerts see the series before the
        # first prediction or failure.
        for step in ("resolve", "load", "check"):
            self.reload_failures.labels(step=step)
        self.challenger_info = Gauge(
            "readmit_challenger_info",
            "The @challenger version loaded beside the champion",
            ["name", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._challenger: tuple[str, str] | None = None
        self.challenger_ready = Gauge(
            "readmit_challenger_loaded",
            "1 when a challenger is loaded (in every worker)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.challenger_failures = Counter(
            "readmit_challenger_reload_failures_total",
            "Failed checks or loads of the @challenger version",
            ["step"],
            registry=r,
        )
        for step in ("resolve", "load", "check"):
            self.challenger_failures.labels(step=step)
        self.shadow_failures = Counter(
            "readmit_shadow_failures_total",
            "Records the challenger failed to score in shadow (the callers' answers unaffected)",
            registry=r,
        )
        self.shadow_dropped = Counter(
            "readmit_shadow_dropped_total",
            "Records not shadow-scored: too many were waiting for the challenger",
            registry=r,
        )
        self.connections_closed = Counter(
            "readmit_http_connections_closed_total",
            "Connections the server closed to protect itself (over_limit: more than "
            "READMIT_MAX_CONNECTIONS open; header_timeout; header_too_large)",
            ["reason"],
            registry=r,
        )
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason=reason)
        self.shed = Counter(
            "readmit_http_shed_total",
            "Requests answered 503 at once, by reason (in_flight: READMIT_MAX_IN_FLIGHT were "
            "in progress; queued: it waited longer than READMIT_MAX_QUEUE_MS to start)",
            ["reason"],
            registry=r,
        )
        for reason in SHED_REASONS:
            self.shed.labels(reason=reason)
        self.in_flight = Gauge(
            "readmit_http_requests_in_flight",
            "Requests in progress now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.in_flight_bound = Gauge(
            "readmit_http_in_flight_bound",
            "Requests the workers take in progress before answering 503 (adapts to "
            "READMIT_LATENCY_TARGET_MS between the pool threads and READMIT_MAX_IN_FLIGHT)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.open_connections = Gauge(
            "readmit_http_open_connections",
            "HTTP connections open now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_test_auc = Gauge(
            "readmit_model_test_roc_auc",
            "Test ROC-AUC of the model being served",
            registry=r,
            multiprocess_mode="livemostrecent",
        )

        self.log_rows = Counter(
            "readmit_prediction_log_rows_total",
            "Scored records written to monitor-db",
            registry=r,
        )
        self.log_dropped = Counter(
            "readmit_prediction_log_dropped_total",
            "Scored records not logged: the pending bound was reached or the spill file failed",
            registry=r,
        )
        self.log_spilled = Counter(
            "readmit_prediction_log_spilled_total",
            "Scored records written to the local spill file while monitor-db was unavailable",
            registry=r,
        )
        self.log_pending = Gauge(
            "readmit_prediction_log_pending",
            "Scored records waiting for monitor-db (in memory and in the spill file)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_flush_failures = Counter(
            "readmit_prediction_log_flush_failures_total",
            "Failed writes to monitor-db",
            registry=r,
        )
        self.history = Counter(
            "readmit_history_lookups_total",
            "Scored records by where their patient history came from "
            "(store, request, new_patient, unavailable)",
            ["source"],
            registry=r,
        )

    def model_loaded(self, name: str, version: str, test_auc: float | None = None) -> None:
        if self._served is not None and self._served != (name, version):
            self.model_info.labels(*self._served).set(0)  # what other workers read meanwhile
            self.model_info.remove(*self._served)
        self._served = (name, version)
        self.model_info.labels(name=name, version=version).set(1)
        self.model_ready.set(1)
        self.reloads.inc()
        if test_auc is not None:
            self.model_test_auc.set(test_auc)

    def challenger_loaded(self, name: str, version: str | None) -> None:
        """A challenger swapped in (or, with version None, removed)."""
        if self._challenger is not None:
            self.challenger_info.labels(*self._challenger).set(0)
            self.challenger_info.remove(*self._challenger)
        self._challenger = None if version is None else (name, version)
        if version is not None:
            self.challenger_info.labels(name=name, version=version).set(1)
        self.challenger_ready.set(0 if version is None else 1)

    def reload_failed(self, step: str, challenger: bool = False) -> None:
        counter = self.challenger_failures if challenger else self.reload_failures
        counter.labels(step=step).inc()

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, method=method, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint=endpoint, status=str(status)).inc()

    def observe_predictions(
        self,
        probabilities: list[float],
        threshold: float,
        variant: str = "champion",
        seconds: float | None = None,
    ) -> None:
        """One request's scores by one variant, and the time that model took to score them."""
        positive, negative, probability, scoring = self._by_variant[variant]
        positives = sum(p >= threshold for p in probabilities)
        if positives:
            positive.inc(positives)
        if len(probabilities) - positives:
            negative.inc(len(probabilities) - positives)
        for p in probabilities:
            probability.observe(p)
        if seconds is not None:
            scoring.observe(seconds)

    def observe_history(self, sources: list[str]) -> None:
        for source in set(sources):
            self.history.labels(source=source).inc(sources.count(source))

    def render(self) -> bytes:
        if _folder is None:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker, _folder)
        return generate_latest(every_worker)
