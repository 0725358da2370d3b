"""The Prometheus configuration and rules are valid, and every rule is pinned by a unit test.

promtool does the checking; these tests also make sure each alert has a firing and a quiet
case in observability/prometheus/tests, so a new alert cannot land untested.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.observability.dashboards import (
    PROMETHEUS,
    load_yaml,
    recorded_series,
    rule_files,
    rule_test_files,
    rules,
)

RunPromtool = Callable[..., subprocess.CompletedProcess[str]]
CONFIGS = ["prometheus.yml", "prometheus.compose.yml"]
COMPOSE_TARGETS = {
    "127.0.0.1:9090": "localhost:9090",
    "127.0.0.1:8000": "api:8000",
    "127.0.0.1:9108": "exporter:9108",
}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(run_promtool: RunPromtool, name: str) -> None:
    run_promtool("check", "config", str(PROMETHEUS / name))


def test_rules_are_valid(run_promtool: RunPromtool) -> None:
    run_promtool("check", "rules", *map(str, rule_files()))


def test_rule_unit_tests_pass(run_promtool: RunPromtool) -> None:
    files = rule_test_files()
    assert files, "no promtool rule tests found"
    result = run_promtool("test", "rules", *map(str, files))
    assert "FAILED" not in result.stdout + result.stderr


def test_compose_config_differs_only_in_targets() -> None:
    """The two configurations must not drift apart: only the scrape addresses differ."""
    local = load_yaml(PROMETHEUS / "prometheus.yml")
    compose = load_yaml(PROMETHEUS / "prometheus.compose.yml")
    for job in local["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [COMPOSE_TARGETS[t] for t in static["targets"]]
    assert local == compose
    jobs = {job["job_name"] for job in local["scrape_configs"]}
    assert {"prometheus", "readmit-api", "readmit-pipeline"} <= jobs


def test_rule_files_are_all_loaded() -> None:
    for name in CONFIGS:
        assert load_yaml(PROMETHEUS / name)["rule_files"] == ["rules/*.yml"]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def test_alerts_are_complete() -> None:
    """Each alert waits before firing, says how bad it is, and explains itself."""
    alerts = _alerts()
    assert alerts
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("for"), f"{name} has no `for`"
        assert alert.get("labels", {}).get("severity") in {"critical", "warning"}, name
        annotations = alert.get("annotations", {})
        assert annotations.get("summary"), f"{name} has no summary"
        assert annotations.get("description"), f"{name} has no description"


def _alert_cases() -> dict[str, dict[str, int]]:
    """Per alert name, how many test evaluations expect it firing and how many quiet."""
    cases: dict[str, dict[str, int]] = {}
    for path in rule_test_files():
        for test in load_yaml(path).get("tests", []):
            for case in test.get("alert_rule_test", []):
                counts = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
                counts["firing" if case.get("exp_alerts") else "quiet"] += 1
    return cases


def test_every_alert_has_firing_and_quiet_cases() -> None:
    cases = _alert_cases()
    for alert in _alerts():
        name = alert["alert"]
        counts = cases.get(name, {"firing": 0, "quiet": 0})
        assert counts["firing"], f"no promtool test expects {name} to fire"
        assert counts["quiet"], f"no promtool test expects {name} to stay quiet"
    unknown = set(cases) - {alert["alert"] for alert in _alerts()}
    assert not unknown, f"tests name alerts that do not exist: {sorted(unknown)}"


def test_every_recording_rule_has_an_expected_value() -> None:
    tested: set[str] = set()
    for path in rule_test_files():
        for test in load_yaml(path).get("tests", []):
            for case in test.get("promql_expr_test", []):
                if case.get("exp_samples"):
                    tested.add(case["expr"].strip())
    missing = recorded_series() - tested
    assert not missing, f"recording rules without an expected value: {sorted(missing)}"


def _threshold(name: str) -> float:
    (rule,) = [r for r in rules() if r.get("record") == name]
    return float(str(rule["expr"]).removeprefix("vector(").removesuffix(")"))


def test_monitoring_thresholds_are_the_monitors_settings(tmp_path) -> None:
    """The alert judges live ROC-AUC as the monitor does: the same floor, the same labels."""
    from readmit.settings import Settings

    settings = Settings(data_dir=tmp_path)
    assert _threshold("readmit:monitor_live_auc_floor") == settings.monitor_auc_floor
    assert _threshold("readmit:monitor_min_labelled_rows") == settings.monitor_min_labelled_rows
