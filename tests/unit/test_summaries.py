"""Each step's closing summary: the facts a DAG task returns and the line the CLI prints."""

from __future__ import annotations

import json

from readmit.pipeline.clean import CleanResult
from readmit.pipeline.ingest import BatchResult, IngestResult
from readmit.pipeline.train import TrainResult
from readmit.registry import Decision
from readmit.settings import Settings
from readmit.summaries import clean_summary, ingest_summary, train_summary

SETTINGS = Settings(
    raw_db_url="postgresql+psycopg://raw:s3cret-raw@db/raw",
    clean_db_url="postgresql+psycopg://clean:s3cret-clean@db/clean",
    mlflow_tracking_uri="http://mlflow:s3cret-ml@mlflow:5000",
    model_name="readmission",
)
METRICS = {
    "roc_auc": 0.68123,
    "roc_auc_ci_low": 0.66,
    "roc_auc_ci_high": 0.70,
    "pr_auc": 0.2212,
    "brier": 0.0931,
    "threshold": 0.1234,
    "sensitivity": 0.5,
    "specificity": 0.75,
    "ppv": 0.2,
}


def test_ingest_summary_counts_every_batch_and_hides_the_password():
    batches = [
        BatchResult(3, 100, {"train": 70, "validation": 15, "test": 13}, 1, 1, 0.5),
        BatchResult(4, 50, {"train": 35, "validation": 8, "test": 7}, 0, 0, 0.5),
    ]
    summary = ingest_summary(SETTINGS, IngestResult(7, batches, pending_after=3), 2.345)
    assert summary.facts == {
        "batches_added": 2,
        "batch_ids": [3, 4],
        "rows_inserted": 148,
        "duplicates": 1,
        "rejected": 1,
        "total_batches": 7,
        "pending_after": 3,
        "seconds": 2.35,
        "raw_db": "postgresql+psycopg://raw:***@db/raw",
    }
    assert summary.line.startswith("2 batch(es) [3, 4], 148 rows inserted, 1 duplicates, ")
    assert (
        "3 pending of 7 batches, 2.3 s; raw-db postgresql+psycopg://raw:***@db/raw" in summary.line
    )
    assert "s3cret" not in summary.line + json.dumps(summary.facts)


def test_clean_summary_names_the_build_its_batches_and_rows():
    result = CleanResult("b-9", [1, 2], {"train": 7000, "validation": 1500}, 12, 140, 3.0)
    summary = clean_summary(SETTINGS, result)
    assert summary.step == "clean" and summary.facts["rows"] == result.rows
    assert summary.line.startswith("build b-9 from batches [1, 2]: 7,000 train, 1,500 validation;")
    assert "12 dropped, 140 encoded columns, 3.0 s" in summary.line
    assert "s3cret" not in summary.line + json.dumps(summary.facts)


def test_train_summary_says_where_the_model_went_and_why():
    decision = Decision("5", False, 0.681, "4", 0.68, "gain +0.0010 < 0.002")
    result = TrainResult("run-5", "5", decision, "lightgbm", METRICS, 61.0)
    summary = train_summary(SETTINGS, result)
    assert summary.facts["promoted"] is False and summary.facts["test_roc_auc"] == 0.6812
    assert summary.line.startswith("lightgbm, test ROC-AUC 0.6812 (95% CI 0.6600-0.7000), ")
    assert "at threshold 0.123: sensitivity 0.50, specificity 0.75, PPV 0.20" in summary.line
    assert (
        "readmission v5 @staging (gain +0.0010 < 0.002); subgroup audit passed; run run-5"
        in summary.line
    )
    assert "s3cret" not in summary.line + json.dumps(summary.facts)


def test_train_summary_names_the_subgroup_that_failed_the_audit():
    failure = "gender=Female (210 positives): ROC-AUC 0.502 [0.47, 0.54] wholly below"
    decision = Decision("5", False, 0.70, None, None, f"subgroup audit failed: {failure}", failure)
    result = TrainResult("run-5", "5", decision, "lightgbm", METRICS, 61.0)
    summary = train_summary(SETTINGS, result)
    assert f"subgroup audit failed: {failure}; run run-5" in summary.line
    assert summary.facts["subgroup_audit"] == f"failed: {failure}"


def test_train_summary_says_what_the_search_tried_or_that_there_was_none():
    decision = Decision("5", True, 0.69, None, None, "first version")
    tuning = {
        "xgboost": {
            "trials": 7,
            "best_validation_roc_auc": 0.69123,
            "fixed_validation_roc_auc": 0.6887,
            "seconds": 15.2,
        }
    }
    tuned = train_summary(
        SETTINGS, TrainResult("run-6", "6", decision, "xgboost", METRICS, 70.0, tuning)
    )
    assert "tuned xgboost 7 trials, validation ROC-AUC 0.6912 (fixed 0.6887), 15 s" in tuned.line
    assert tuned.facts["tuning"]["xgboost"]["trials"] == 7
    plain = train_summary(SETTINGS, TrainResult("run-6", "6", decision, "lightgbm", METRICS, 9.0))
    assert "not tuned (READMIT_TUNE_SECONDS=0)" in plain.line and plain.facts["tuning"] == {}
    assert json.dumps(tuned.facts)
