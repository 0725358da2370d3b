"""Grafana dashboards are well formed and every query in them is valid PromQL.

Query validity is checked by promtool: each expression becomes a recording rule of a
throw-away rule file, which `promtool check rules` parses. Every series a dashboard or rule
reads must be one the API or the pipeline exporter exports, or one a recording rule defines,
so a renamed metric cannot leave a panel silently empty.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.registry import CollectorRegistry

from readmit.exporter import registry_for
from readmit.serving.metrics import Metrics
from readmit.settings import Settings
from readmit.storage import clean, raw
from tests.monitoring import record_a_monitoring_run
from tests.observability.dashboards import (
    DATASOURCE_UID,
    SCRAPE_SERIES,
    dashboard_expressions,
    dashboard_files,
    expand_macros,
    load_dashboard,
    panels,
    recorded_series,
    series_names,
)

RunPromtool = Callable[..., subprocess.CompletedProcess[str]]
CONSTANT = re.compile(r"vector\([0-9.e+-]+\)")
EXPECTED_TITLES = {"readmit — API SLOs", "readmit — Pipeline and model", "readmit — Model health"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def series_of(registry: CollectorRegistry) -> set[str]:
    """Series names a registry exposes: each family's name with its type's suffixes."""
    return {
        family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]
    }


def api_series() -> set[str]:
    """Series names the API exposes, read from its own metric definitions."""
    return series_of(Metrics().registry)


@pytest.fixture(scope="module")
def pipeline_series(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Series names the pipeline exporter exposes, read from the exporter itself: it is run on
    empty raw-db and clean-db schemas and an empty registry (so every source is readable)."""
    folder = tmp_path_factory.mktemp("exporter")
    settings = Settings(data_dir=folder, mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db")
    for url, metadata in (
        (settings.resolved_raw_db_url, raw.metadata),
        (settings.resolved_clean_db_url, clean.metadata),
    ):
        engine = sa.create_engine(url)
        metadata.create_all(engine)
        engine.dispose()
    record_a_monitoring_run(settings)
    return series_of(registry_for(settings))


def test_the_exporter_exposes_its_pipeline_and_model_series(pipeline_series: set[str]) -> None:
    """Every source of the exporter answered: a family of each (raw-db, clean-db, registry,
    monitor-db)."""
    assert {
        "readmit_pipeline_batches",
        "readmit_pipeline_rows",
        "readmit_production_model_version",
        "readmit_monitor_verdict",
        "readmit_monitor_live_auc_ci_low",
        "readmit_monitor_feature_drift_score",
    } <= pipeline_series


@pytest.fixture(params=dashboard_files(), ids=lambda p: p.name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    path: Path = request.param
    return load_dashboard(path)


def test_every_dashboard_exists() -> None:
    titles = {load_dashboard(path)["title"] for path in dashboard_files()}
    assert titles == EXPECTED_TITLES


def test_dashboard_header(dashboard: dict[str, Any]) -> None:
    assert dashboard.get("title")
    assert dashboard.get("uid")
    assert dashboard.get("schemaVersion") == 39


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel.get("id") for panel in panels(dashboard)]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {dashboard['title']}: {ids}"


def test_panels_query_prometheus(dashboard: dict[str, Any]) -> None:
    """Each panel has a place on the grid and at least one query on the Prometheus source."""
    for panel in panels(dashboard):
        if panel.get("type") == "row":
            continue
        title = panel.get("title")
        assert title, f"panel {panel.get('id')} has no title"
        grid = panel.get("gridPos", {})
        assert {"x", "y", "w", "h"} <= grid.keys(), f"{title}: gridPos {grid}"
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, f"{title}: gridPos {grid}"
        assert panel.get("datasource", {}).get("uid") == DATASOURCE_UID, title
        targets = panel.get("targets", [])
        assert targets, f"{title} has no targets"
        for target in targets:
            assert str(target.get("expr", "")).strip(), f"{title}: target without expr"
            assert target.get("datasource", {}).get("uid") == DATASOURCE_UID, title
        ref_ids = [t.get("refId") for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), f"{title}: duplicate refIds {ref_ids}"


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = taken.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']} overlaps {other}"


def test_expressions_parse(run_promtool: RunPromtool, tmp_path: Path) -> None:
    """promtool has no command to check one expression; a rule file of them is parsed instead."""
    expressions = dashboard_expressions()
    assert expressions
    rules = [
        {"record": f"readmit_dashboard_check_{i}", "expr": expr}
        for i, expr in enumerate(expressions)
    ]
    path = tmp_path / "expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}))
    run_promtool("check", "rules", str(path))


def test_expressions_read_known_series(pipeline_series: set[str]) -> None:
    known = api_series() | pipeline_series | SCRAPE_SERIES | recorded_series()
    for expr in dashboard_expressions():
        names = series_names(expr)
        assert names or CONSTANT.fullmatch(expr), f"reads no known kind of series: {expr}"
        unknown = names - known
        assert not unknown, f"{sorted(unknown)} is neither exported nor recorded: {expr}"


def test_macros_are_expanded() -> None:
    assert expand_macros("rate(x[$__rate_interval]) + y[$__range] + $__range_s") == (
        "rate(x[5m]) + y[1h] + 3600"
    )
    assert not any("$" in expr for expr in dashboard_expressions())


def test_series_names_ignore_labels_and_functions() -> None:
    expr = (
        'sum by (le) (rate(readmit_http_errors_total{status=~"5..", job="readmit-api"}[5m]))'
        " / ignoring (predicted_class) endpoint:readmit_http_requests:rate5m + up"
    )
    assert series_names(expr) == {
        "readmit_http_errors_total",
        "endpoint:readmit_http_requests:rate5m",
        "up",
    }
