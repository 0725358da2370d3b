"""Where the observability files are, and every PromQL expression they hold.

`dashboard_expressions()` gives each expression as Prometheus would receive it, so a test can
parse-check them with promtool or run them against a live Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "observability"
PROMETHEUS = OBSERVABILITY / "prometheus"
RULES = PROMETHEUS / "rules"
RULE_TESTS = PROMETHEUS / "tests"
DASHBOARDS = OBSERVABILITY / "grafana" / "dashboards"
DATASOURCE_UID = "prometheus"

# Grafana's interval variables, replaced by durations Prometheus accepts. Longest names first,
# so `$__range_s` is never read as `$__range` followed by `_s`.
GRAFANA_MACROS = {
    "$__rate_interval": "5m",
    "$__interval_ms": "60000",
    "$__interval": "1m",
    "$__range_ms": "3600000",
    "$__range_s": "3600",
    "$__range": "1h",
}

# Series Prometheus adds to every scrape target.
SCRAPE_SERIES = frozenset({"up"})


def dashboard_files() -> list[Path]:
    """Every dashboard Grafana provisions."""
    return sorted(DASHBOARDS.glob("*.json"))


def rule_files() -> list[Path]:
    """Every rule file prometheus.yml loads (rules/*.yml)."""
    return sorted(RULES.glob("*.yml"))


def rule_test_files() -> list[Path]:
    """Every `promtool test rules` file."""
    return sorted(RULE_TESTS.glob("*.yml"))


def load_dashboard(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dashboard


def load_yaml(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels, including those inside rows (a collapsed row nests its panels)."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def expand_macros(expr: str) -> str:
    """The expression with Grafana's interval variables replaced, as Prometheus would get it."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return expr


def rules() -> Iterator[dict[str, Any]]:
    """Every recording and alerting rule of every rule file."""
    for path in rule_files():
        for group in load_yaml(path).get("groups", []):
            yield from group.get("rules", [])


def recorded_series() -> set[str]:
    """Names the recording rules define."""
    return {rule["record"] for rule in rules() if "record" in rule}


def panel_expressions(dashboard: dict[str, Any]) -> list[str]:
    """The raw `expr` of every target of every panel (Grafana macros left in)."""
    return [
        target["expr"]
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def dashboard_expressions() -> list[str]:
    """Every dashboard expr and every rule expr, macros expanded, each once, in file order."""
    found: list[str] = []
    for path in dashboard_files():
        found.extend(expand_macros(e) for e in panel_expressions(load_dashboard(path)))
    found.extend(str(rule["expr"]).strip() for rule in rules())
    return list(dict.fromkeys(found))


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"(?<![\w:.$])[A-Za-z_:][\w:]*")


def series_names(expr: str) -> set[str]:
    """Series an expression reads: readmit metrics, recorded names (with a colon) and `up`.

    A token-level reading, not a parser: label values are dropped first, and label names,
    functions and keywords never start with "readmit" nor hold a colon in these files.
    """
    names = _NAME.findall(_STRING.sub('""', expr))
    return {n for n in names if n.startswith("readmit") or ":" in n or n in SCRAPE_SERIES}
