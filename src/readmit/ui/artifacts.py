"""The evaluation plots of the served model's training run, read from MLflow.

The API says which run trained the model (/model-info run_id); training logged its plots
under `plots/` of that run. The tracking store is the one the API loads models from:
MLFLOW_TRACKING_URI (or READMIT_MLFLOW_TRACKING_URI), else the embedded store.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from readmit.errors import first_line
from readmit.settings import apply_mlflow_client_defaults
from readmit.storage.db import safe_url

apply_mlflow_client_defaults()

PLOTS: dict[str, str] = {
    "roc.png": "ROC curve (test split)",
    "pr.png": "Precision-recall curve (test split)",
    "calibration.png": "Calibration (test split)",
    "confusion_matrix.png": "Confusion matrix at the threshold",
    "shap_summary.png": "SHAP summary (test sample)",
}
PLOTS_DIR = "plots"


@dataclass
class Plots:
    """Images by file name; `missing` names plots the run lacks; `error` when none could be
    fetched at all."""

    images: dict[str, bytes] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    error: str | None = None


def tracking_uri() -> str:
    """Where the API's models come from, by the same settings the API reads."""
    from readmit.settings import Settings, export_mlflow_login

    settings = Settings()
    export_mlflow_login(settings)
    return settings.resolved_tracking_uri


def fetch_plots(run_id: str, uri: str) -> Plots:
    """Download `plots/` of the run once and read the expected images from it."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=PLOTS_DIR, tracking_uri=uri, dst_path=tmp
            )
        except Exception as exc:  # MLflow raises many kinds: store, HTTP, S3, file system
            reason = first_line(exc) or type(exc).__name__
            return Plots(
                missing=list(PLOTS),
                error=f"The plots of run {run_id} could not be fetched from MLflow at "
                f"{safe_url(uri)}: {reason}",
            )
        folder = Path(local)
        images = {n: (folder / n).read_bytes() for n in PLOTS if (folder / n).is_file()}
    return Plots(images=images, missing=[n for n in PLOTS if n not in images])


@dataclass
class EvidenceFiles:
    """The subgroup table (CSV text) and decision-curve image a training run logged; `error`
    says why they could not be fetched."""

    subgroups_csv: str | None = None
    decision_curve: bytes | None = None
    error: str | None = None


def fetch_evidence(run_id: str, uri: str) -> EvidenceFiles:
    """Download `evidence/` of the run once and read the table and the curve from it."""
    import mlflow.artifacts

    from readmit.model_card import DECISION_CURVE_PLOT, SUBGROUPS_ARTIFACT

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="evidence", tracking_uri=uri, dst_path=tmp
            )
        except Exception as exc:  # MLflow raises many kinds: store, HTTP, S3, file system
            reason = first_line(exc) or type(exc).__name__
            return EvidenceFiles(
                error=f"The subgroup audit of run {run_id} could not be fetched from MLflow at "
                f"{safe_url(uri)}: {reason}"
            )
        folder = Path(local).parent
        table, curve = folder / SUBGROUPS_ARTIFACT, folder / DECISION_CURVE_PLOT
        return EvidenceFiles(
            subgroups_csv=table.read_text() if table.is_file() else None,
            decision_curve=curve.read_bytes() if curve.is_file() else None,
        )
