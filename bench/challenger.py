"""Champion and challenger, measured on real traffic through a real API.

Usage: READMIT_DATASET_URI=<zip> python bench/challenger.py [--records 5000] [--few 400]
       [--shadow api|bench]
       READMIT_DATASET_URI=<zip> python bench/challenger.py --cost [--seconds 15] [--users 20]

Live comparison (`readmit compare` on `readmit simulate` traffic and outcomes): three models
are fitted as training does (LightGBM on a clean build) and registered in a temporary MLflow:
- the champion, trained on the first two ingest batches (@production);
- an equal challenger, trained on the same two batches with another seed;
- a better challenger, trained on every batch.
`readmit serve` runs with READMIT_CHALLENGER_MODE=shadow, so every record is scored by both
models; test-split encounters are replayed through it with their outcomes, and the comparison
is computed on what the API logged. With `--shadow bench` (for an API without shadow mode), the
API serves the champion alone and the bench scores each logged record with the challenger in
process and logs it as the shadow row of the same encounter, as the API's shadow mode would.
In order:
1. too few labels: the better challenger, --few encounters (expected: wait);
2. the better challenger, --records more (expected: promote), then the same comparison on the
   first 250, 500, 1,000, ... labelled encounters: where the 95% interval clears zero is the
   number of labelled encounters needed to decide;
3. the equal challenger (swapped in while the API runs), --records encounters (expected: keep).
The baseline beside each decision is the two models' ROC-AUC on the offline test split.

Cost (`--cost`, instead of the above): what a shadowing challenger costs /predict. A small
model (the first 30,000 rows, a LightGBM) is registered at @production and a recalibrated copy
(the same scoring cost) at @challenger; `readmit serve` (one worker, the prediction log on a
SQLite monitor-db) runs four times, alternating READMIT_CHALLENGER_MODE off / shadow / off /
shadow, each under a closed loop of --users httpx clients for --seconds; after each shadow run
/metrics say how many records the challenger scored, dropped and failed on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
from closed_loop import bodies_of, closed_loop
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import roc_auc_score

from readmit import registry
from readmit.dataset import Dataset, load_dataset
from readmit.model import Calibration, ReadmissionModel, TrainingInfo
from readmit.monitoring.compare import Comparison, compare_rows
from readmit.monitoring.simulate import simulate, split_encounters
from readmit.pipeline.clean import build_clean
from readmit.pipeline.ingest import ingest
from readmit.pipeline.train import TrainingData, fit_lightgbm, load_training_data
from readmit.schema import MODEL_FIELDS
from readmit.settings import Settings
from readmit.stack.foreground import free_port, start_api
from readmit.storage import monitor
from readmit.tracking import configure, log_model

MODEL_INPUTS = list(MODEL_FIELDS)
PREFIXES = (250, 500, 1_000, 2_000, 3_000, 4_000, 6_000, 8_000, 12_000)
ROWS = 30_000  # of the cost bench's model
MODES = ("off", "shadow", "off", "shadow")


def fit(settings: Settings, data: TrainingData, seed: int) -> tuple[str, ReadmissionModel]:
    """A LightGBM on the build's train split, registered; returns (version, model)."""
    x, y = data.encoded("train"), data.labels("train")
    xv, yv = data.encoded("validation"), data.labels("validation")
    estimator, _, _ = fit_lightgbm(x, y, xv, yv, seed=seed, max_rounds=200)
    model = ReadmissionModel(
        data.build.transform,
        estimator,
        Calibration(),
        0.12,
        info=TrainingInfo(estimator="lightgbm"),
    )
    with mlflow.start_run(experiment_id=configure(settings)) as run:
        info = log_model(model, data.test_inputs[MODEL_INPUTS].head(3))
    version = registry.register(settings, info.model_uri, run.info.run_id, {})
    return version, model


def build(settings: Settings) -> tuple[dict[str, str], dict[str, ReadmissionModel], TrainingData]:
    """Champion and equal challenger on two batches, better challenger on every batch."""
    for _ in range(2):
        ingest(settings, all_batches=False)
    build_clean(settings)
    two = load_training_data(settings)
    print(f"  two batches: {len(two.labels('train')):,} training rows", flush=True)
    champion, champion_model = fit(settings, two, seed=0)
    equal, equal_model = fit(settings, two, seed=1)
    ingest(settings, all_batches=True)
    build_clean(settings)
    every = load_training_data(settings)
    print(f"  every batch: {len(every.labels('train')):,} training rows", flush=True)
    better, better_model = fit(settings, every, seed=0)
    registry.promote(settings, champion, reason="bench champion")
    versions = {"champion": champion, "equal": equal, "better": better}
    models = {"champion": champion_model, "equal": equal_model, "better": better_model}
    return versions, models, every


def set_challenger(settings: Settings, version: str) -> None:
    MlflowClient(settings.resolved_tracking_uri).set_registered_model_alias(
        settings.model_name, registry.CHALLENGER, version
    )


def shadow_in_bench(
    settings: Settings, since: datetime, version: str, model: ReadmissionModel, rows: int
) -> None:
    """Log the challenger's score of each champion row logged since `since` as its shadow row
    (same encounter and patient key), once the API has written `rows` champion rows."""
    engine = monitor.monitor_engine(settings)
    try:
        deadline = time.monotonic() + 120
        while len(logged := monitor.read_window(engine, since=since)) < rows:
            if time.monotonic() > deadline:
                sys.exit(f"the API logged {len(logged):,} rows, expected {rows:,}")
            time.sleep(1)
        logged = logged[logged["variant"] == "champion"].reset_index(drop=True)
        scores = model.predict_frame(logged[MODEL_INPUTS])
        keep = [c for c in monitor.PREDICTION_COLUMNS if c != "features"]
        shadow = [
            {
                **{c: row[c] for c in keep},
                "row_id": f"shadow-{uuid.uuid4().hex}",
                "scored_at": row["scored_at"].to_pydatetime(),
                "encounter_id": int(row["encounter_id"]),
                "model_version": version,
                "model_alias": registry.CHALLENGER,
                "variant": "shadow",
                "probability": float(p),
                "readmitted_30d": bool(p >= model.threshold),
                "features": {},
            }
            for row, p in zip(logged.to_dict("records"), scores, strict=True)
        ]
        with engine.begin() as conn:
            monitor.insert_predictions(conn, shadow)
    finally:
        engine.dispose()


def labelled(settings: Settings, since: datetime, challenger: str, rows: int) -> pd.DataFrame:
    """The labelled scores logged since `since`, once the API has written `rows` shadow rows
    of `challenger` (the log is written off the request path)."""
    engine = monitor.monitor_engine(settings)
    deadline = time.monotonic() + 120
    try:
        while True:
            found = monitor.read_labelled(engine, since=since)
            shadow = found[(found["variant"] == "shadow") & (found["model_version"] == challenger)]
            if len(shadow) >= rows:
                return found
            if time.monotonic() > deadline:
                sys.exit(
                    f"the API logged {len(shadow):,} labelled shadow scores of v{challenger}, "
                    f"expected {rows:,}: does it run READMIT_CHALLENGER_MODE=shadow?"
                )
            time.sleep(1)
    finally:
        engine.dispose()


def show(name: str, result: Comparison, offline: dict[str, float]) -> None:
    champion, challenger = result.champion, result.challenger
    figures = (
        "no figures"
        if result.auc_difference is None
        else f"live ROC-AUC {challenger.roc_auc:.4f} vs {champion.roc_auc:.4f}, difference "
        f"{result.auc_difference:+.4f} [{result.ci_low:+.4f}, {result.ci_high:+.4f}], Brier "
        f"{challenger.brier:.4f} vs {champion.brier:.4f}"
    )
    print(
        f"{name:<12} {result.decision:<8} {result.labelled:>6,} labelled: {figures}; "
        f"offline test ROC-AUC {offline['challenger']:.4f} vs {offline['champion']:.4f}",
        flush=True,
    )


def traffic(
    settings: Settings,
    url: str,
    pool: pd.DataFrame,
    records: int,
    seed: int,
    in_bench: tuple[str, ReadmissionModel] | None,
) -> datetime:
    since = datetime.now(UTC)
    result = simulate(settings, url, "steady", records, seed=seed, encounters=pool)
    print(f"  simulate: {result.summary()}", flush=True)
    if in_bench is not None:
        shadow_in_bench(settings, since, *in_bench, rows=records)
    return since


def needed(settings: Settings, rows: pd.DataFrame, challenger: str) -> None:
    """The same comparison on the first n labelled encounters, n growing."""
    order = rows.drop_duplicates("encounter_id")["encounter_id"].tolist()
    first_clear = None
    for n in [p for p in PREFIXES if p < len(order)] + [len(order)]:
        subset = rows[rows["encounter_id"].isin(set(order[:n]))]
        result = compare_rows(subset, n, settings.random_seed, challenger_version=challenger)
        if result.ci_low is None:
            print(f"  first {n:>6,}: too few outcomes of a kind", flush=True)
            continue
        clear = result.ci_low > 0
        if clear and first_clear is None:
            first_clear = n
        print(
            f"  first {n:>6,}: difference {result.auc_difference:+.4f} "
            f"[{result.ci_low:+.4f}, {result.ci_high:+.4f}]"
            f"{' clears zero' if clear else ''}; estimate from here: "
            f"{result.labelled_needed or 'n/a'}",
            flush=True,
        )
    print(
        "labelled encounters needed to decide (the interval first clears zero): "
        f"{first_clear if first_clear else f'more than {len(order):,}'}",
        flush=True,
    )


def cost_models(settings: Settings) -> list[dict]:
    """Ingest, clean and fit a small model; register it at @production and a recalibrated
    copy at @challenger; return test records as API payloads."""
    import mlflow

    full = load_dataset(settings, show_progress=False)
    sample = Dataset(full.frame.head(ROWS), full.sha256, full.source)
    ingest(settings, all_batches=True, dataset=sample)
    build_clean(settings)
    data = load_training_data(settings)
    x, y = data.encoded("train"), data.labels("train")
    xv, yv = data.encoded("validation"), data.labels("validation")
    estimator, _, _ = fit_lightgbm(x, y, xv, yv, seed=0, max_rounds=80)
    inputs = data.test_inputs.drop(columns=["encounter_id", "patient_nbr"], errors="ignore")
    versions = []
    for calibration in (Calibration(), Calibration(1.2, 0.1)):
        model = ReadmissionModel(
            data.build.transform, estimator, calibration, 0.12, TrainingInfo(estimator="lightgbm")
        )
        with mlflow.start_run(experiment_id=configure(settings)) as run:
            info = log_model(model, inputs.head(3))
        versions.append(registry.register(settings, info.model_uri, run.info.run_id, {}))
    registry.promote(settings, versions[0])
    registry.set_challenger(settings, versions[1], reason="bench")
    return bodies_of(inputs)


def scores_by_variant(url: str) -> dict[str, float]:
    """Records scored per variant, and shadow records dropped and failed, from /metrics."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "readmit_prediction_probability_count":
                found[sample.labels["variant"]] = sample.value
            elif sample.name in ("readmit_shadow_dropped_total", "readmit_shadow_failures_total"):
                found[sample.name.split("_")[2]] = sample.value
    return found


def cost_run(
    settings: Settings,
    mode: str,
    monitor_url: str,
    bodies: list[dict],
    args: argparse.Namespace,
    logs: Path,
) -> dict:
    port = free_port()
    env = {
        "READMIT_DATA_DIR": str(settings.data_dir),
        "READMIT_API_PORT": str(port),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_LOG_LEVEL": "WARNING",
        "READMIT_MONITOR_DB_URL": monitor_url,
        "READMIT_PSEUDONYM_KEY": secrets.token_hex(16),
        "READMIT_CHALLENGER_MODE": mode,
    }
    api = start_api(settings.model_copy(update={"api_port": port}), logs / f"api-{port}.log", env)
    try:
        health: dict = {}
        for _ in range(60):
            response = httpx.get(f"{api.url}/health")
            health = response.json()
            if response.status_code == 200 and (mode == "off" or health.get("challenger")):
                break
            time.sleep(0.5)
        if mode == "shadow" and not health.get("challenger"):
            raise SystemExit(f"the challenger did not load: {health}")
        asyncio.run(closed_loop(f"{api.url}/predict", bodies, args.users, 2.0))  # warm-up
        before = scores_by_variant(api.url)
        result = asyncio.run(closed_loop(f"{api.url}/predict", bodies, args.users, args.seconds))
        time.sleep(1.0)  # the last shadow scores
        after = scores_by_variant(api.url)
    finally:
        api.stop()
    result["scored"] = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    return result


def cost_line(mode: str, r: dict) -> str:
    n = {k: f"{v:,.0f}" for k, v in r["scored"].items()}
    shadow = (
        f"  shadow-scored {n.get('shadow', '0')} of {n.get('champion', '0')} answered, "
        f"dropped {n.get('dropped', '0')}, failed {n.get('failures', '0')}"
        if mode == "shadow"
        else ""
    )
    return (
        f"  {mode:<8} {r['rps']:8.1f} req/s  p50 {r['p50']:6.2f} ms  p95 {r['p95']:6.2f} ms  "
        f"errors {r['errors']}/{r['n']}{shadow}"
    )


def shadow_cost(args: argparse.Namespace) -> int:
    """Throughput and p50 of /predict with the challenger off and shadowing (--cost)."""
    folder = Path(tempfile.mkdtemp(prefix="readmit-bench-shadow-cost-"))
    settings = Settings(data_dir=folder, mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db")
    monitor_url = f"sqlite:///{folder}/monitor.db"
    bodies = cost_models(settings)
    print(
        f"/predict, closed loop, {args.users} clients, {args.seconds:.0f} s per run, one worker, "
        "prediction log on"
    )
    results: dict[str, list[dict]] = {"off": [], "shadow": []}
    for mode in MODES:
        r = cost_run(settings, mode, monitor_url, bodies, args, folder)
        results[mode].append(r)
        print(cost_line(mode, r), flush=True)
    off, on = (np.mean([r["rps"] for r in results[m]]) for m in ("off", "shadow"))
    p50_off, p50_on = (np.mean([r["p50"] for r in results[m]]) for m in ("off", "shadow"))
    print(
        f"  mean: off {off:.1f} req/s, shadow {on:.1f} req/s ({(on / off - 1) * 100:+.1f}%); "
        f"p50 off {p50_off:.2f} ms, shadow {p50_on:.2f} ms ({p50_on - p50_off:+.2f} ms)"
    )
    print(f"logs: {folder}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5_000)
    parser.add_argument("--few", type=int, default=400)
    parser.add_argument("--shadow", choices=("api", "bench"), default="api")
    parser.add_argument("--cost", action="store_true", help="the shadow cost bench instead")
    parser.add_argument("--seconds", type=float, default=15.0, help="per cost run")
    parser.add_argument("--users", type=int, default=20, help="of the cost runs")
    args = parser.parse_args()
    if args.cost:
        return shadow_cost(args)
    folder = Path(tempfile.mkdtemp(prefix="readmit-bench-challenger-"))
    settings = Settings(
        data_dir=folder,
        mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db",
        api_port=free_port(),
        batch_size=15_000,
        api_key="bench-challenger-key",  # outcomes are posted with the API's key
    )
    print(f"building three models in {folder}", flush=True)
    clock = time.perf_counter()
    versions, models, every = build(settings)
    test_inputs, test_labels = every.test_inputs, every.labels("test")
    offline = {
        name: float(roc_auc_score(test_labels, model.predict_frame(test_inputs)))
        for name, model in models.items()
    }
    print(
        f"  built in {time.perf_counter() - clock:.0f} s; offline test ROC-AUC: "
        + ", ".join(f"{n} v{versions[n]} {offline[n]:.4f}" for n in versions),
        flush=True,
    )
    set_challenger(settings, versions["better"])
    env = {
        "READMIT_DATA_DIR": str(folder),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_API_PORT": str(settings.api_port),
        "READMIT_API_KEY": "bench-challenger-key",
        "READMIT_CHALLENGER_MODE": "shadow" if args.shadow == "api" else "off",
        "READMIT_MODEL_POLL_SECONDS": "1",
        "READMIT_PREDICTION_LOG_FLUSH_SECONDS": "0.2",
        "READMIT_DATASET_URI": os.environ.get("READMIT_DATASET_URI", settings.dataset_uri),
    }
    api = start_api(settings, folder / "api.log", env, timeout=300)
    try:
        while not httpx.get(f"{api.url}/health", timeout=10).json().get("ready"):
            time.sleep(0.5)
        pool = split_encounters(settings)
        print(f"{len(pool):,} test-split encounters to replay", flush=True)
        better = {"champion": offline["champion"], "challenger": offline["better"]}
        equal = {"champion": offline["champion"], "challenger": offline["equal"]}
        minimum = settings.compare_min_labels

        bench = args.shadow == "bench"
        better_in_bench = (versions["better"], models["better"]) if bench else None
        equal_in_bench = (versions["equal"], models["equal"]) if bench else None
        since = traffic(settings, api.url, pool, args.few, 0, better_in_bench)
        rows = labelled(settings, since, versions["better"], args.few)
        show("too few", compare_rows(rows, minimum, settings.random_seed), better)

        since = traffic(settings, api.url, pool, args.records, 1, better_in_bench)
        rows = labelled(settings, since, versions["better"], args.records)
        show("better", compare_rows(rows, minimum, settings.random_seed), better)
        needed(settings, rows, versions["better"])

        set_challenger(settings, versions["equal"])
        time.sleep(5)  # the API polls its aliases every second
        since = traffic(settings, api.url, pool, args.records, 2, equal_in_bench)
        rows = labelled(settings, since, versions["equal"], args.records)
        result = compare_rows(
            rows, minimum, settings.random_seed, challenger_version=versions["equal"]
        )
        show("equal", result, equal)
    finally:
        api.stop()
    print(f"done in {time.perf_counter() - clock:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
