"""The 200-connection flood of bench/api.py under several READMIT_API_THREADS and
READMIT_MAX_IN_FLIGHT values, side by side with anyio's default pool (40 threads) in the same
run, and the 20-connection load each must still take without shedding.

Usage: python -m bench.overload [--seconds 10] [--workers N]   (with the settings of a data dir
holding a @production model, e.g. after `make run`). Needs `wrk` (`apt-get install wrk`).

Each configuration is a fresh `readmit serve` with keys off, warmed up for 3 s, then driven by
wrk closed loop at 20 and at 200 connections (accepted requests' latencies paired by request
id, 503s counted apart), while a thread asks /health every 0.2 s during the flood.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

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

CONFIGURATIONS = {
    "40 threads (baseline)": {"READMIT_API_THREADS": "40"},
    "8 threads": {"READMIT_API_THREADS": "8"},
    "4 threads": {"READMIT_API_THREADS": "4"},
    "2 threads": {"READMIT_API_THREADS": "2"},
    "4 threads, 16 in flight": {"READMIT_API_THREADS": "4", "READMIT_MAX_IN_FLIGHT": "16"},
}
LEVELS = (20, 200)


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
            for connections in LEVELS:
                probe = HealthProbe(api.url)
                if connections == max(LEVELS):
                    probe.start()
                result = wrk(url, lua, connections, args.seconds)
                print(line(f"{connections} connections", result))
                if probe.is_alive():
                    probe.stop.set()
                    probe.join()
                    print(f"    during it: {probe.summary()}")
        finally:
            api.stop()
    print(f"end: {load_average()}")
    print(f"logs: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
