"""Service figures for the dashboard: request rate, latency p50/p95, error rate, predictions.

With Prometheus (READMIT_PROMETHEUS_URL) they come from the project's recording rules over
5 minutes. Without it they come from the API's own /metrics: totals since the API started on
the first look, and rates between two looks once the page has been refreshed.
Scrapes of /metrics are monitoring, not traffic: the headline figures leave them out.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from readmit.ui.client import PrometheusClient

SCRAPE_ENDPOINT = "/metrics"
REQUESTS = "readmit_http_requests_total"
ERRORS = "readmit_http_errors_total"
LATENCY_BUCKET = "readmit_http_request_duration_seconds_bucket"
PREDICTIONS = "readmit_predictions_total"


@dataclass
class Scrape:
    """Counters of one read of /metrics (cumulative since the API started)."""

    at: float
    requests: dict[str, float] = field(default_factory=dict)  # endpoint -> requests
    errors: dict[str, float] = field(default_factory=dict)  # endpoint -> status >= 400
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # endpoint -> le -> n
    predictions: dict[str, float] = field(default_factory=dict)  # predicted class -> records


def parse_metrics(text: str, at: float | None = None) -> Scrape:
    """The counters the dashboard needs, summed over labels it does not show."""
    scrape = Scrape(at=time.time() if at is None else at)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == REQUESTS:
                endpoint = labels.get("endpoint", "other")
                scrape.requests[endpoint] = scrape.requests.get(endpoint, 0.0) + sample.value
            elif sample.name == ERRORS:
                endpoint = labels.get("endpoint", "other")
                scrape.errors[endpoint] = scrape.errors.get(endpoint, 0.0) + sample.value
            elif sample.name == LATENCY_BUCKET:
                le = float(labels["le"])
                buckets[labels.get("endpoint", "other")][le] += sample.value
            elif sample.name == PREDICTIONS and labels.get("variant") != "shadow":
                name = labels.get("predicted_class", "unknown")
                scrape.predictions[name] = scrape.predictions.get(name, 0.0) + sample.value
    scrape.buckets = {endpoint: dict(b) for endpoint, b in buckets.items()}
    return scrape


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets (upper bound -> count):
    linear within the bucket; in the +Inf bucket, the largest finite bound."""
    ordered = sorted(buckets.items())
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower
            inside = count - below
            if inside <= 0:
                return upper
            return lower + (upper - lower) * (rank - below) / inside
        lower, below = upper, count
    return lower


@dataclass
class EndpointRow:
    endpoint: str
    requests: float
    errors: float
    error_ratio: float | None
    p50: float | None
    p95: float | None


@dataclass
class Dashboard:
    """What the page shows; `per_second` tells rates (True) from totals (False)."""

    source: str
    per_second: bool
    requests: float
    error_ratio: float | None
    p50: float | None
    p95: float | None
    endpoints: list[EndpointRow]
    predictions: dict[str, float]


def _minus(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: v - b.get(k, 0.0) for k, v in a.items()}


def _bucket_minus(
    a: dict[str, dict[float, float]], b: dict[str, dict[float, float]]
) -> dict[str, dict[float, float]]:
    return {k: {le: n - b.get(k, {}).get(le, 0.0) for le, n in v.items()} for k, v in a.items()}


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _merge(histograms: Sequence[dict[float, float]]) -> dict[float, float]:
    merged: dict[float, float] = defaultdict(float)
    for histogram in histograms:
        for le, n in histogram.items():
            merged[le] += n
    return dict(merged)


def summarise(current: Scrape, previous: Scrape | None = None) -> Dashboard:
    """Totals of `current`, or rates since `previous` when there is one and no counter went
    back (an API restart resets them)."""
    requests, errors, buckets = current.requests, current.errors, current.buckets
    predictions = current.predictions
    seconds = current.at - previous.at if previous is not None else 0.0
    per_second = False
    source = "API /metrics: totals since the API started"
    if previous is not None and seconds > 0:
        d_requests = _minus(requests, previous.requests)
        if all(v >= 0 for v in d_requests.values()):
            per_second = True
            source = f"API /metrics: rates over the {seconds:.1f} s between the last two reads"
            requests, errors = d_requests, _minus(errors, previous.errors)
            buckets = _bucket_minus(buckets, previous.buckets)
            predictions = _minus(predictions, previous.predictions)
    scale = 1.0 / seconds if per_second else 1.0
    rows = []
    for endpoint in sorted(requests):
        n, failed = requests[endpoint], errors.get(endpoint, 0.0)
        histogram = buckets.get(endpoint, {})
        rows.append(
            EndpointRow(
                endpoint,
                n * scale,
                failed * scale,
                _ratio(failed, n),
                histogram_quantile(0.5, histogram),
                histogram_quantile(0.95, histogram),
            )
        )
    traffic = [r for r in requests if r != SCRAPE_ENDPOINT]
    total = sum(requests[e] for e in traffic)
    failed = sum(errors.get(e, 0.0) for e in traffic)
    merged = _merge([buckets[e] for e in traffic if e in buckets])
    return Dashboard(
        source=source,
        per_second=per_second,
        requests=total * scale,
        error_ratio=_ratio(failed, total),
        p50=histogram_quantile(0.5, merged),
        p95=histogram_quantile(0.95, merged),
        endpoints=rows,
        predictions={k: v * scale for k, v in predictions.items()},
    )


TRAFFIC = f'endpoint!="{SCRAPE_ENDPOINT}"'
QUERIES = {
    "requests": f"sum(endpoint:readmit_http_requests:rate5m{{{TRAFFIC}}})",
    "error_ratio": f"sum(endpoint:readmit_http_errors:rate5m{{{TRAFFIC}}})"
    f" / sum(endpoint:readmit_http_requests:rate5m{{{TRAFFIC}}})",
    "p50": "histogram_quantile(0.5, sum by (le) "
    f"(rate(readmit_http_request_duration_seconds_bucket{{{TRAFFIC}}}[5m])))",
    "p95": "histogram_quantile(0.95, sum by (le) "
    f"(rate(readmit_http_request_duration_seconds_bucket{{{TRAFFIC}}}[5m])))",
    "endpoint_requests": "endpoint:readmit_http_requests:rate5m",
    "endpoint_errors": "endpoint:readmit_http_errors:rate5m",
    "endpoint_p50": "endpoint:readmit_http_request_duration_seconds:p50_5m",
    "endpoint_p95": "endpoint:readmit_http_request_duration_seconds:p95_5m",
    "predictions": "predicted_class:readmit_predictions:rate5m",
}


def _number(value: str) -> float | None:
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


def _scalar(prometheus: PrometheusClient, promql: str) -> float | None:
    result = prometheus.query(promql)
    return _number(result[0]["value"][1]) if result else None


def _by(prometheus: PrometheusClient, promql: str, label: str) -> dict[str, float | None]:
    return {
        item["metric"].get(label, ""): _number(item["value"][1])
        for item in prometheus.query(promql)
    }


def from_prometheus(prometheus: PrometheusClient) -> Dashboard:
    """The same figures from Prometheus's recording rules, as 5-minute rates."""
    requests = _by(prometheus, QUERIES["endpoint_requests"], "endpoint")
    errors = _by(prometheus, QUERIES["endpoint_errors"], "endpoint")
    p50 = _by(prometheus, QUERIES["endpoint_p50"], "endpoint")
    p95 = _by(prometheus, QUERIES["endpoint_p95"], "endpoint")
    rows = []
    for endpoint in sorted(requests):
        n, failed = requests[endpoint] or 0.0, errors.get(endpoint) or 0.0
        rows.append(
            EndpointRow(
                endpoint, n, failed, _ratio(failed, n), p50.get(endpoint), p95.get(endpoint)
            )
        )
    predictions = _by(prometheus, QUERIES["predictions"], "predicted_class")
    return Dashboard(
        source=f"Prometheus at {prometheus.base_url}: 5-minute rates",
        per_second=True,
        requests=_scalar(prometheus, QUERIES["requests"]) or 0.0,
        error_ratio=_scalar(prometheus, QUERIES["error_ratio"]),
        p50=_scalar(prometheus, QUERIES["p50"]),
        p95=_scalar(prometheus, QUERIES["p95"]),
        endpoints=rows,
        predictions={k: v or 0.0 for k, v in predictions.items()},
    )
