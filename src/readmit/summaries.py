"""The closing summary of each pipeline step, formatted once.

The CLI prints a step's line; a DAG task logs the same line and returns the facts as its XCom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from readmit.settings import Settings
from readmit.storage.db import safe_url

if TYPE_CHECKING:
    from readmit.feature_store.repo import MaterialiseResult
    from readmit.pipeline.clean import CleanResult
    from readmit.pipeline.ingest import IngestResult
    from readmit.pipeline.train import TrainResult


@dataclass(frozen=True)
class Summary:
    """What a step did: `facts` are JSON-able; `line` says them in one sentence."""

    step: str
    facts: dict[str, Any]
    line: str


def ingest_summary(settings: Settings, result: IngestResult, seconds: float) -> Summary:
    facts = {
        "batches_added": len(result.batches),
        "batch_ids": [b.batch_id for b in result.batches],
        "rows_inserted": result.rows_inserted,
        "duplicates": sum(b.duplicates for b in result.batches),
        "rejected": sum(b.rejected for b in result.batches),
        "total_batches": result.total_batches,
        "pending_after": result.pending_after,
        "seconds": round(seconds, 2),
        "raw_db": safe_url(settings.resolved_raw_db_url),
    }
    line = (
        f"{facts['batches_added']} batch(es) {facts['batch_ids']}, "
        f"{facts['rows_inserted']:,} rows inserted, {facts['duplicates']:,} duplicates, "
        f"{facts['rejected']:,} rejected, {facts['pending_after']} pending of "
        f"{facts['total_batches']} batches, {seconds:.1f} s; raw-db {facts['raw_db']}"
    )
    return Summary("ingest", facts, line)


def clean_summary(settings: Settings, result: CleanResult) -> Summary:
    facts = {
        "build_id": result.build_id,
        "raw_batches": result.raw_batches,
        "rows": result.rows,
        "dropped": result.dropped,
        "features": result.features,
        "seconds": round(result.seconds, 2),
        "clean_db": safe_url(settings.resolved_clean_db_url),
    }
    rows = ", ".join(f"{n:,} {split}" for split, n in result.rows.items())
    line = (
        f"build {result.build_id} from batches {result.raw_batches}: {rows}; "
        f"{result.dropped:,} dropped, {result.features} encoded columns, "
        f"{result.seconds:.1f} s; clean-db {facts['clean_db']}"
    )
    return Summary("clean", facts, line)


def materialise_summary(settings: Settings, result: MaterialiseResult) -> Summary:
    facts = {
        "build_id": result.build_id,
        "patients": result.patients,
        "encounters": result.encounters,
        "online_store": result.online_store,
        "seconds": round(result.seconds, 2),
    }
    line = (
        f"history of {result.patients:,} patients ({result.encounters:,} encounters) of build "
        f"{result.build_id} in the online store {result.online_store}, {result.seconds:.1f} s"
    )
    return Summary("materialise", facts, line)


def train_summary(settings: Settings, result: TrainResult) -> Summary:
    m = result.test_metrics
    facts = {
        "run_id": result.run_id,
        "model_name": settings.model_name,
        "version": result.version,
        "promoted": result.decision.promoted,
        "challenger": result.decision.challenger,
        "decision": result.decision.reason,
        "subgroup_audit": result.decision.audit_verdict,
        "estimator": result.chosen,
        "test_roc_auc": round(m["roc_auc"], 4),
        "tuning": {
            name: {k: int(v) if k == "trials" else round(v, 4) for k, v in found.items()}
            for name, found in result.tuning.items()
        },
        "seconds": round(result.seconds, 2),
        "tracking_uri": safe_url(settings.resolved_tracking_uri),
    }
    decision = result.decision
    alias = (
        "@production" if decision.promoted else "@challenger" if decision.challenger else "@staging"
    )
    line = (
        f"{result.chosen}, test ROC-AUC {m['roc_auc']:.4f} "
        f"(95% CI {m['roc_auc_ci_low']:.4f}-{m['roc_auc_ci_high']:.4f}), "
        f"PR-AUC {m['pr_auc']:.4f}, Brier {m['brier']:.4f}; {tuning_line(result.tuning)}; "
        f"at threshold {m['threshold']:.3f}: "
        f"sensitivity {m['sensitivity']:.2f}, specificity {m['specificity']:.2f}, "
        f"PPV {m['ppv']:.2f}; {settings.model_name} v{result.version} {alias} "
        f"({result.decision.reason}); subgroup audit {result.decision.audit_verdict}; "
        f"run {result.run_id}, {result.seconds:.1f} s; "
        f"MLflow {facts['tracking_uri']}"
    )
    return Summary("train", facts, line)


def tuning_line(tuning: dict[str, dict[str, float]]) -> str:
    """What the search did, per tuned candidate, or that there was none."""
    if not tuning:
        return "not tuned (READMIT_TUNE_SECONDS=0)"
    parts = [
        f"{name} {int(t['trials'])} trials, validation ROC-AUC {t['best_validation_roc_auc']:.4f} "
        f"(fixed {t['fixed_validation_roc_auc']:.4f}), {t['seconds']:.0f} s"
        for name, t in tuning.items()
    ]
    return "tuned " + " and ".join(parts)
