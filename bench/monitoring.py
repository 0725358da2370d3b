"""Monitoring runs on real data: false alarms on steady windows, detection of shifted fields,
and the time of a run over 50,000 logged rows beside one over 2,000, in one run.

Usage: READMIT_DATASET_URI=<zip> python bench/monitoring.py [--rows 50000] [--windows 10]

A small real model is built first (the first 50,000 rows of the data set through ingest,
clean and a LightGBM, registered in a temporary MLflow with its monitoring reference, as
`readmit train` stores it). Test-split records, scored by that model, are logged to a SQLite
monitor-db exactly as the API logs them (drawn with replacement up to --rows). Then:
- steady: --windows windows of 2,000 logged rows, each judged alone (verdicts, and the largest
  score per field over all windows beside its threshold);
- shifts: 2,000 test records drawn at random, with one change each, judged alone (verdict,
  top drifted fields);
- cost: `run_monitor` over the newest 2,000 rows, then over all --rows rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from readmit import registry
from readmit.dataset import Dataset, load_dataset
from readmit.model import Calibration, ReadmissionModel
from readmit.monitoring.monitor import MonitorWindow, judge, run_monitor
from readmit.monitoring.prediction_log import Scored
from readmit.monitoring.reference import log_reference
from readmit.pipeline.clean import build_clean
from readmit.pipeline.ingest import ingest
from readmit.pipeline.train import fit_lightgbm, load_training_data
from readmit.schema import HISTORY_FIELDS, INPUT_FIELDS
from readmit.settings import Settings
from readmit.storage import monitor
from readmit.tracking import configure, log_model

BUILD_ROWS = 50_000
WINDOW = 2_000
MODEL_INPUTS = [*INPUT_FIELDS, *HISTORY_FIELDS]
SHIFTS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "num_lab_procedures x10 (feed error)": lambda f: f.assign(
        num_lab_procedures=f["num_lab_procedures"] * 10
    ),
    "a1cresult '>8' for all (coding change)": lambda f: f.assign(a1cresult=">8"),
    "medical_specialty missing for all": lambda f: f.assign(medical_specialty=None),
    "emergency admissions aged 70+ (case mix)": lambda f: f[
        (f["admission_type_id"] == 1) & f["age"].isin(["[70-80)", "[80-90)", "[90-100)"])
    ],
}


def build(settings: Settings) -> tuple[ReadmissionModel, str, pd.DataFrame]:
    """Ingest, clean, fit, and register with the reference; returns the test inputs."""
    full = load_dataset(settings, show_progress=False)
    head = Dataset(full.frame.head(BUILD_ROWS), full.sha256, full.source)
    ingest(settings, all_batches=True, dataset=head)
    build_clean(settings)
    data = load_training_data(settings)
    x, y = data.encoded("train"), data.labels("train")
    xv, yv = data.encoded("validation"), data.labels("validation")
    estimator, _, _ = fit_lightgbm(x, y, xv, yv, seed=0, max_rounds=80)
    model = ReadmissionModel(data.build.transform, estimator, Calibration(), 0.12, info={})
    with mlflow.start_run(experiment_id=configure(settings)) as run:
        info = log_model(model, data.test_inputs[MODEL_INPUTS].head(3))
        probabilities = model.predict_frame(data.test_inputs)
        log_reference(settings, data.frames["train"], probabilities, data.labels("test"))
    version = registry.register(settings, info.model_uri, run.info.run_id, {})
    return model, version, data.test_inputs.reset_index(drop=True)


def payloads(frame: pd.DataFrame) -> list[dict]:
    rows = frame[MODEL_INPUTS].astype(object)
    out = rows.where(rows.notna() & (rows != "?"), None).to_dict("records")
    for record, encounter in zip(out, frame["encounter_id"], strict=True):
        record["encounter_id"] = int(encounter)
    return out


def logged(
    settings: Settings, model: ReadmissionModel, version: str, frame: pd.DataFrame
) -> pd.DataFrame:
    """Score and log `frame` in chunks as the API does; the rows as `read_window` gives them."""
    engine = monitor.monitor_engine(settings)
    monitor.ensure_tables(engine)
    for start in range(0, len(frame), 10_000):
        chunk = frame.iloc[start : start + 10_000]
        scored = Scored(
            batch_id=uuid.uuid4().hex,
            scored_at=datetime.now(UTC),
            request_id=uuid.uuid4().hex,
            model_name=settings.model_name,
            model_version=version,
            model_alias="production",
            threshold=model.threshold,
            records=payloads(chunk),
            probabilities=[float(p) for p in model.predict_frame(chunk)],
        )
        with engine.begin() as conn:
            monitor.insert_predictions(conn, scored.rows(b"bench-key"))
    window = monitor.read_window(engine)
    engine.dispose()
    return window


def timed(label: str, call: Callable[[], object]) -> tuple[object, float]:
    clock = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - clock
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return result, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--windows", type=int, default=10)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="readmit-bench-monitor-"))
    settings = Settings(data_dir=folder, mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db")
    print(f"building a model on the first {BUILD_ROWS:,} rows in {folder}", flush=True)
    model, version, test = build(settings)
    rng = np.random.default_rng(0)
    window = MonitorWindow(days=None)

    print(f"steady: {args.windows} windows of {WINDOW:,} test-split rows", flush=True)
    steady_frame = test.iloc[rng.integers(0, len(test), args.windows * WINDOW)]
    steady_rows = logged(
        settings.model_copy(update={"monitor_db_url": f"sqlite:///{folder}/steady.db"}),
        model,
        version,
        steady_frame.reset_index(drop=True),
    )
    verdicts: list[str] = []
    largest: dict[str, tuple[float, float]] = {}
    for i in range(args.windows):
        rows = steady_rows.iloc[i * WINDOW : (i + 1) * WINDOW].reset_index(drop=True)
        result = judge(settings, rows, window)
        verdicts.append(result.verdict)
        for name, column in result.figures["drift"]["features"].items():
            score = max(largest.get(name, (0.0, 0.0))[0], column["score"])
            largest[name] = (score, column["threshold"])
        print(f"  window {i + 1}: {result.verdict} {result.drifted_features}", flush=True)
    top = sorted(largest.items(), key=lambda item: -item[1][0] / item[1][1])[:5]
    print(
        f"steady: {verdicts.count('drift')} drift verdicts of {args.windows}; largest scores: "
        + ", ".join(f"{n} {s:.3f} (threshold {t})" for n, (s, t) in top)
    )

    for name, shift in SHIFTS.items():
        changed = shift(test.copy())
        shifted = changed.iloc[rng.permutation(len(changed))[:WINDOW]].reset_index(drop=True)
        url = f"sqlite:///{folder}/shift-{uuid.uuid4().hex[:8]}.db"
        rows = logged(settings.model_copy(update={"monitor_db_url": url}), model, version, shifted)
        result = judge(settings, rows, window)
        print(
            f"shift {name}: {len(rows):,} rows, {result.verdict}, top drifted: "
            f"{result.drifted_features[:3]}",
            flush=True,
        )

    print(f"cost: logging {args.rows:,} test-split rows", flush=True)
    cost = settings.model_copy(update={"monitor_db_url": f"sqlite:///{folder}/cost.db"})
    logged(cost, model, version, test.iloc[rng.integers(0, len(test), args.rows)])
    _, small = timed(
        f"run_monitor over {WINDOW:,} rows (baseline)",
        lambda: run_monitor(cost, MonitorWindow(days=None, rows=WINDOW)),
    )
    big, large = timed(
        f"run_monitor over {args.rows:,} rows",
        lambda: run_monitor(cost, MonitorWindow(days=None, rows=args.rows)),
    )
    print(
        f"cost: {args.rows:,} rows {large:.1f} s, {WINDOW:,} rows {small:.1f} s "
        f"(x{large / small:.2f}); verdict {getattr(big, 'verdict', '?')}; results in {folder}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
