"""Test ROC-AUC, PR-AUC and Brier over 5 patient-split salts, with readmit's training, with
and without the hyperparameter search; then the wall time of `readmit pipeline`.

Usage: READMIT_DATASET_URI=<zip> python bench/model_quality.py [--salts 5] [--tune-seconds S]
    [--no-pipeline]
Each salt re-splits the patients, re-cleans, refits the transform on its own train split,
trains the three candidates with a search of S seconds and evaluates the chosen one on its own
test split. The untuned figures come from the same run: each search's first trial is the fit
of the fixed parameters, exactly as an untuned training makes it, so the candidates without
tuning are those first trials, chosen, calibrated and evaluated the same way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from readmit.dataset import load_dataset, typed_rows
from readmit.features import FittedTransform, clean_frame
from readmit.pipeline.clean import MIN_CATEGORY_COUNT
from readmit.pipeline.ingest import row_hashes
from readmit.pipeline.train import (
    MAX_ROUNDS,
    Candidate,
    TrainingData,
    TrainingOutcome,
    choose_and_evaluate,
    fit_candidates,
)
from readmit.schema import HISTORY_FIELDS, MODEL_FIELDS
from readmit.settings import EMBEDDED_TUNE_SECONDS, SERVER_TUNE_SECONDS, Settings
from readmit.split import SPLITS, assign_splits
from readmit.storage.clean import CleanBuild


def training_data(raw: pd.DataFrame, salt: str) -> TrainingData:
    split = pd.Series(assign_splits(raw["patient_nbr"], salt), index=raw.index)
    by_hash = dict(zip(raw["row_hash"], split, strict=True))
    cleaned = clean_frame(raw)
    cleaned_split = cleaned["row_hash"].map(by_hash)
    frames = {s: cleaned[cleaned_split == s].reset_index(drop=True) for s in SPLITS}
    transform = FittedTransform.fit(frames["train"], min_count=MIN_CATEGORY_COUNT)
    keys = frames["test"][["row_hash", *HISTORY_FIELDS]]
    test_inputs = keys.merge(raw, on="row_hash", how="left", validate="one_to_one")
    build = CleanBuild(
        build_id=f"bench-{salt}",
        created_at=datetime.now(UTC),
        raw_batches=[],
        source_sha256=[],
        rows={s: len(f) for s, f in frames.items()},
        params={"split_salt": salt},
        transform=transform,
    )
    columns = ["encounter_id", "patient_nbr", *MODEL_FIELDS]
    return TrainingData(build=build, frames=frames, test_inputs=test_inputs[columns])


def untuned(candidate: Candidate) -> Candidate:
    """The candidate as an untuned training fits it: its search's first trial."""
    if candidate.tuning is None:
        return candidate
    first = candidate.tuning.baseline
    return replace(
        candidate,
        estimator=first.estimator,
        validation_auc=first.validation_auc,
        params=first.params,
        best_iteration=first.rounds,
        tuning=None,
    )


def line(label: str, outcome: TrainingOutcome) -> str:
    m = outcome.test_metrics
    return (
        f"{label:<8} {outcome.chosen.name:<20} test ROC-AUC {m['roc_auc']:.4f} "
        f"[{m['roc_auc_ci_low']:.4f}, {m['roc_auc_ci_high']:.4f}]  PR-AUC {m['pr_auc']:.4f}  "
        f"Brier {m['brier']:.4f}  (validation {outcome.chosen.validation_auc:.4f})"
    )


def pipeline_seconds() -> float:
    """Wall time of `readmit pipeline` in a fresh embedded data dir, with the default budget."""
    env = {k: v for k, v in os.environ.items() if k != "READMIT_TUNE_SECONDS"}
    with tempfile.TemporaryDirectory() as folder:
        env["READMIT_DATA_DIR"] = folder
        clock = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "readmit.cli", "pipeline"],
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - clock
    if done.returncode != 0:
        raise SystemExit(f"readmit pipeline failed: {done.stderr.strip()[-500:]}")
    return seconds


def summarise(label: str, results: list[dict[str, float]]) -> None:
    for key, name in (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("brier", "Brier")):
        values = [m[key] for m in results]
        mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{label:<8} {name:<8} mean {mean:.4f} ± {std:.4f} (std, {len(values)} salts)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--salts", type=int, default=5)
    parser.add_argument(
        "--tune-seconds",
        type=float,
        default=SERVER_TUNE_SECONDS,
        help="search budget per training (default: the default with an MLflow server)",
    )
    parser.add_argument("--no-pipeline", action="store_true", help="skip the pipeline timing")
    args = parser.parse_args()
    dataset = load_dataset(Settings(data_dir=Path(tempfile.mkdtemp())), show_progress=False)
    raw = typed_rows(dataset.frame)
    raw["row_hash"] = row_hashes(dataset.frame)
    results: dict[str, list[dict[str, float]]] = {"fixed": [], "tuned": []}
    print(f"search budget {args.tune_seconds:g} s per training", flush=True)
    for i in range(args.salts):
        salt = f"bench-salt-{i}"
        clock = time.perf_counter()
        data = training_data(raw, salt)
        x, y = data.encoded("train"), data.labels("train")
        xv, yv = data.encoded("validation"), data.labels("validation")
        tuned = fit_candidates(x, y, xv, yv, i, MAX_ROUNDS, lambda _: None, args.tune_seconds)
        trials = ", ".join(f"{c.name} {c.tuning.n_trials}" for c in tuned if c.tuning)
        for label, candidates in (("fixed", [untuned(c) for c in tuned]), ("tuned", tuned)):
            outcome = choose_and_evaluate(data, candidates, seed=i)
            results[label].append(outcome.test_metrics)
            print(f"salt {i}: {line(label, outcome)}", flush=True)
        print(f"salt {i}: trials {trials}; {time.perf_counter() - clock:.0f} s", flush=True)
    for label, metrics in results.items():
        summarise(label, metrics)
    rate = statistics.mean(m["positive_rate"] for m in results["fixed"])
    print(f"positive rate {rate:.4f}; Brier of always predicting it {rate * (1 - rate):.4f}")
    if not args.no_pipeline:
        seconds = pipeline_seconds()
        print(
            f"readmit pipeline (embedded, default budget {EMBEDDED_TUNE_SECONDS:g} s): "
            f"{seconds:.0f} s wall",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
