"""Test ROC-AUC, PR-AUC and Brier over 5 patient-split salts, with readmit's training.

Usage: READMIT_DATASET_URI=<zip> python bench/model_quality.py [--salts 5]
Each salt re-splits the patients, re-cleans, refits the transform on its own train split,
trains the three candidates and evaluates the chosen one on its own test split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from readmit.dataset import load_dataset, typed_rows
from readmit.features import HISTORY_FIELD, FittedTransform, clean_frame
from readmit.pipeline.clean import MIN_CATEGORY_COUNT
from readmit.pipeline.ingest import row_hashes
from readmit.pipeline.train import TrainingData, fit_and_evaluate
from readmit.schema import INPUT_FIELDS
from readmit.settings import Settings
from readmit.split import SPLITS, assign_splits
from readmit.storage.clean import CleanBuild


def training_data(raw: pd.DataFrame, salt: str) -> TrainingData:
    split = pd.Series(assign_splits(raw["patient_nbr"], salt), index=raw.index)
    by_hash = dict(zip(raw["row_hash"], split, strict=True))
    cleaned = clean_frame(raw)
    cleaned_split = cleaned["row_hash"].map(by_hash)
    frames = {s: cleaned[cleaned_split == s].reset_index(drop=True) for s in SPLITS}
    transform = FittedTransform.fit(frames["train"], min_count=MIN_CATEGORY_COUNT)
    keys = frames["test"][["row_hash", HISTORY_FIELD]]
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
    columns = ["encounter_id", "patient_nbr", *INPUT_FIELDS, HISTORY_FIELD]
    return TrainingData(build=build, frames=frames, test_inputs=test_inputs[columns])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--salts", type=int, default=5)
    args = parser.parse_args()
    dataset = load_dataset(Settings(data_dir=Path(tempfile.mkdtemp())), show_progress=False)
    raw = typed_rows(dataset.frame)
    raw["row_hash"] = row_hashes(dataset.frame)
    results = []
    for i in range(args.salts):
        salt = f"bench-salt-{i}"
        clock = time.perf_counter()
        outcome = fit_and_evaluate(training_data(raw, salt), seed=i)
        m = outcome.test_metrics
        results.append(m)
        print(
            f"salt {i}: {outcome.chosen.name:<20} test ROC-AUC {m['roc_auc']:.4f} "
            f"[{m['roc_auc_ci_low']:.4f}, {m['roc_auc_ci_high']:.4f}]  PR-AUC {m['pr_auc']:.4f}  "
            f"Brier {m['brier']:.4f}  ({time.perf_counter() - clock:.0f} s)",
            flush=True,
        )
    for key, label in (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("brier", "Brier")):
        values = [m[key] for m in results]
        mean, std = statistics.mean(values), statistics.stdev(values)
        print(f"{label:<8} mean {mean:.4f} ± {std:.4f} (std, {len(values)} salts)")
    rate = statistics.mean(m["positive_rate"] for m in results)
    print(f"positive rate {rate:.4f}; Brier of always predicting it {rate * (1 - rate):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
