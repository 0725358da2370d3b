"""What the Monitoring page shows: the latest monitoring runs of monitor-db
(READMIT_MONITOR_DB_URL) as tables, and where each run's report is in MLflow.

The page only reads: a monitor-db without runs (or without the table yet) is "no run yet".
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa

from readmit.errors import ReadmitError, first_line
from readmit.settings import Settings
from readmit.storage.db import safe_url

REPORTS = ("monitor/input_drift.html", "monitor/prediction_drift.html", "monitor/figures.json")


class MonitorUnavailable(ReadmitError):
    """monitor-db cannot be read; the message names it (without its password)."""


def recent_runs(settings: Settings, n: int) -> list[dict[str, Any]]:
    """The newest `n` monitoring runs, newest first (storage.monitor.latest_runs)."""
    from readmit.storage.monitor import latest_runs, monitor_engine, monitor_runs

    engine = monitor_engine(settings, timeout=5)
    try:
        if not sa.inspect(engine).has_table(monitor_runs.name):
            return []
        with engine.connect() as conn:
            return latest_runs(conn, n)
    except (sa.exc.SQLAlchemyError, ReadmitError) as exc:
        where = safe_url(settings.resolved_monitor_db_url)
        raise MonitorUnavailable(
            f"monitor-db at {where} cannot be read: {first_line(exc)}"
        ) from None
    finally:
        engine.dispose()


def latest_comparison(settings: Settings) -> dict[str, Any] | None:
    """The newest champion-challenger comparison (storage.monitor.latest_comparisons), or None."""
    from readmit.storage.monitor import latest_comparisons, monitor_engine

    engine = monitor_engine(settings, timeout=5)
    try:
        with engine.connect() as conn:
            found = latest_comparisons(conn, 1)
    except (sa.exc.SQLAlchemyError, ReadmitError) as exc:
        where = safe_url(settings.resolved_monitor_db_url)
        raise MonitorUnavailable(
            f"monitor-db at {where} cannot be read: {first_line(exc)}"
        ) from None
    finally:
        engine.dispose()
    return found[0] if found else None


def comparison_table(comparison: dict[str, Any]) -> pd.DataFrame:
    """One row per model of a comparison: its version and live figures on the compared
    encounters (NaN where the comparison had too few outcomes for them)."""
    figures = comparison.get("figures") or {}
    rows = [
        {
            "Model": arm.get("variant", role),
            "Version": arm.get("model_version") or "",
            "Labelled encounters": int(arm.get("labelled") or 0),
            "Readmissions": int(arm.get("positives") or 0),
            "Live ROC-AUC": _number(arm.get("roc_auc")),
            "Brier score": _number(arm.get("brier")),
        }
        for role in ("champion", "challenger")
        for arm in [figures.get(role) or {}]
    ]
    return pd.DataFrame(rows)


def drift_table(run: dict[str, Any]) -> pd.DataFrame:
    """Per input field of one run: its drift score, method, threshold and whether it drifted;
    drifted fields first, then by score. Empty when the run could not judge drift."""
    drift = (run.get("figures") or {}).get("drift") or {}
    rows = [
        {
            "Field": name,
            "Drifted": bool(column["drifted"]),
            "Score": _number(column["score"]),
            "Threshold": float(column["threshold"]),
            "Method": column["method"],
        }
        for name, column in (drift.get("features") or {}).items()
    ]
    table = pd.DataFrame(rows, columns=["Field", "Drifted", "Score", "Threshold", "Method"])
    return table.sort_values(["Drifted", "Score"], ascending=False, ignore_index=True)


def _number(value: Any) -> float:
    """A stored figure as a float; a score the run could not compute (stored as null) is NaN."""
    return float("nan") if value is None else float(value)


def auc_history(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Live ROC-AUC and its 95% interval per run that had enough outcomes, oldest first."""
    rows = []
    for run in runs:
        performance = (run.get("figures") or {}).get("performance")
        if performance:
            rows.append(
                {
                    "Run at": pd.Timestamp(run["run_at"]),
                    "Live ROC-AUC": float(performance["roc_auc"]),
                    "95% low": float(performance["roc_auc_ci_low"]),
                    "95% high": float(performance["roc_auc_ci_high"]),
                }
            )
    columns = ["Run at", "Live ROC-AUC", "95% low", "95% high"]
    return pd.DataFrame(rows, columns=columns).sort_values("Run at", ignore_index=True)


def runs_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Run at": pd.Timestamp(run["run_at"]),
                "Verdict": run["verdict"],
                "Model version": run.get("model_version") or "",
                "Rows": int(run["rows"]),
                "Labelled rows": int(run["labelled_rows"]),
                "Drifted fields": len(
                    ((run.get("figures") or {}).get("drift") or {}).get("drifted_features") or []
                ),
            }
            for run in runs
        ]
    )


def report_location(settings: Settings, run: dict[str, Any]) -> tuple[str, str | None]:
    """Where the run's report is: a sentence, and the MLflow page of the run when the
    tracking server is reachable over HTTP (None otherwise, or without an MLflow run)."""
    run_id = run.get("mlflow_run_id")
    if not run_id:
        return "This run logged no report to MLflow (see its reasons).", None
    uri = settings.resolved_tracking_uri
    text = (
        f"Run {run_id} of experiment {settings.monitor_experiment_name} in MLflow at "
        f"{safe_url(uri)}: {', '.join(REPORTS)}."
    )
    if not uri.startswith(("http://", "https://")):
        return text, None
    try:
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(uri).get_run(run_id).info.experiment_id
    except Exception:  # MLflow raises many kinds; the sentence still says where to look
        return text, None
    return text, f"{safe_url(uri).rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
