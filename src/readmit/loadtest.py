"""Headless Locust runs against a running API, with an SLO verdict.

The run writes Locust's HTML and CSV reports under the data dir, prints p50/p95/p99, req/s and
the error rate, and fails when the SLOs (p95 < 500 ms, errors < 1 %) are not met.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from readmit.errors import ReadmitError
from readmit.files import SOURCE_ROOT
from readmit.settings import Settings

LOCUSTFILE = SOURCE_ROOT / "loadtest" / "locustfile.py"
P95_SLO_MS = 500.0
ERROR_SLO = 0.01


class LoadTestError(ReadmitError):
    """Locust could not run, or produced no statistics."""


@dataclass
class LoadTestResult:
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    report_dir: Path

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 1.0

    @property
    def meets_slo(self) -> bool:
        return self.requests > 0 and self.p95_ms < P95_SLO_MS and self.error_rate < ERROR_SLO

    def summary(self) -> str:
        verdict = "SLOs met" if self.meets_slo else "SLOs VIOLATED"
        return (
            f"{self.requests:,} requests, {self.rps:.1f} req/s, p50 {self.p50_ms:.0f} ms, "
            f"p95 {self.p95_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, errors {self.error_rate:.2%} "
            f"({verdict}: p95 < {P95_SLO_MS:.0f} ms, errors < {ERROR_SLO:.0%}); "
            f"reports in {self.report_dir}"
        )


def write_payloads(settings: Settings, target: Path, limit: int = 2000) -> Path | None:
    """Test-split encounters as JSON lines, when a local clean build exists; else None."""
    try:
        from readmit.pipeline.train import load_training_data

        inputs = load_training_data(settings).test_inputs.head(limit)
    except ReadmitError:
        return None
    rows = json.loads(
        inputs.drop(columns=["encounter_id", "patient_nbr"]).to_json(orient="records")
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w") as out:
        for row in rows:
            out.write(json.dumps({k: (None if v == "?" else v) for k, v in row.items()}) + "\n")
    return target


def figure(text: str) -> float:
    """A number of Locust's CSV; "N/A" (no request finished in time) is NaN, not a crash."""
    return math.nan if text.strip() == "N/A" else float(text)


def read_stats(csv_path: Path) -> dict[str, str]:
    """The "Aggregated" row of Locust's *_stats.csv."""
    if not csv_path.exists():
        raise LoadTestError(f"loadtest: Locust wrote no statistics ({csv_path} missing)")
    with csv_path.open() as f:
        for row in csv.DictReader(f):
            if row.get("Name") == "Aggregated":
                return row
    raise LoadTestError(f"loadtest: no Aggregated row in {csv_path}")


def run(
    settings: Settings, url: str, users: int, seconds: int, locustfile: Path = LOCUSTFILE
) -> LoadTestResult:
    """Run Locust headless for `seconds` with `users` users against `url`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    report_dir = (settings.data_dir / "loadtest" / stamp).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    env = {"PYTHONUNBUFFERED": "1"}
    payloads = write_payloads(settings, report_dir / "payloads.jsonl")
    if payloads is not None:
        env["READMIT_LOADTEST_PAYLOADS"] = str(payloads)
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "--host",
        url,
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{seconds}s",
        "--stop-timeout",
        "5",
        "--csv",
        str(report_dir / "locust"),
        "--html",
        str(report_dir / "report.html"),
        "--only-summary",
    ]
    completed = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=seconds + 120
    )
    (report_dir / "locust.log").write_text(completed.stdout + completed.stderr)
    stats = read_stats(report_dir / "locust_stats.csv")
    return LoadTestResult(
        requests=int(stats["Request Count"]),
        failures=int(stats["Failure Count"]),
        rps=figure(stats["Requests/s"]),
        p50_ms=figure(stats["50%"]),
        p95_ms=figure(stats["95%"]),
        p99_ms=figure(stats["99%"]),
        report_dir=report_dir,
    )
