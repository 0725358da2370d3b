"""What logging every scored record costs /predict: the same API with the prediction log off
and on, in one run, side by side.

Usage: READMIT_DATASET_URI=<zip> python bench/prediction_log.py [--seconds 15] [--users 20]
READMIT_BENCH_PG_URL names the PostgreSQL server of monitor-db (default: postgres on
127.0.0.1:5432; a fresh database is created and dropped here); --sqlite logs to a SQLite file.

A small real model is built first (the first 30,000 rows through ingest, clean and a LightGBM,
registered at @production in a temporary MLflow). Then `readmit serve` (one worker, on
127.0.0.1) runs four times, alternating off / on / off / on, each under a closed loop of
--users concurrent httpx clients for --seconds. After each run with logging on, the rows in
monitor-db are counted against the requests answered (warm-up included). With --outage S
(PostgreSQL only), a last run with logging on takes monitor-db away for S seconds under load
(connections refused and the open ones ended), then gives it back: logged rows must equal
answered requests once the API has stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa
from closed_loop import bodies_of, closed_loop

from readmit import registry
from readmit.dataset import Dataset, load_dataset
from readmit.model import Calibration, ReadmissionModel, TrainingInfo
from readmit.pipeline.clean import build_clean
from readmit.pipeline.ingest import ingest
from readmit.pipeline.train import fit_lightgbm, load_training_data
from readmit.settings import Settings
from readmit.stack.foreground import free_port, start_api
from readmit.tracking import configure, log_model

ROWS = 30_000


def build_model(settings: Settings) -> list[dict]:
    """Ingest, clean, fit and promote a small model; return test records as API payloads."""
    import mlflow

    full = load_dataset(settings, show_progress=False)
    ingest(
        settings, all_batches=True, dataset=Dataset(full.frame.head(ROWS), full.sha256, full.source)
    )
    build_clean(settings)
    data = load_training_data(settings)
    x, y = data.encoded("train"), data.labels("train")
    xv, yv = data.encoded("validation"), data.labels("validation")
    estimator, _, _ = fit_lightgbm(x, y, xv, yv, seed=0, max_rounds=80)
    model = ReadmissionModel(
        data.build.transform, estimator, Calibration(), 0.12, TrainingInfo(estimator="lightgbm")
    )
    inputs = data.test_inputs.drop(columns=["encounter_id", "patient_nbr"], errors="ignore")
    with mlflow.start_run(experiment_id=configure(settings)) as run:
        info = log_model(model, inputs.head(3))
    registry.promote(settings, registry.register(settings, info.model_uri, run.info.run_id, {}))
    return bodies_of(inputs)


def logged_rows(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar() or 0)
    except sa.exc.SQLAlchemyError:
        return 0
    finally:
        engine.dispose()


def take_away(admin: str, name: str, seconds: float, after: float) -> threading.Thread:
    """In the background: after `after` s, refuse connections to database `name` and end the
    open ones; `seconds` later, accept them again."""

    def outage() -> None:
        time.sleep(after)
        _admin(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        _admin(
            admin,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        )
        print(f"  monitor-db unavailable for {seconds:.0f} s", flush=True)
        time.sleep(seconds)
        _admin(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        print("  monitor-db back", flush=True)

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    return thread


def run_once(
    settings: Settings,
    logging_on: bool,
    monitor_url: str,
    bodies: list[dict],
    args: argparse.Namespace,
    logs: Path,
    outage: tuple[str, str] | None = None,
) -> dict:
    port = free_port()
    env = {
        "READMIT_DATA_DIR": str(settings.data_dir),
        "READMIT_API_PORT": str(port),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_LOG_LEVEL": "WARNING",
        "READMIT_MONITOR_DB_URL": monitor_url,
        "READMIT_PSEUDONYM_KEY": secrets.token_hex(16),
        "READMIT_PREDICTION_LOG_ENABLED": str(logging_on).lower(),
    }
    before = logged_rows(monitor_url)
    api = start_api(settings.model_copy(update={"api_port": port}), logs / f"api-{port}.log", env)
    try:
        for _ in range(60):
            if httpx.get(f"{api.url}/health").status_code == 200:
                break
            time.sleep(0.5)
        warm = asyncio.run(closed_loop(f"{api.url}/predict", bodies, args.users, 2.0))
        seconds = args.seconds
        if outage is not None:
            away = take_away(*outage, seconds=args.outage, after=3.0)
            seconds = args.outage + 3.0 + args.seconds
        result = asyncio.run(closed_loop(f"{api.url}/predict", bodies, args.users, seconds))
        if outage is not None:
            away.join()
            result["pending_at_end"] = _pending(api.url)
    finally:
        api.stop()  # SIGTERM: the app's shutdown flushes the log
    result["answered"] = warm["ok"] + result["ok"]
    result["logged"] = logged_rows(monitor_url) - before
    return result


def _pending(url: str) -> float:
    """The API's readmit_prediction_log_pending gauge (records not yet in monitor-db)."""
    for text in httpx.get(f"{url}/metrics").text.splitlines():
        if text.startswith("readmit_prediction_log_pending "):
            return float(text.split()[1])
    return float("nan")


def request_path_cost(settings: Settings, body: dict) -> str:
    """In process: what a request spends handing one record to the log, next to what it
    spends validating it (the writer thread's work is not included)."""
    from readmit.monitoring.prediction_log import PredictionLog
    from readmit.serving.metrics import Metrics
    from readmit.serving.schemas import Encounter

    quiet = settings.model_copy(update={"prediction_log_max_pending": 10**7})
    writer, count = PredictionLog(quiet, Metrics()), 20_000
    encounter = Encounter.model_validate(body)
    clock = time.perf_counter()
    for _ in range(count):
        Encounter.model_validate(body)
    validate = (time.perf_counter() - clock) / count * 1e6
    clock = time.perf_counter()
    for _ in range(count):
        writer.record(
            "r", ("readmission", "1", "production"), 0.12, [dict(encounter.__dict__)], [0.3]
        )
    hand_over = (time.perf_counter() - clock) / count * 1e6
    return (
        f"in process, per record: validation {validate:.1f} us, handing it to the log "
        f"{hand_over:.1f} us"
    )


def line(label: str, r: dict) -> str:
    logged = f"  logged {r['logged']:,} of {r['answered']:,} answered" if r["logged"] else ""
    return (
        f"  {label:<16} {r['rps']:8.1f} req/s  p50 {r['p50']:6.2f} ms  p95 {r['p95']:6.2f} ms  "
        f"p99 {r['p99']:6.2f} ms  errors {r['errors']}/{r['n']}{logged}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--sqlite", action="store_true", help="monitor-db on SQLite")
    parser.add_argument(
        "--outage", type=float, default=0.0, help="then a run with monitor-db away this long"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="readmit-bench-log-"))
    settings = Settings(data_dir=folder, mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db")
    admin = os.environ.get(
        "READMIT_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    name = f"readmit_bench_{secrets.token_hex(4)}"
    if args.sqlite:
        monitor_url = f"sqlite:///{folder}/monitor.db"
    else:
        monitor_url = sa.engine.make_url(admin).set(database=name).render_as_string(False)
        _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        bodies = build_model(settings)
        print(request_path_cost(settings, bodies[0]))
        kind = "SQLite" if args.sqlite else "PostgreSQL"
        print(
            f"/predict, closed loop, {args.users} clients, {args.seconds:.0f} s per run, "
            f"one worker; monitor-db on {kind}"
        )
        results: dict[bool, list[dict]] = {False: [], True: []}
        for logging_on in (False, True, False, True):
            r = run_once(settings, logging_on, monitor_url, bodies, args, folder)
            results[logging_on].append(r)
            print(line(f"logging {'on' if logging_on else 'off'}", r), flush=True)
            if r["logged"] != (r["answered"] if logging_on else 0):
                print(f"  !! {r['answered']:,} answered (warm-up included), {r['logged']:,} logged")
        off = np.mean([r["rps"] for r in results[False]])
        on = np.mean([r["rps"] for r in results[True]])
        p95_off = np.mean([r["p95"] for r in results[False]])
        p95_on = np.mean([r["p95"] for r in results[True]])
        print(
            f"  mean: off {off:.1f} req/s, on {on:.1f} req/s ({(on / off - 1) * 100:+.1f}%); "
            f"p95 off {p95_off:.2f} ms, on {p95_on:.2f} ms"
        )
        if args.outage and not args.sqlite:
            r = run_once(settings, True, monitor_url, bodies, args, folder, (admin, name))
            print(line(f"outage {args.outage:.0f} s", r), flush=True)
            print(
                f"  outage run: {r['answered']:,} answered, {r['logged']:,} logged, "
                f"{r['pending_at_end']:.0f} pending at the end of the load"
            )
    finally:
        if not args.sqlite:
            _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"logs: {folder}")
    return 0


def _admin(url: str, statement: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
