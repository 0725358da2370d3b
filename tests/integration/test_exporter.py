"""Pipeline and model metrics, read from the real databases and registry on each scrape."""

from __future__ import annotations

import time

from prometheus_client import generate_latest

from readmit import registry
from readmit.exporter import registry_for
from tests.models import MODEL_INPUTS, log_and_register


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_exporter_reports_batches_rows_steps_and_the_production_model(
    small_build, small_data, lightgbm_model, tmp_path
):
    settings = small_build.settings.model_copy(
        update={
            "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "model_name": "readmission_exported",
        }
    )
    inputs = small_data.test_inputs[MODEL_INPUTS]
    labels = small_data.labels("test")
    version = log_and_register(settings, lightgbm_model, inputs)
    decision = registry.compare_and_promote(settings, version, 0.6612, inputs, labels)
    assert decision.promoted
    samples = _samples(generate_latest(registry_for(settings)).decode())
    assert samples['readmit_pipeline_batches{status="succeeded"}'] == 1
    assert samples['readmit_pipeline_batches{status="failed"}'] == 0
    raw_rows = sum(
        samples[f'readmit_pipeline_rows{{table="raw_{s}"}}']
        for s in ("train", "validation", "test")
    )
    assert raw_rows == 24_000
    assert samples['readmit_pipeline_rows{table="clean_test"}'] == small_build_rows(
        small_data, "test"
    )
    for step in ("ingest", "clean"):
        assert (
            time.time() - 3600
            < samples[f'readmit_pipeline_last_success_timestamp_seconds{{step="{step}"}}']
            <= time.time()
        )
        assert samples[f'readmit_pipeline_step_success{{step="{step}"}}'] == 1
    assert samples["readmit_production_model_version"] == float(version)
    assert samples["readmit_production_model_test_roc_auc"] == 0.6612
    assert samples[f'readmit_model_version_test_roc_auc{{version="{version}"}}'] == 0.6612


def small_build_rows(small_data, split: str) -> int:
    return len(small_data.frames[split])


def test_an_unreachable_database_is_skipped_not_fatal(small_build, tmp_path):
    settings = small_build.settings.model_copy(
        update={
            "raw_db_url": "postgresql+psycopg://postgres@127.0.0.1:1/raw",
            "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        }
    )
    samples = _samples(generate_latest(registry_for(settings)).decode())
    assert not any(k.startswith("readmit_pipeline_batches") for k in samples)
    assert samples['readmit_pipeline_rows{table="clean_train"}'] > 0
