"""What a DAG file imports when Airflow parses it: the parse runs under a timeout on a scheduler
that may be busy, so the modules the DAG files import at the top stay free of MLflow, Feast,
the models and the audit (their tasks import those when they run)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("mlflow", "feast", "xgboost", "lightgbm", "fairlearn", "optuna", "evidently", "shap")


def test_the_modules_a_dag_file_imports_leave_the_heavy_libraries_unloaded():
    code = (
        "import sys, readmit.orchestration, readmit.settings\n"
        f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
