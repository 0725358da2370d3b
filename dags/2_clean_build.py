"""
### 2 · Clean build

Rebuilds clean-db from every batch in raw-db: missing markers, deaths and hospice discharges
dropped, ICD-9 groups, the patient history (earlier encounters only), the 30-day label; the
feature transform is fitted on `clean_train` only and stored with the build. Then the patient
history is materialised into the feature store's online store (Feast), which the API reads.

- Triggered by the `readmit_raw_db` Asset (a new raw batch); updates `readmit_clean_db`,
  which triggers `3_train_and_register`.
- Connections come from the `READMIT_*` settings of the environment.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, dag, task

from readmit.orchestration import CLEAN_ASSET, RAW_ASSET
from readmit.settings import Settings

log = logging.getLogger("airflow.task")


@dag(
    dag_id="2_clean_build",
    schedule=[Asset(RAW_ASSET)],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["readmit", "clean", "clean-db"],
    default_args={"owner": "readmit", "retries": 1, "retry_delay": timedelta(seconds=30)},
)
def clean_build() -> None:
    @task(outlets=[Asset(CLEAN_ASSET)], execution_timeout=timedelta(minutes=30))
    def build_clean() -> dict[str, Any]:
        from readmit.orchestration import build_clean as step

        return step(Settings(), report=log.info)

    @task(execution_timeout=timedelta(minutes=30))
    def materialise() -> dict[str, Any]:
        from readmit.orchestration import materialise_history

        return materialise_history(Settings(), report=log.info)

    build_clean() >> materialise()


clean_build()
