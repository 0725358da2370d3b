"""The readmit API against `mlflow models serve`, on the same registered model, same load.

Usage: python bench/api.py [--seconds 10]   (with the settings of a data dir holding a
@production model, e.g. after `make run`; READMIT_DATA_DIR / MLFLOW_TRACKING_URI pick it)

Both servers run with one worker on 127.0.0.1. Each level of concurrent users runs twice:
closed loop (every user sends its next request as soon as it has an answer: throughput and
latency under saturation) and paced (every user waits 0.5-1.5 s between requests, as a Locust
user would). It also times /predict-batch of 10,000 records, /explain, and the in-process path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from readmit.pipeline.train import load_training_data
from readmit.registry import PRODUCTION, by_alias, client_for, production_uri
from readmit.serving.model_store import load_version
from readmit.settings import Settings
from readmit.stack.foreground import Service, free_port, spawn, start_api, stop_process_group
from readmit.tracking import connect

LEVELS = (1, 20, 50)


def payloads(settings: Settings, count: int) -> list[dict]:
    inputs = load_training_data(settings).test_inputs.drop(columns=["encounter_id", "patient_nbr"])
    rows = json.loads(inputs.head(count).to_json(orient="records"))
    return [{k: (None if v == "?" else v) for k, v in r.items()} for r in rows]


async def drive(url: str, bodies: list[dict], users: int, seconds: float, paced: bool) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def user(client: httpx.AsyncClient, seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        if paced:  # users arrive spread over the first second, as Locust spawns them
            await asyncio.sleep(rng.uniform(0, 1.0))
        while time.perf_counter() < deadline:
            body = bodies[rng.randrange(len(bodies))]
            start = time.perf_counter()
            response = await client.post(url, json=body)
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200
            if paced:
                await asyncio.sleep(rng.uniform(0.5, 1.5))

    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        clock = time.perf_counter()
        await asyncio.gather(*(user(client, i) for i in range(users)))
        elapsed = time.perf_counter() - clock
    ms = np.asarray(latencies) * 1000
    return {
        "n": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors,
    }


def start_mlflow_serve(settings: Settings, port: int, log: Path) -> Service:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
    }
    command = [
        f"{venv_bin}/mlflow",
        "models",
        "serve",
        "-m",
        production_uri(settings),
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    service = spawn("mlflow-serve", command, env, log, f"http://127.0.0.1:{port}")
    for _ in range(240):
        try:
            if httpx.get(f"{service.url}/ping", timeout=2).status_code == 200:
                return service
        except httpx.HTTPError:
            time.sleep(0.5)
    stop_process_group(service.process)
    raise RuntimeError(f"mlflow models serve did not start; see {log}")


def line(label: str, r: dict) -> str:
    return (
        f"  {label:<28} {r['rps']:8.1f} req/s  p50 {r['p50']:7.2f} ms  p95 {r['p95']:7.2f} ms  "
        f"p99 {r['p99']:7.2f} ms  errors {r['errors']}/{r['n']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    settings = Settings()
    connect(settings)
    bodies = payloads(settings, 10_000)
    records = [{k: ("?" if v is None else v) for k, v in b.items()} for b in bodies]
    logs = Path(tempfile.mkdtemp(prefix="readmit-bench-"))

    version = str(by_alias(client_for(settings), settings.model_name, PRODUCTION).version)
    loaded = load_version(settings, version)
    model = loaded.model
    for r in records[:200]:
        model.predict_record(r)
    clock = time.perf_counter()
    for r in records[:5000]:
        model.predict_record(r)
    per_record = (time.perf_counter() - clock) / 5000 * 1000
    print(f"model {settings.model_name} v{version} ({model.estimator.kind})")
    print(f"in process: predict_record {per_record:.3f} ms per record (dict -> vector -> model)")

    api_settings = settings.model_copy(update={"api_port": free_port()})
    env = {"READMIT_API_PORT": str(api_settings.api_port), "READMIT_LOG_LEVEL": "WARNING"}
    api = start_api(api_settings, logs / "api.log", env)
    mlflow_serve = start_mlflow_serve(settings, free_port(), logs / "mlflow-serve.log")
    results: dict[tuple[str, str, int], dict] = {}
    try:
        for _ in range(30):
            if httpx.get(f"{api.url}/health").status_code == 200:
                break
            time.sleep(1)
        batch_times = []
        for _ in range(3):
            clock = time.perf_counter()
            response = httpx.post(f"{api.url}/predict-batch", json={"records": bodies}, timeout=120)
            batch_times.append(time.perf_counter() - clock)
            assert response.status_code == 200 and response.json()["scored"] == len(bodies)
        runs = ", ".join(f"{t:.2f}" for t in batch_times)
        median = statistics.median(batch_times)
        print(f"/predict-batch of {len(bodies):,} records: median {median:.2f} s (runs: {runs})")
        explain = asyncio.run(drive(f"{api.url}/explain", bodies, 1, args.seconds / 2, paced=False))
        print(line("/explain, 1 user", explain))
        targets = {
            "readmit": (f"{api.url}/predict", bodies),
            "mlflow-serve": (
                f"{mlflow_serve.url}/invocations",
                [{"dataframe_records": [r]} for r in records[:2000]],
            ),
        }
        for mode in ("closed", "paced"):
            print(f"{mode} loop, {args.seconds:.0f} s per level:")
            for users in LEVELS:
                for name, (url, load) in targets.items():
                    r = asyncio.run(drive(url, load, users, args.seconds, paced=mode == "paced"))
                    results[(mode, name, users)] = r
                    print(line(f"{name}, {users} users", r), flush=True)
                ours, theirs = (
                    results[(mode, "readmit", users)],
                    results[(mode, "mlflow-serve", users)],
                )
                print(
                    f"  ratio at {users} users: {ours['rps'] / theirs['rps']:.2f}x req/s, "
                    f"p95 {theirs['p95'] / ours['p95']:.2f}x lower"
                )
    finally:
        api.stop()
        mlflow_serve.stop()
    print(f"logs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
