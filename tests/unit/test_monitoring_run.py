"""The parts of a monitoring run that need no database: windows, the preparation of fields for
drift, the rules of the verdict, and JSON without non-finite numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from readmit.monitoring.drift import (
    MISSING_VALUE,
    OTHER_VALUE,
    ColumnDrift,
    DriftFigures,
    comparable,
    lump_rare,
)
from readmit.monitoring.monitor import MonitorResult, MonitorWindow, WindowError, _verdict, finite
from readmit.monitoring.performance import LivePerformance, enough_outcomes
from readmit.monitoring.reference import REFERENCE_FIELDS
from readmit.settings import Settings


def test_window_durations_and_a_bad_one():
    assert MonitorWindow.parse_days("7d") == 7
    assert MonitorWindow.parse_days("36h") == pytest.approx(1.5)
    assert MonitorWindow.parse_days("90m") == pytest.approx(90 / 1440)
    assert MonitorWindow.parse_days("all") is None
    for bad in ("7", "0d", "-1d", "d", "7w"):
        with pytest.raises(WindowError, match=f"window: '{bad}' is not a positive duration"):
            MonitorWindow.parse_days(bad)


def _rows(**changes: list) -> pd.DataFrame:
    base = {name: [None, None] for name in REFERENCE_FIELDS}
    base.update(
        time_in_hospital=[3, 5], prior_encounters=[0, 2], admission_type_id=[1, 3], **changes
    )
    return pd.DataFrame(base)


def test_fields_are_prepared_as_documented():
    rows = comparable(
        _rows(diag_1=["428", "V57"], a1cresult=[None, ">8"], medical_specialty=[None, "Surgery"])
    )
    assert rows["time_in_hospital"].tolist() == [3.0, 5.0]
    assert rows["admission_type_id"].tolist() == ["1", "3"]  # codes are categories
    assert rows["diag_1"].tolist() == ["circulatory", "other"]  # by ICD-9 group
    assert rows["a1cresult"].tolist() == ["None", ">8"]  # not taken is the data set's "None"
    assert rows["medical_specialty"].tolist() == [MISSING_VALUE, "Surgery"]


def test_values_rare_in_the_reference_count_as_one():
    reference = pd.DataFrame({"payer_code": ["MC"] * 199 + ["XX"]})
    current = pd.DataFrame({"payer_code": ["MC", "XX", "NEW"]})
    for frame in (reference, current):
        for name in REFERENCE_FIELDS:
            if name != "payer_code":
                frame[name] = "x"
    lump_rare(reference, current)
    assert current["payer_code"].tolist() == ["MC", OTHER_VALUE, OTHER_VALUE]
    assert reference["payer_code"].value_counts()[OTHER_VALUE] == 1


def _performance(auc_high: float, observed: float, predicted: float) -> LivePerformance:
    return LivePerformance(
        labelled_rows=1000,
        positives=int(observed * 1000),
        roc_auc=auc_high - 0.05,
        roc_auc_ci_low=auc_high - 0.1,
        roc_auc_ci_high=auc_high,
        brier=0.1,
        observed_rate=observed,
        mean_predicted=predicted,
    )


def _drift(score: float) -> DriftFigures:
    return DriftFigures(
        {"a1cresult": ColumnDrift("jensenshannon", 0.1, score)},
        ColumnDrift("wasserstein", 0.1, 0.01),
    )


@pytest.mark.parametrize(
    ("drift", "performance", "verdict", "reason"),
    [
        (_drift(0.01), None, "ok", None),
        (_drift(0.30), None, "drift", None),
        (None, None, "insufficient-data", None),
        (_drift(0.30), _performance(0.61, 0.11, 0.11), "degraded", "below the floor 0.62"),
        (_drift(0.01), _performance(0.70, 0.15, 0.11), "degraded", "calibration off"),
        (None, _performance(0.70, 0.11, 0.13), "insufficient-data", None),
    ],
)
def test_the_verdict_is_the_worst_that_applies(drift, performance, verdict, reason):
    settings = Settings(monitor_auc_floor=0.62, monitor_calibration_tolerance=0.03)
    reasons: list[str] = []
    assert _verdict(settings, drift, performance, reasons) == verdict
    if reason:
        assert any(reason in r for r in reasons), reasons


def test_too_few_outcomes_or_of_one_kind_only():
    assert "needs 500" in enough_outcomes(np.zeros(100, dtype=int), 500)
    one_kind = np.r_[np.ones(5, dtype=int), np.zeros(995, dtype=int)]
    assert "needs 10 of each outcome" in enough_outcomes(one_kind, 500)
    assert enough_outcomes(np.r_[np.ones(50), np.zeros(950)].astype(int), 500) is None


def test_json_has_no_non_finite_numbers():
    result = MonitorResult("ok", [], False, [], 0, 0, None, figures={"score": float("nan")})
    body = result.as_json()
    assert body["figures"]["score"] is None
    json.loads(json.dumps(body, default=str, allow_nan=False))
    assert finite([1.0, float("inf"), {"a": float("-inf")}]) == [1.0, None, {"a": None}]


def test_a_monitor_db_without_runs_has_no_latest_run(tmp_path) -> None:
    import sqlalchemy as sa

    from readmit.storage.monitor import latest_runs

    engine = sa.create_engine(f"sqlite:///{tmp_path}/monitor.db")
    with engine.connect() as conn:
        assert latest_runs(conn, 3) == []
    engine.dispose()
