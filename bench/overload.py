"""The 200-connection flood of bench/api.py under fixed and adaptive in-flight bounds
(READMIT_MAX_IN_FLIGHT, READMIT_LATENCY_TARGET_MS), with and without the pause on a refused
connection (READMIT_SHED_PAUSE_MS), side by side with anyio's default pool (40 threads) in the
same run, and the 20-connection load each must still take without shedding, before the flood
and right after it.

Usage: python -m bench.overload [--seconds 10] [--workers N]   (with the settings of a data dir
holding a @production model, e.g. after `make run`). Needs `wrk` (`apt-get install wrk`).

Each configuration is a fresh `readmit serve` with keys off, warmed up for 3 s, then driven by
wrk closed loop at 20, 200 and again 20 connections (accepted requests' latencies paired by
request id, 503s counted apart), while a thread asks /health every 0.2 s during the flood; the
workers' in-flight bound is read from /metrics as the flood ends."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

from bench.api import (
    WARM_UP_SECONDS,
    HealthProbe,
    line,
    load_average,
    script,
    start_readmit,
    write_bodies,
    wrk,
)
from readmit.settings import Settings

FIXED = "READMIT_LATENCY_TARGET_MS"  # 0 keeps the in-flight bound at READMIT_MAX_IN_FLIGHT
PAUSE = "READMIT_SHED_PAUSE_MS"  # 0 reads a refused connection's next request at once

CONFIGURATIONS = {
    "40 threads, fixed 64, no pause (baseline)": {
        "READMIT_API_THREADS": "40",
        FIXED: "0",
        PAUSE: "0",
    },
    "4 threads, fixed 64, no pause": {FIXED: "0", PAUSE: "0"},
    "4 threads, adaptive 35 ms, no pause": {PAUSE: "0"},
    "4 threads, fixed 64, pause 50 ms": {FIXED: "0"},
    "4 threads, adaptive 50 ms, pause 50 ms": {FIXED: "50"},
    "4 threads, adaptive 35 ms, pause 50 ms (the default)": {},
}
# The flood, between a 20-connection load before it and one right after it (recovery).
LEVELS = ((20, ""), (200, ""), (20, ", right after"))
FLOOD = 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1
    settings = Settings()
    folder = Path(tempfile.mkdtemp(prefix="readmit-bench-overload-"))
    print(f"start: {load_average()}")
    _, bodies, _, _ = write_bodies(settings, folder)
    lua = script(folder, "off", bodies, None)
    print(f"{args.workers} worker(s), keys off; wrk closed loop, {args.seconds:.0f} s per level")
    for n, (label, extra) in enumerate(CONFIGURATIONS.items()):
        api = start_readmit(settings, args.workers, "none", folder, f"overload-{n}", extra)
        try:
            url = f"{api.url}/predict"
            wrk(url, lua, 20, WARM_UP_SECONDS)
            print(f"{label}:")
            for connections, when in LEVELS:
                probe = HealthProbe(api.url)
                if connections == FLOOD:
                    probe.start()
                result = wrk(url, lua, connections, args.seconds)
                print(line(f"{connections} connections{when}", result))
                if probe.is_alive():
                    probe.stop.set()
                    probe.join()
                    print(f"    during it: {probe.summary()}; {in_flight_bound(api.url)}")
        finally:
            api.stop()
    print(f"end: {load_average()}")
    print(f"logs: {folder}")
    return 0


def in_flight_bound(url: str) -> str:
    """The workers' in-flight bounds, added up, as /metrics gives them now."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(r"^readmit_http_in_flight_bound (\S+)$", text, re.MULTILINE)
    return f"in-flight bound at its end {float(found.group(1)):.0f}" if found else "no bound"


if __name__ == "__main__":
    sys.exit(main())
