"""Test ROC-AUC, PR-AUC and Brier over 5 patient-split salts, with readmit's training, with
and without the hyperparameter search and the history features; then the wall time of
`readmit pipeline` and its model's served against offline test ROC-AUC.

Usage: READMIT_DATASET_URI=<zip> python bench/model_quality.py [--salts 5] [--tune-seconds S]
    [--no-pipeline]
Each salt re-splits the patients, re-cleans, refits the transform on its own train split,
trains the three candidates with a search of S seconds and evaluates the chosen one on its own
test split. The untuned figures come from the same run: each search's first trial is the fit
of the fixed parameters, exactly as an untuned training makes it, so the candidates without
tuning are those first trials, chosen, calibrated and evaluated the same way. "no hist" trains
the same candidates with fixed parameters on the same split with the history features at 0.

After the pipeline's timing, its registered model is served: test ROC-AUC offline against the
API's when callers send the encounter's own fields and `patient_nbr` (history looked up) and
when they send the fields alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
from sklearn.metrics import roc_auc_score

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
    load_training_data,
)
from readmit.registry import PRODUCTION, by_alias, client_for
from readmit.schema import HISTORY_FIELDS, MODEL_FIELDS
from readmit.serving.model_store import load_version
from readmit.settings import EMBEDDED_TUNE_SECONDS, SERVER_TUNE_SECONDS, Settings
from readmit.split import SPLITS, assign_splits
from readmit.stack.foreground import free_port, start_api
from readmit.storage.clean import CleanBuild

SERVED_BATCH = 5_000


def training_data(raw: pd.DataFrame, salt: str, history: bool = True) -> TrainingData:
    """One salt's split, cleaned; without `history` the history features are all 0 (a constant
    column carries no signal), as a model that never saw them."""
    split = pd.Series(assign_splits(raw["patient_nbr"], salt), index=raw.index)
    by_hash = dict(zip(raw["row_hash"], split, strict=True))
    cleaned = clean_frame(raw)
    if not history:
        cleaned[list(HISTORY_FIELDS)] = 0
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


def pipeline_seconds(folder: Path) -> float:
    """Wall time of `readmit pipeline` in a fresh embedded data dir, with the default budget."""
    env = {k: v for k, v in os.environ.items() if k != "READMIT_TUNE_SECONDS"}
    env["READMIT_DATA_DIR"] = str(folder)
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


def served_probabilities(url: str, records: list[dict]) -> tuple[list[float], Counter[str]]:
    """/predict-batch over HTTP, in batches the API takes; the probabilities and the history
    sources it answered with."""
    probabilities: list[float] = []
    sources: Counter[str] = Counter()
    with httpx.Client(timeout=300) as client:
        for start in range(0, len(records), SERVED_BATCH):
            answer = client.post(
                f"{url}/predict-batch", json={"records": records[start : start + SERVED_BATCH]}
            )
            answer.raise_for_status()
            for result in answer.json()["results"]:
                probabilities.append(result["probability"])
                sources[result["history"]] += 1
    return probabilities, sources


def served_against_offline(folder: Path) -> None:
    """The registered model of `folder`'s pipeline: its test ROC-AUC offline (history from the
    clean build) against the API's, called with the encounter's own fields and `patient_nbr`
    only (the API looks history up), and with no patient at all (scored as new patients)."""
    settings = Settings(data_dir=folder)
    data = load_training_data(settings)
    labels = data.labels("test")
    version = by_alias(client_for(settings), settings.model_name, PRODUCTION)
    if version is None:
        raise SystemExit("the pipeline registered no @production model")
    offline = load_version(settings, str(version.version)).model.predict_frame(data.model_inputs)
    inputs = data.test_inputs.drop(columns=list(HISTORY_FIELDS))
    rows = json.loads(inputs.to_json(orient="records"))
    own = [{k: v for k, v in r.items() if k != "patient_nbr"} for r in rows]
    port = free_port()
    env = {"READMIT_DATA_DIR": str(folder), "READMIT_AUTH": "none", "READMIT_LOG_LEVEL": "WARNING"}
    api = start_api(
        settings.model_copy(update={"api_port": port}), folder / "api.log", env, timeout=180
    )
    try:
        deadline = time.monotonic() + 180
        while httpx.get(f"{api.url}/health").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit(f"the API did not load the model; see {folder / 'api.log'}")
            time.sleep(0.5)
        looked_up, sources = served_probabilities(api.url, rows)
        alone, alone_sources = served_probabilities(api.url, own)
    finally:
        api.stop()
    auc = {
        "offline": roc_auc_score(labels, offline),
        "served": roc_auc_score(labels, looked_up),
        "new": roc_auc_score(labels, alone),
    }
    gap = max(abs(a - b) for a, b in zip(looked_up, offline.tolist(), strict=True))
    print(f"registered model v{version.version}, {len(labels):,} test encounters:")
    print(f"  offline (history from the clean build)        test ROC-AUC {auc['offline']:.4f}")
    print(
        f"  served, caller sends own fields + patient_nbr test ROC-AUC {auc['served']:.4f} "
        f"(difference {auc['served'] - auc['offline']:+.4f}; history {dict(sources)}; "
        f"largest probability difference {gap:.1e})"
    )
    print(
        f"  served, caller sends own fields only          test ROC-AUC {auc['new']:.4f} "
        f"(difference {auc['new'] - auc['offline']:+.4f}; history {dict(alone_sources)}; mean "
        f"probability {statistics.mean(alone):.4f} vs {statistics.mean(offline.tolist()):.4f})"
    )


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
    parser.add_argument(
        "--no-pipeline",
        action="store_true",
        help="skip the pipeline timing and the served-against-offline check",
    )
    args = parser.parse_args()
    dataset = load_dataset(Settings(data_dir=Path(tempfile.mkdtemp())), show_progress=False)
    raw = typed_rows(dataset.frame)
    raw["row_hash"] = row_hashes(dataset.frame)
    results: dict[str, list[dict[str, float]]] = {"fixed": [], "tuned": [], "no hist": []}
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
        plain = training_data(raw, salt, history=False)
        fixed = fit_candidates(
            plain.encoded("train"),
            plain.labels("train"),
            plain.encoded("validation"),
            plain.labels("validation"),
            i,
            MAX_ROUNDS,
            lambda _: None,
        )
        outcome = choose_and_evaluate(plain, fixed, seed=i)
        results["no hist"].append(outcome.test_metrics)
        print(f"salt {i}: {line('no hist', outcome)}", flush=True)
        print(f"salt {i}: trials {trials}; {time.perf_counter() - clock:.0f} s", flush=True)
    for label, metrics in results.items():
        summarise(label, metrics)
    with_history = statistics.mean(m["roc_auc"] for m in results["fixed"])
    without = statistics.mean(m["roc_auc"] for m in results["no hist"])
    print(
        f"history features (fixed parameters, same {args.salts} salts): mean test ROC-AUC "
        f"{with_history:.4f} with, {without:.4f} without ({with_history - without:+.4f})"
    )
    rate = statistics.mean(m["positive_rate"] for m in results["fixed"])
    print(f"positive rate {rate:.4f}; Brier of always predicting it {rate * (1 - rate):.4f}")
    if not args.no_pipeline:
        with tempfile.TemporaryDirectory() as folder:
            seconds = pipeline_seconds(Path(folder))
            print(
                f"readmit pipeline (embedded, default budget {EMBEDDED_TUNE_SECONDS:g} s): "
                f"{seconds:.0f} s wall",
                flush=True,
            )
            served_against_offline(Path(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
