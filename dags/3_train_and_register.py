"""
### 3 · Train and register

Trains logistic regression, XGBoost and LightGBM on the latest clean build, picks one by
validation ROC-AUC, calibrates and sets its threshold, logs everything to MLflow, registers
the model at `@staging` and moves `@production` to it when it beats the current production
version on the same test set by `READMIT_PROMOTE_MIN_DELTA`. A version that falls short, but
by no more than `READMIT_CHALLENGER_MARGIN` (when set), becomes `@challenger` instead, for a
live comparison. The API picks up a new `@production` or `@challenger` within its poll interval.

- Triggered by the `readmit_clean_db` Asset (a new clean build) or by the
  `readmit_retrain_requested` Asset (DAG 4 found drift or a degraded model; the event's extra
  says why). Either way the latest clean build is trained on.
- Connections come from the `READMIT_*` settings and `MLFLOW_TRACKING_URI` of the environment.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, dag, task

from readmit.orchestration import CLEAN_ASSET, RETRAIN_ASSET
from readmit.settings import Settings

log = logging.getLogger("airflow.task")


@dag(
    dag_id="3_train_and_register",
    schedule=(Asset(CLEAN_ASSET) | Asset(RETRAIN_ASSET)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["readmit", "train", "mlflow"],
    default_args={"owner": "readmit", "retries": 1, "retry_delay": timedelta(minutes=1)},
)
def train_and_register() -> None:
    @task(execution_timeout=timedelta(hours=1))
    def train_register_promote() -> dict[str, Any]:
        from readmit.orchestration import train_and_register as step

        return step(Settings(), report=log.info)

    train_register_promote()


train_and_register()
