"""Service figures from the API's /metrics text and from a real Prometheus."""

from __future__ import annotations

import math
import os
import shutil
import time

import httpx
import pytest
import yaml

from readmit.serving.metrics import LATENCY_BUCKETS
from readmit.serving.schemas import EXAMPLE
from readmit.stack.foreground import free_port
from readmit.ui.client import PrometheusClient
from readmit.ui.dashboard import (
    Dashboard,
    Scrape,
    from_prometheus,
    histogram_quantile,
    parse_metrics,
    summarise,
)
from tests.observability.dashboards import rule_files
from tests.services import start_prometheus
from tests.ui.pages import assert_clean, captions, errors, metrics, open_page


def _buckets(counts: dict[float, float]) -> dict[float, float]:
    """Cumulative buckets from per-bucket counts, with +Inf."""
    total, out = 0.0, {}
    for le in [*LATENCY_BUCKETS, math.inf]:
        total += counts.get(le, 0.0)
        out[le] = total
    return out


def test_histogram_quantiles_interpolate_like_prometheus():
    buckets = _buckets({0.01: 50, 0.025: 40, 0.05: 10})
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.025 + 0.025 * 0.5)
    assert histogram_quantile(0.5, _buckets({})) is None
    assert histogram_quantile(0.99, _buckets({math.inf: 10})) == 10.0  # largest finite bound
    assert histogram_quantile(0.5, {1.0: 3}) is None  # no +Inf bucket: not a histogram


def test_rates_come_from_two_reads_and_leave_metrics_scrapes_out():
    first = Scrape(
        at=100.0,
        requests={"/predict": 10, "/metrics": 5},
        errors={"/predict": 1},
        buckets={"/predict": _buckets({0.01: 10})},
        predictions={"readmitted_30d": 2, "not_readmitted": 8},
    )
    second = Scrape(
        at=110.0,
        requests={"/predict": 30, "/metrics": 6},
        errors={"/predict": 3},
        buckets={"/predict": _buckets({0.01: 10, 0.1: 20})},
        predictions={"readmitted_30d": 7, "not_readmitted": 23},
    )
    totals = summarise(second)
    assert not totals.per_second and totals.requests == 30 and totals.error_ratio == 0.1
    rates = summarise(second, first)
    assert rates.per_second and rates.requests == pytest.approx(2.0)
    assert rates.error_ratio == pytest.approx(0.1)
    assert rates.predictions == {"readmitted_30d": 0.5, "not_readmitted": 1.5}
    assert 0.05 < rates.p50 <= 0.1  # only the second read's slow requests count
    restarted = Scrape(at=120.0, requests={"/predict": 1})
    assert not summarise(restarted, second).per_second  # counters went back: totals


def test_the_api_metrics_text_parses(stack):
    before = parse_metrics(httpx.get(f"{stack.api_url}/metrics").text)
    httpx.post(f"{stack.api_url}/predict", json=EXAMPLE, timeout=30)
    httpx.post(f"{stack.api_url}/predict", json={**EXAMPLE, "age": "old"}, timeout=30)
    after = parse_metrics(httpx.get(f"{stack.api_url}/metrics").text)
    assert after.requests["/predict"] - before.requests.get("/predict", 0) == 2
    assert after.errors["/predict"] - before.errors.get("/predict", 0) == 1
    assert sum(after.predictions.values()) - sum(before.predictions.values()) == 1
    assert math.inf in after.buckets["/predict"]


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    """A real Prometheus with the project's rules, scraping the stack's API every second."""
    if shutil.which("prometheus") is None:
        if os.environ.get("READMIT_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail("prometheus is not installed (Debian package prometheus)")
        pytest.skip("prometheus is not installed")
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files()],
        "scrape_configs": [
            {
                "job_name": "readmit-api",
                "static_configs": [{"targets": [stack.api_url.removeprefix("http://")]}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    server = start_prometheus(
        folder / "prometheus.yml", free_port(), folder / "tsdb", folder / "prometheus.log"
    )
    try:
        yield server.url
    finally:
        server.stop()


def test_the_service_page_reads_prometheus_when_configured(ui_env, prometheus, monkeypatch):
    client = PrometheusClient(prometheus)
    deadline = time.monotonic() + 60

    def complete(dashboard: Dashboard) -> bool:
        # Recording rules lag raw queries by an evaluation: wait until both have data.
        endpoints = {row.endpoint for row in dashboard.endpoints}
        return dashboard.requests > 0 and dashboard.p95 is not None and "/predict" in endpoints

    dashboard = from_prometheus(client)
    while time.monotonic() < deadline and not complete(dashboard):
        httpx.post(f"{ui_env.api_url}/predict", json=EXAMPLE, timeout=30)
        time.sleep(1)
        dashboard = from_prometheus(client)
    assert complete(dashboard), dashboard
    assert dashboard.p50 is not None and dashboard.error_ratio is not None
    assert set(dashboard.predictions) == {"readmitted_30d", "not_readmitted"}
    monkeypatch.setenv("READMIT_PROMETHEUS_URL", prometheus)
    app = open_page("Service")
    assert_clean(app)
    assert not errors(app)
    shown = metrics(app)
    assert shown["Request rate"].endswith("/s") and shown["Latency p95"].endswith(" ms")
    assert any(f"Prometheus at {prometheus}" in c for c in captions(app))


def test_an_unreachable_prometheus_gives_a_clear_message(ui_env, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("READMIT_PROMETHEUS_URL", url)
    app = open_page("Service")
    assert_clean(app)
    assert any("Prometheus" in e and "unreachable" in e for e in errors(app))
