"""How long the API takes to serve a newly promoted version, idle and under a busy loop, beside
the time loading that version takes in this process, all measured in one run.

Usage: READMIT_DATASET_URI=<zip> python bench/reload.py [--switches 3] [--users 20] [--poll 1]

A small real model is built first (the first 30,000 rows through ingest, clean and a LightGBM,
registered at @production in a temporary MLflow on SQLite). `readmit serve` (one worker, on
127.0.0.1, READMIT_MODEL_POLL_SECONDS=--poll) then sees --switches promotions while idle and
--switches while --users clients send /predict in a closed loop. A switch is timed from the
moment @production moves to the new version (set here with MLflow's client, the step
`registry.promote` ends its checks with) to the first answer naming that version (/health when
idle, /predict under load). The baseline is `load_version` of the same version here: the work a
switch does once the poll has seen the new alias, so a switch costs about that plus up to one
poll interval.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from prediction_log import build_model  # bench/ is the script's folder, first on sys.path

from readmit import registry
from readmit.serving.model_store import load_version
from readmit.settings import Settings
from readmit.stack.foreground import free_port, start_api


class BusyLoop:
    """Clients sending /predict back to back; every status and the version of every answer."""

    def __init__(self, url: str, bodies: list[dict], users: int) -> None:
        self.url, self.bodies = url, bodies
        self.statuses: Counter[int] = Counter()
        self.answers: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(users)]

    def _run(self, seed: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = seed
            while not self._stop.is_set():
                response = client.post(
                    f"{self.url}/predict", json=self.bodies[i % len(self.bodies)]
                )
                i += len(self._threads)
                with self._lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.answers.append(
                            (time.perf_counter(), response.json()["model"]["version"])
                        )

    def first_answer_of(self, version: str, since: float, timeout: float) -> float | None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self._lock:
                hit = next((t for t, v in self.answers if t >= since and v == version), None)
            if hit is not None:
                return hit
            time.sleep(0.01)
        return None

    def __enter__(self) -> BusyLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def health_sees(url: str, version: str, timeout: float) -> float | None:
    """When /health first names VERSION, polled every 10 ms."""
    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=10) as client:
        while time.perf_counter() < deadline:
            model = client.get(f"{url}/health").json().get("model") or {}
            if model.get("version") == version:
                return time.perf_counter()
            time.sleep(0.01)
    return None


def new_version(settings: Settings) -> str:
    """The @production model registered again: a new version with the same files."""
    client = registry.client_for(settings)
    production = registry.by_alias(client, settings.model_name, registry.PRODUCTION)
    assert production is not None and production.run_id is not None
    return registry.register(settings, str(production.source), production.run_id, {})


def switch(settings: Settings, wait_for: Callable[[str, float], float | None]) -> float | None:
    """Move @production to a new version; seconds until WAIT_FOR sees it answer."""
    version = new_version(settings)
    client = registry.client_for(settings)
    moved = time.perf_counter()
    client.set_registered_model_alias(settings.model_name, registry.PRODUCTION, version)
    seen = wait_for(version, moved)
    return None if seen is None else seen - moved


def figures(label: str, seconds: list[float | None]) -> str:
    done = [s for s in seconds if s is not None]
    each = ", ".join("never" if s is None else f"{s * 1000:.0f}" for s in seconds)
    middle = f"median {statistics.median(done) * 1000:6.0f} ms" if done else "no switch seen"
    return f"  {label:<38} {middle}   each (ms): {each}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--switches", type=int, default=3)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--poll", type=float, default=1.0, help="READMIT_MODEL_POLL_SECONDS")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="readmit-bench-reload-"))
    settings = Settings(
        data_dir=folder, mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db", api_port=free_port()
    )
    clock = time.perf_counter()
    bodies = build_model(settings)
    print(f"model built and promoted in {time.perf_counter() - clock:.0f} s", flush=True)

    loads = []
    for _ in range(args.switches):
        version = new_version(settings)
        start = time.perf_counter()
        load_version(settings, version)
        loads.append(time.perf_counter() - start)

    env = {
        "READMIT_DATA_DIR": str(folder),
        "READMIT_API_PORT": str(settings.api_port),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_MODEL_POLL_SECONDS": str(args.poll),
        "READMIT_LOG_LEVEL": "WARNING",
        "READMIT_PREDICTION_LOG_ENABLED": "false",
    }
    api = start_api(settings, folder / "api.log", env, timeout=300)
    try:
        idle = [
            switch(settings, lambda v, _t: health_sees(api.url, v, 120))
            for _ in range(args.switches)
        ]
        with BusyLoop(api.url, bodies, args.users) as busy:
            time.sleep(2)
            loaded = [
                switch(settings, lambda v, t: busy.first_answer_of(v, t, 120))
                for _ in range(args.switches)
            ]
            answered = len(busy.answers)
        failed = sum(n for status, n in busy.statuses.items() if status != 200)
    finally:
        api.stop()
    print(f"switch to a promoted version, one worker, poll every {args.poll:g} s:")
    print(figures("baseline: load_version here", loads))
    print(figures("API idle (/health)", idle))
    print(figures(f"API under {args.users} busy clients (/predict)", loaded))
    print(f"  busy loop: {answered:,} answered, {failed} not 200: {dict(busy.statuses)}")
    print(f"logs: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
