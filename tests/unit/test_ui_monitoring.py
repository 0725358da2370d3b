"""The Monitoring page's tables from stored runs, including figures a run could not compute."""

from __future__ import annotations

import math

from readmit.ui.monitoring import drift_table


def _column(score: float | None, drifted: bool) -> dict[str, object]:
    return {"score": score, "drifted": drifted, "threshold": 0.1, "method": "jensenshannon"}


def test_drift_table_puts_drifted_fields_first_and_keeps_a_field_without_a_score() -> None:
    run = {
        "figures": {
            "drift": {
                "features": {
                    "age": _column(0.05, False),
                    "a1cresult": _column(0.4, True),
                    "constant_field": _column(None, False),
                }
            }
        }
    }
    table = drift_table(run)
    assert table["Field"].iloc[0] == "a1cresult"
    assert set(table["Field"]) == {"age", "a1cresult", "constant_field"}
    missing = table.loc[table["Field"] == "constant_field", "Score"].iloc[0]
    assert math.isnan(missing)


def test_drift_table_is_empty_when_the_run_could_not_judge_drift() -> None:
    assert drift_table({"figures": {"drift": None}}).empty
    assert drift_table({}).empty
