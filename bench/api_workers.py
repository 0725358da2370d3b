"""`readmit serve` with 1 worker and with N workers, side by side, under `wrk` (Debian's).

Usage: python bench/api_workers.py [--workers N] [--seconds 10]   (with the settings of a data
dir holding a @production model, e.g. after `make run`; READMIT_DATA_DIR / MLFLOW_TRACKING_URI
pick it). Needs `wrk` on the PATH (`apt-get install wrk`).

Both servers run on 127.0.0.1 with the default limits, JSON logs at WARNING and the prediction
log on, into a monitor-db of their own (a temporary SQLite file). wrk drives /predict closed
loop (each connection sends its next request as soon as it has an answer), rotating over 200
test records, at 1, 20 and 200 connections; it runs on the same machine and takes a share of
the same cores. At 200 connections the bound on requests in progress (READMIT_MAX_IN_FLIGHT per
worker) sheds: non-2xx counts those 503s, and the latencies include them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from readmit.pipeline.train import load_training_data
from readmit.settings import Settings
from readmit.stack.foreground import Service, free_port, start_api

LEVELS = (1, 20, 200)
RECORDS = 200
SCRIPT = """
local bodies = {}
local count = 0
for line in io.lines("%(bodies)s") do
  count = count + 1
  bodies[count] = line
end
local next_body = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  next_body = next_body %% count + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\\"requests\\": %%d, \\"seconds\\": %%f, \\"p50\\": %%f, \\"p95\\": %%f, " ..
    "\\"p99\\": %%f, \\"non2xx\\": %%d, \\"socket_errors\\": %%d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000, e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


def bodies(settings: Settings, folder: Path) -> Path:
    inputs = load_training_data(settings).test_inputs.drop(columns=["encounter_id", "patient_nbr"])
    rows = json.loads(inputs.head(RECORDS).to_json(orient="records"))
    path = folder / "bodies.jsonl"
    plain = [{k: (None if v == "?" else v) for k, v in r.items()} for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in plain))
    return path


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict:
    threads = min(connections, 2)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s"]
    done = subprocess.run(
        [*command, "-s", str(script), f"{url}/predict"], capture_output=True, text=True, check=True
    )
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not found:
        raise RuntimeError(f"wrk printed no result: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    result = json.loads(found[0].removeprefix("RESULT "))
    result["rps"] = result["requests"] / result["seconds"]
    result["ok_rps"] = (result["requests"] - result["non2xx"]) / result["seconds"]
    return result


def start(settings: Settings, workers: int, folder: Path) -> Service:
    port = free_port()
    env = {
        "READMIT_API_PORT": str(port),
        "READMIT_API_WORKERS": str(workers),
        "READMIT_LOG_LEVEL": "WARNING",
        "READMIT_MONITOR_DB_URL": f"sqlite:///{folder}/monitor-{workers}.db",
    }
    log = folder / f"api-{workers}.log"
    api = start_api(settings.model_copy(update={"api_port": port}), log, env)
    deadline = time.monotonic() + 120
    while httpx.get(f"{api.url}/health").status_code != 200:
        if time.monotonic() > deadline:
            api.stop()
            raise RuntimeError(f"the API with {workers} worker(s) did not load the model")
        time.sleep(0.5)
    for _ in range(20 * workers):  # every worker loads its model before the clock starts
        httpx.get(f"{api.url}/health")
    return api


def line(label: str, r: dict) -> str:
    return (
        f"  {label:<12} {r['rps']:7.1f} req/s ({r['ok_rps']:7.1f} answered 2xx)  "
        f"p50 {r['p50']:7.2f} ms  p95 {r['p95']:7.2f} ms  p99 {r['p99']:8.2f} ms  "
        f"non-2xx {r['non2xx']}/{r['requests']}  "
        f"socket errors {r['socket_errors']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1
    settings = Settings()
    folder = Path(tempfile.mkdtemp(prefix="readmit-bench-workers-"))
    script = folder / "predict.lua"
    script.write_text(SCRIPT % {"bodies": bodies(settings, folder)})
    print(f"{os.cpu_count()} cores; wrk closed loop on /predict, {args.seconds:.0f} s per level")
    results: dict[tuple[int, int], dict] = {}
    for workers in sorted({1, args.workers}):
        api = start(settings, workers, folder)
        try:
            for connections in LEVELS:
                results[(workers, connections)] = wrk(api.url, script, connections, args.seconds)
        finally:
            api.stop()
    for connections in LEVELS:
        print(f"{connections} connection(s):")
        for workers in sorted({1, args.workers}):
            print(line(f"{workers} worker(s)", results[(workers, connections)]))
        one, many = results[(1, connections)], results[(args.workers, connections)]
        print(
            f"  {args.workers} workers vs 1: {many['rps'] / one['rps']:.2f}x req/s, "
            f"p95 {many['p95']:.2f} vs {one['p95']:.2f} ms"
        )
    print(f"logs: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
