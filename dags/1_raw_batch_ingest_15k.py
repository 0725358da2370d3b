"""
### 1 · Raw batch ingest (15,000 rows a run)

Loads the **next pending batch** of the UCI data set into raw-db: rows are validated, hashed,
given their patient-level split and written in one transaction with their batch metadata;
invalid rows go to `raw_rejected` with the field and the reason.

- Schedule: `READMIT_INGEST_SCHEDULE` (default hourly); batch size `READMIT_BATCH_SIZE`.
- Once every batch is in, a run is a no-op that succeeds: `publish_raw_batch` is skipped and
  nothing downstream is triggered.
- When a batch lands, the `readmit_raw_db` Asset is updated, which triggers `2_clean_build`.
- Connections come from the `READMIT_*` settings of the environment.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, dag, task

from readmit.orchestration import RAW_ASSET
from readmit.settings import Settings

log = logging.getLogger("airflow.task")
RAW_DB = Asset(RAW_ASSET)


@dag(
    dag_id="1_raw_batch_ingest_15k",
    schedule=Settings().ingest_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["readmit", "ingest", "raw-db"],
    default_args={"owner": "readmit", "retries": 2, "retry_delay": timedelta(seconds=30)},
)
def raw_batch_ingest() -> None:
    @task(execution_timeout=timedelta(minutes=30))
    def ingest_next_batch() -> dict[str, Any]:
        from readmit.orchestration import ingest_next_batch as step

        return step(Settings(), report=log.info)

    @task.short_circuit
    def batch_added(summary: dict[str, Any]) -> bool:
        """Only a run that added a batch publishes the raw-db Asset."""
        return bool(summary["batches_added"])

    @task(outlets=[RAW_DB])
    def publish_raw_batch(summary: dict[str, Any]) -> None:
        log.info("raw-db gained batch(es) %s: triggering the clean build", summary["batch_ids"])

    summary = ingest_next_batch()
    batch_added(summary) >> publish_raw_batch(summary)


raw_batch_ingest()
