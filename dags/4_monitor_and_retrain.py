"""
### 4 · Monitor and retrain

Runs the monitor over the latest window of the prediction log (`READMIT_MONITOR_DB_URL`):
feature and prediction drift against the serving model's reference, live ROC-AUC and
calibration where outcomes have come back, and a verdict `ok`, `drift`, `degraded` or
`insufficient-data`, stored in `monitor_runs` with its reasons.

- Schedule: `READMIT_MONITOR_SCHEDULE` (default daily).
- On `drift` or `degraded`, `request_retrain` publishes the `readmit_retrain_requested` Asset,
  its event carrying the verdict and the reasons; `3_train_and_register` is scheduled on it, and
  the new model still has to beat `@production` to be promoted. On any other verdict the task
  is skipped and nothing is triggered.
- Beside the monitor, when the registry has a `@challenger`, `compare_models` compares it with
  the champion on the logged scores with outcomes (`readmit compare`); with
  `READMIT_COMPARE_APPLY` (default on) a `promote` decision moves `@production` to the
  challenger and archives the champion. Without a challenger the step is skipped.
- Connections come from the `READMIT_*` settings and `MLFLOW_TRACKING_URI` of the environment.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

from readmit.orchestration import RETRAIN_ASSET
from readmit.settings import Settings

log = logging.getLogger("airflow.task")
RETRAIN_REQUESTED = Asset(RETRAIN_ASSET)


@dag(
    dag_id="4_monitor_and_retrain",
    schedule=Settings().monitor_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["readmit", "monitor", "retrain"],
    default_args={"owner": "readmit", "retries": 1, "retry_delay": timedelta(minutes=1)},
)
def monitor_and_retrain() -> None:
    @task(execution_timeout=timedelta(minutes=30))
    def run_monitor() -> dict[str, Any]:
        from readmit.orchestration import monitor

        return monitor(Settings(), report=log.info)

    @task.short_circuit
    def retrain_needed(summary: dict[str, Any]) -> bool:
        """Only a `drift` or `degraded` verdict publishes the retrain request."""
        return bool(summary["retrain"])

    @task(outlets=[RETRAIN_REQUESTED])
    def request_retrain(summary: dict[str, Any]) -> None:
        from readmit.orchestration import retrain_request

        extra = retrain_request(summary)
        get_current_context()["outlet_events"][RETRAIN_REQUESTED].extra = extra
        log.info("retraining requested: %s", extra["why"])

    @task.short_circuit
    def challenger_exists() -> bool:
        from readmit.orchestration import challenger_version

        return challenger_version(Settings(), report=log.info) is not None

    @task(execution_timeout=timedelta(minutes=30))
    def compare_models() -> dict[str, Any]:
        from readmit.orchestration import compare

        return compare(Settings(), report=log.info)

    summary = run_monitor()
    retrain_needed(summary) >> request_retrain(summary)
    challenger_exists() >> compare_models()


monitor_and_retrain()
