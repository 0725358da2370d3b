"""Every DAG imports cleanly and is wired as the flow says: tags, retries, docs, Assets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from readmit.orchestration import CLEAN_ASSET, RAW_ASSET, RETRAIN_ASSET
from readmit.stack.airflow import dags_folder

DAG_IDS = (
    "1_raw_batch_ingest_15k",
    "2_clean_build",
    "3_train_and_register",
    "4_monitor_and_retrain",
)


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with pytest.MonkeyPatch.context() as env:
        # Airflow reads AIRFLOW_HOME on its first import: point it at a throw-away folder.
        env.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
        env.setenv("READMIT_INGEST_SCHEDULE", "*/20 * * * *")
        env.setenv("READMIT_MONITOR_SCHEDULE", "15 3 * * *")
        from airflow.models.dagbag import DagBag

        return DagBag(dag_folder=str(dags_folder()))


def test_every_dag_imports(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dags) == sorted(DAG_IDS)
    assert sorted(p.name for p in dags_folder().glob("*.py")) == [f"{d}.py" for d in DAG_IDS]


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_has_tags_retries_and_docs(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert "readmit" in dag.tags and len(dag.tags) >= 2
    heading = f"### {dag_id.split('_', 1)[0]} · "
    assert dag.doc_md and dag.doc_md.strip().startswith(heading), dag.doc_md[:40]
    assert len(dag.doc_md) > 200 and "READMIT_" in dag.doc_md
    assert dag.max_active_runs == 1
    assert not dag.catchup
    for task in dag.tasks:
        assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def _outlets(dag: Any) -> dict[str, list[str]]:
    return {t.task_id: [o.name for o in t.outlets] for t in dag.tasks}


def test_ingest_runs_on_the_configured_schedule_and_publishes_raw_only_after_a_batch(
    dagbag: Any,
) -> None:
    dag = dagbag.dags["1_raw_batch_ingest_15k"]
    assert dag.timetable.expression == "*/20 * * * *"
    assert _outlets(dag) == {
        "ingest_next_batch": [],
        "batch_added": [],
        "publish_raw_batch": [RAW_ASSET],
    }
    assert dag.get_task("publish_raw_batch").upstream_task_ids == {
        "batch_added",
        "ingest_next_batch",
    }
    assert dag.get_task("batch_added").upstream_task_ids == {"ingest_next_batch"}


def test_assets_chain_ingest_to_clean_to_train(dagbag: Any) -> None:
    clean, train = dagbag.dags["2_clean_build"], dagbag.dags["3_train_and_register"]
    assert [a.name for a in clean.timetable.asset_condition.objects] == [RAW_ASSET]
    assert _outlets(clean) == {"build_clean": [CLEAN_ASSET], "materialise": []}
    assert clean.get_task("materialise").upstream_task_ids == {"build_clean"}
    condition = train.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # either Asset alone triggers training
    assert [a.name for a in condition.objects] == [CLEAN_ASSET, RETRAIN_ASSET]


def test_monitor_runs_on_the_configured_schedule_and_requests_retraining_only_after_a_verdict(
    dagbag: Any,
) -> None:
    dag = dagbag.dags["4_monitor_and_retrain"]
    assert dag.timetable.expression == "15 3 * * *"
    assert _outlets(dag) == {
        "run_monitor": [],
        "retrain_needed": [],
        "request_retrain": [RETRAIN_ASSET],
        "challenger_exists": [],
        "compare_models": [],
    }
    assert dag.get_task("compare_models").upstream_task_ids == {"challenger_exists"}
    assert dag.get_task("request_retrain").upstream_task_ids == {"retrain_needed", "run_monitor"}
    assert dag.get_task("retrain_needed").upstream_task_ids == {"run_monitor"}


def test_the_monitor_schedule_is_daily_unless_set(tmp_path: Path) -> None:
    from readmit.settings import Settings

    assert Settings(data_dir=tmp_path).monitor_schedule == "@daily"


def test_dags_hold_no_connection_strings() -> None:
    pattern = re.compile(r"(postgresql|sqlite|mysql|s3|https?)://|password|127\.0\.0\.1|localhost")
    for path in Path(dags_folder()).glob("*.py"):
        assert not pattern.search(path.read_text()), f"{path.name} hard-codes a connection"
