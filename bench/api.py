"""The readmit API, with keys off and on, against `mlflow models serve` on the same registered
model, under `wrk` (Debian's), in one run.

Usage: python bench/api.py [--seconds 10] [--workers N]   (with the settings of a data dir
holding a @production model, e.g. after `make run`; READMIT_DATA_DIR / MLFLOW_TRACKING_URI pick
it). Needs `wrk` on the PATH (`apt-get install wrk`).

Every server runs on 127.0.0.1 with N workers (default: the cores): readmit with the default
limits, JSON logs at WARNING and the prediction log on (a temporary SQLite monitor-db), once
with READMIT_AUTH=none and once with READMIT_AUTH=keys (wrk sends the key), both up at once and
driven in turn, off then on, --rounds times a level (a drift in the machine's load falls on
both; each figure is the median of the rounds, the ratio the median of the rounds' ratios), and
with keys off and bodies that carry `patient_nbr` and `encounter_id` instead of the four history
fields, so the API looks history up (the p50/p95 difference is printed); mlflow models serve
with as many uvicorn workers. wrk drives /predict (mlflow: /invocations, one record) closed loop
at 1, 20 and 200 connections, rotating over 200 test records; it runs on the same cores. Its
script tags each request with X-Request-ID and pairs the answer that echoes it, so the latencies
of accepted (2xx) requests are counted apart from the 503s of shedding (mlflow echoes no id: its
line is wrk's own histogram of every answer). During the 200-connection runs a thread asks
/health every 0.2 s. Each server first takes 3 s of load that is not counted (its first requests
pay lazy set-up). Then /predict-batch of 10,000 records over HTTP (mlflow: one /invocations of
10,000 records), the body encoded beforehand, the median of 3; before each readmit run the
prediction log has written every earlier row (back to back, a run also paid for writing the
previous run's rows), and the @production model's own time on the batch, in process. The
machine's load average is printed at the start and the end: on a shared machine the figures move
with it. First, in process: one patient's history read from Feast's online store against the
API's cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx

from readmit.pipeline.train import load_training_data
from readmit.registered import load_checked
from readmit.registry import PRODUCTION, alias_holder, production_uri
from readmit.schema import HISTORY_FIELDS
from readmit.serving.routes import model_frame
from readmit.serving.schemas import as_fields
from readmit.settings import Settings
from readmit.stack.foreground import Service, free_port, spawn, start_api, stop_process_group
from readmit.storage.monitor import predictions

LEVELS = (1, 20, 200)
RECORDS = 200
BATCH = 10_000
KEY = "bench-api-key"
KEYS_OFF = "readmit, keys off"
KEYS_ON = "readmit, keys on"
LOOKUP = "readmit, history lookup"
MLFLOW = "mlflow models serve"
MEDIANS = ("rps", "ok_rps", "p50", "p95", "p99")
COUNTS = ("requests", "shed", "other", "socket_errors")
WARM_UP_SECONDS = 3.0
JSON = {"Content-Type": "application/json"}
SCRIPT = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local threads = {}
function setup(thread)
  thread:set("thread_id", #threads)
  threads[#threads + 1] = thread
end

local sent_at, next_id, next_body = {}, 0, 0
accepted, shed, other = {}, 0, 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(key_header)s
request = function()
  next_id = next_id + 1
  next_body = next_body %% #bodies + 1
  local id = thread_id .. "-" .. next_id
  sent_at[id] = now()
  local headers = {["X-Request-ID"] = id}  -- wrk.format takes these instead of wrk.headers
  for name, value in pairs(wrk.headers) do headers[name] = value end
  return wrk.format(nil, nil, headers, bodies[next_body])
end
response = function(status, headers, body)
  local id = headers["x-request-id"]
  if status == 503 then shed = shed + 1
  elseif status < 200 or status > 299 then other = other + 1 end
  if id and sent_at[id] then
    if status >= 200 and status <= 299 then accepted[#accepted + 1] = now() - sent_at[id] end
    sent_at[id] = nil
  end
end
done = function(summary, latency, requests)
  local times, shed_total, other_total = {}, 0, 0
  for _, thread in ipairs(threads) do
    for _, t in ipairs(thread:get("accepted")) do times[#times + 1] = t end
    shed_total = shed_total + thread:get("shed")
    other_total = other_total + thread:get("other")
  end
  table.sort(times)
  local function pct(p)
    if #times == 0 then return latency:percentile(p) / 1000 end
    return times[math.max(1, math.ceil(#times * p / 100))] * 1000
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT {\\"requests\\": %%d, \\"seconds\\": %%f, \\"paired\\": %%d, " ..
    "\\"shed\\": %%d, \\"other\\": %%d, \\"p50\\": %%f, \\"p95\\": %%f, " ..
    "\\"p99\\": %%f, \\"socket_errors\\": %%d}\\n",
    summary.requests, summary.duration / 1e6, #times, shed_total, other_total,
    pct(50), pct(95), pct(99), e.connect + e.read + e.write + e.timeout))
end
"""


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def write_bodies(settings: Settings, folder: Path) -> tuple[list[dict], Path, Path, Path]:
    """BATCH test records (missing as null), and the wrk bodies of readmit (history sent; and
    `patient_nbr` + `encounter_id` without history, for the API to look up) and mlflow."""
    test_inputs = load_training_data(settings).test_inputs
    inputs = test_inputs.drop(columns=["encounter_id", "patient_nbr"])
    rows = json.loads(inputs.head(BATCH).to_json(orient="records"))
    plain = [{k: (None if v == "?" else v) for k, v in r.items()} for r in rows]
    ours = folder / "readmit.jsonl"
    ours.write_text("".join(json.dumps(r) + "\n" for r in plain[:RECORDS]))
    keyed = json.loads(test_inputs.head(RECORDS).to_json(orient="records"))
    bare = [
        {k: (None if v == "?" else v) for k, v in r.items() if k not in HISTORY_FIELDS}
        for r in keyed
    ]
    lookup = folder / "readmit-lookup.jsonl"
    lookup.write_text("".join(json.dumps(r) + "\n" for r in bare))
    theirs = folder / "mlflow.jsonl"
    theirs.write_text(
        "".join(json.dumps({"dataframe_records": [r]}) + "\n" for r in rows[:RECORDS])
    )
    return plain, ours, lookup, theirs


def history_read_costs(settings: Settings, patients: list[int], rounds: int = 5) -> str:
    """In process, per single-patient read: Feast's online store against the API's cache."""
    from readmit.feature_store import repo
    from readmit.feature_store.lookup import HistoryLookup, timed_lookups

    store = repo.open_store(settings)
    store.get_online_features(features=repo.FEATURES, entity_rows=[{repo.JOIN_KEY: patients[0]}])
    clock = time.perf_counter()
    for _ in range(rounds):
        for patient in patients:
            store.get_online_features(
                features=repo.FEATURES, entity_rows=[{repo.JOIN_KEY: patient}]
            ).to_dict()
    feast = (time.perf_counter() - clock) / (rounds * len(patients))
    lookup = HistoryLookup(settings)
    if not lookup.refresh():
        raise RuntimeError(f"the history cache cannot load: {lookup.last_error}")
    cached = timed_lookups(lookup, patients, rounds=rounds * 20)
    return (
        f"one patient's history, in process ({len(patients)} patients): "
        f"Feast get_online_features {feast * 1000:.2f} ms, the API's cache "
        f"{cached * 1e6:.1f} µs ({feast / cached:,.0f}x)"
    )


def script(folder: Path, name: str, bodies: Path, key: str | None) -> Path:
    path = folder / f"{name}.lua"
    header = f'wrk.headers["X-API-Key"] = "{key}"' if key else ""
    path.write_text(SCRIPT % {"bodies": bodies, "key_header": header})
    return path


def wrk(url: str, lua: Path, connections: int, seconds: float) -> dict:
    threads = min(connections, 2)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s"]
    done = subprocess.run([*command, "-s", str(lua), url], capture_output=True, text=True)
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    result = json.loads(found[0].removeprefix("RESULT "))
    result["rps"] = result["requests"] / result["seconds"]
    result["ok_rps"] = (result["requests"] - result["shed"] - result["other"]) / result["seconds"]
    return result


class HealthProbe(threading.Thread):
    """GET /health every 0.2 s while wrk runs: its answers and its slowest latency."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.answers: list[int] = []
        self.slowest = 0.0

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.wait(0.2):
                clock = time.perf_counter()
                try:
                    status = client.get(f"{self.url}/health").status_code
                except httpx.HTTPError:
                    status = 0
                self.slowest = max(self.slowest, time.perf_counter() - clock)
                self.answers.append(status)


def monitor_db(folder: Path, label: str) -> Path:
    """The SQLite monitor-db of the readmit server labelled `label`."""
    return folder / f"monitor-{label}.db"


def label_of(name: str) -> str:
    """The label of the readmit server `name`: its logs and monitor-db are named after it."""
    return "lookup" if name == LOOKUP else "keys" if name == KEYS_ON else "none"


def start_readmit(
    settings: Settings,
    workers: int,
    auth: str,
    folder: Path,
    label: str,
    extra: dict[str, str] | None = None,
) -> Service:
    """`readmit serve` with `extra` settings over the bench's own, once every worker serves."""
    port = free_port()
    env = {
        "READMIT_API_PORT": str(port),
        "READMIT_API_WORKERS": str(workers),
        "READMIT_LOG_LEVEL": "WARNING",
        "READMIT_MONITOR_DB_URL": f"sqlite:///{monitor_db(folder, label)}",
        "READMIT_AUTH": auth,
        "READMIT_API_KEY": KEY,
        **(extra or {}),
    }
    log = folder / f"api-{label}.log"
    api = start_api(settings.model_copy(update={"api_port": port}), log, env, timeout=180)
    deadline = time.monotonic() + 180
    while httpx.get(f"{api.url}/health").status_code != 200:
        if time.monotonic() > deadline:
            api.stop()
            raise RuntimeError(f"the API did not load the model; see {log}")
        time.sleep(0.5)
    return api  # /health is 200 once every worker has its model


def start_mlflow_serve(settings: Settings, workers: int, folder: Path) -> Service:
    venv_bin = str(Path(sys.executable).parent)
    port = free_port()
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
        str(workers),
    ]
    log = folder / "mlflow-serve.log"
    service = spawn("mlflow-serve", command, env, log, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{service.url}/ping", timeout=2).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_process_group(service.process)
    raise RuntimeError(f"mlflow models serve did not start; see {log}")


def line(label: str, r: dict) -> str:
    return (
        f"  {label:<22} {r['rps']:7.1f} req/s ({r['ok_rps']:7.1f} 2xx)  "
        f"p50 {r['p50']:7.2f}  p95 {r['p95']:7.2f}  p99 {r['p99']:8.2f} ms (2xx)  "
        f"503 {r['shed']}  other non-2xx {r['other']}  socket errors {r['socket_errors']}"
    )


def logged_rows(database: Path) -> int:
    """Rows in the prediction log of a SQLite monitor-db; 0 before the server has written one."""
    if not database.exists():
        return 0
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        try:
            (rows,) = db.execute(f"SELECT count(*) FROM {predictions.name}").fetchone()
        except sqlite3.OperationalError:  # the table is made with the first write
            return 0
    return int(rows)


def settled(database: Path, quiet: float = 2.0, limit: float = 120.0) -> None:
    """Wait until the prediction log has stopped growing for `quiet` seconds, so a batch run
    does not also pay for writing the previous run's 10,000 rows (the writer shares the GIL)."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        rows = logged_rows(database)
        if rows != last:
            last, since = rows, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.25)


def batch_seconds(
    url: str, body: bytes, headers: dict[str, str], before: Callable[[], None]
) -> str:
    """The median of 3 POSTs of one body encoded beforehand (as wrk sends its bodies: the
    client's JSON encoding is not the server's time), `before` each."""
    times = []
    for _ in range(3):
        before()
        clock = time.perf_counter()
        response = httpx.post(url, content=body, headers=headers | JSON, timeout=300)
        times.append(time.perf_counter() - clock)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
    runs = ", ".join(f"{t:.2f}" for t in times)
    return f"median {statistics.median(times):.2f} s (runs {runs})"


def model_seconds(settings: Settings, records: list[dict]) -> str:
    """The @production model alone on the batch, in this process: the part of a batch's time
    that the model sets (a tuned booster of many trees costs more than one of few)."""
    with warnings.catch_warnings():  # MLflow's SQLite store warns of its own SQLAlchemy use
        warnings.simplefilter("ignore", DeprecationWarning)
        version = alias_holder(settings, PRODUCTION)
        if version is None:
            return "no @production version"
        model = load_checked(settings, version)
    frame = model_frame([as_fields(r) for r in records])
    times = []
    for _ in range(3):
        clock = time.perf_counter()
        model.predict_frame(frame)
        times.append(time.perf_counter() - clock)
    booster = getattr(model.estimator, "booster", None)
    trees = getattr(booster, "num_trees", None)
    size = f", {trees()} trees" if callable(trees) else ""
    return (
        f"the model alone, in process: median {statistics.median(times):.2f} s "
        f"(v{version}, {model.estimator.kind}{size}, {model.transform.width} columns)"
    )


def combine(runs: list[dict]) -> dict:
    """Rounds of one server at one level: the median of each rate and percentile, the sum of
    each count."""
    combined = {k: statistics.median(r[k] for r in runs) for k in MEDIANS}
    combined.update({k: sum(r[k] for r in runs) for k in COUNTS})
    return combined


class Probed:
    """wrk at one level, with /health asked throughout when `probe` is set."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.slowest = 0.0

    def run(
        self, service: Service, url: str, lua: Path, connections: int, seconds: float, probe: bool
    ) -> dict:
        thread = HealthProbe(service.url) if probe else None
        if thread is not None:
            thread.start()
        try:
            return wrk(url, lua, connections, seconds)
        finally:
            if thread is not None:
                thread.stop.set()
                thread.join()
                self.answers += thread.answers
                self.slowest = max(self.slowest, thread.slowest)

    def summary(self) -> str:
        ok = sum(s == 200 for s in self.answers)
        return f"/health {ok}/{len(self.answers)} ok, slowest {self.slowest * 1000:.0f} ms"


def start(name: str, settings: Settings, workers: int, folder: Path) -> tuple[Service, str]:
    """The server `name` and the URL wrk drives."""
    if name == MLFLOW:
        service = start_mlflow_serve(settings, workers, folder)
        return service, f"{service.url}/invocations"
    auth = "keys" if name == KEYS_ON else "none"
    service = start_readmit(settings, workers, auth, folder, label_of(name))
    return service, f"{service.url}/predict"


def batch(name: str, service: Service, url: str, records: list[dict], folder: Path) -> str:
    if name == MLFLOW:
        body = json.dumps({"dataframe_records": records}).encode()
        return batch_seconds(url, body, {}, lambda: None)
    logged = monitor_db(folder, label_of(name))
    body = json.dumps({"records": records}).encode()
    url = f"{service.url}/predict-batch"
    return batch_seconds(url, body, {"X-API-Key": KEY}, lambda: settled(logged))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating keys off/on rounds")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1
    settings = Settings()
    folder = Path(tempfile.mkdtemp(prefix="readmit-bench-api-"))
    print(f"start: {load_average()}")
    records, ours, lookup, theirs = write_bodies(settings, folder)
    patients = [int(r["patient_nbr"]) for r in map(json.loads, lookup.read_text().splitlines())]
    print(history_read_costs(settings, patients))
    scripts = {
        KEYS_OFF: script(folder, "off", ours, None),
        KEYS_ON: script(folder, "on", ours, KEY),
        LOOKUP: script(folder, "lookup", lookup, None),
        MLFLOW: script(folder, "mlflow", theirs, None),
    }
    print(
        f"{args.workers} worker(s) each; wrk closed loop, {args.seconds:.0f} s a run; keys off "
        f"and on alternate, {args.rounds} rounds a level (medians); p50/p95/p99 of 2xx answers"
    )
    results: dict[tuple[str, int], dict] = {}
    ratios: dict[int, list[float]] = {}
    probes = {name: Probed() for name in scripts if name != MLFLOW}
    batches: dict[str, str] = {}
    groups = [(KEYS_OFF, KEYS_ON), (LOOKUP,), (MLFLOW,)]
    for group in groups:
        services: dict[str, tuple[Service, str]] = {}
        try:
            for name in group:
                services[name] = start(name, settings, args.workers, folder)
            for name, (_, url) in services.items():
                wrk(url, scripts[name], 20, WARM_UP_SECONDS)  # first requests pay lazy set-up
            rounds = args.rounds if len(group) > 1 else 1
            for connections in LEVELS:
                runs: dict[str, list[dict]] = {name: [] for name in group}
                for _ in range(rounds):
                    for name, (service, url) in services.items():
                        flood = connections == max(LEVELS) and name in probes
                        probed = probes.get(name, Probed())
                        runs[name].append(
                            probed.run(
                                service, url, scripts[name], connections, args.seconds, flood
                            )
                        )
                for name in group:
                    results[(name, connections)] = combine(runs[name])
                if len(group) > 1:
                    pairs = zip(runs[KEYS_ON], runs[KEYS_OFF], strict=True)
                    ratios[connections] = [
                        on["ok_rps"] / max(off["ok_rps"], 1e-9) for on, off in pairs
                    ]
            for name, (service, url) in services.items():
                if name != LOOKUP:
                    batches[name] = batch(name, service, url, records, folder)
        finally:
            for service, _ in services.values():
                service.stop()
    for connections in LEVELS:
        print(f"{connections} connection(s), /predict:")
        for name in scripts:
            print(line(name, results[(name, connections)]))
        for name, probed in probes.items() if connections == max(LEVELS) else ():
            print(f"  during it, {name}: {probed.summary()}")
        off = results[(KEYS_OFF, connections)]
        base = results[(MLFLOW, connections)]
        looked = results[(LOOKUP, connections)]
        each = ", ".join(f"{r:.2f}" for r in ratios[connections])
        print(
            f"  keys on vs off: {statistics.median(ratios[connections]):.2f}x 2xx/s (rounds "
            f"{each}); readmit (off) vs mlflow: {off['ok_rps'] / max(base['ok_rps'], 1e-9):.1f}x"
        )
        print(
            f"  history looked up vs sent (keys off): p50 {looked['p50'] - off['p50']:+.2f} ms, "
            f"p95 {looked['p95'] - off['p95']:+.2f} ms"
        )
    print(f"/predict-batch of {len(records):,} records over HTTP:")
    for name, summary in batches.items():
        print(f"  {name:<22} {summary}")
    print(f"  {model_seconds(settings, records)}")
    print(f"end: {load_average()}")
    print(f"logs: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
