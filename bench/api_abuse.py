"""Hostile requests against `readmit serve`: a baseline source tree against this one, side by side.

Usage: python bench/api_abuse.py [--before-ref REF] [--flood 400,2000]
  (READMIT_DATASET_URI must point at the data set: a small model is trained from its first
  rows and registered in a temporary MLflow; both servers serve that model)

For every hostile body (zeros in `records`, 87,000 unknown keys, a chunked body over the limit,
a huge header line) it prints the status, response size, time, the server's peak RSS, and how
/health fared meanwhile (answers, slowest). For the partial-header floods it prints how /health
fared during the flood and how many of the flood's connections the server closed. The baseline
(`--before-ref`, a git revision of this repository) runs from an extracted copy of its `src`.
Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import psutil

from readmit import registry
from readmit.dataset import Dataset, load_dataset
from readmit.model import Calibration, ReadmissionModel, TrainingInfo
from readmit.pipeline.clean import build_clean
from readmit.pipeline.ingest import ingest
from readmit.pipeline.train import fit_lightgbm, load_training_data
from readmit.serving.schemas import EXAMPLE
from readmit.settings import Settings
from readmit.stack.foreground import Service, free_port, start_api
from readmit.tracking import configure, log_model

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def small_model(folder: Path) -> Settings:
    """A small LightGBM model trained on the first rows of the data set, at @production."""
    settings = Settings(
        data_dir=folder,
        batch_size=8000,
        model_poll_seconds=3600,
        mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db",
    )
    full = load_dataset(settings, show_progress=False)
    ingest(
        settings, all_batches=True, dataset=Dataset(full.frame.head(8000), full.sha256, full.source)
    )
    build_clean(settings)
    data = load_training_data(settings)
    x, y = data.encoded("train"), data.labels("train")
    xv, yv = data.encoded("validation"), data.labels("validation")
    estimator, _, _ = fit_lightgbm(x, y, xv, yv, seed=0, max_rounds=30)
    model = ReadmissionModel(
        data.build.transform,
        estimator,
        Calibration(1.0, 0.0),
        0.12,
        info=TrainingInfo(run_id="bench", estimator="lightgbm"),
    )
    inputs = data.test_inputs.drop(columns=["encounter_id", "patient_nbr"])
    with mlflow.start_run(experiment_id=configure(settings)) as run:
        info = log_model(model, inputs.head(3))
    version = registry.register(settings, info.model_uri, run.info.run_id, {"bench": "yes"})
    registry.promote(settings, version)
    return settings


def extract_src(ref: str, target: Path) -> Path:
    """`src` of a git revision of this repository, extracted into `target`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def start_server(settings: Settings, src: Path, log: Path) -> Service:
    port = free_port()
    env = {
        "PYTHONPATH": str(src),
        "READMIT_DATA_DIR": str(settings.data_dir),
        "READMIT_MLFLOW_TRACKING_URI": str(settings.mlflow_tracking_uri),
        "READMIT_API_PORT": str(port),
        "READMIT_MODEL_POLL_SECONDS": "3600",
        "READMIT_LOG_LEVEL": "WARNING",
    }
    service = start_api(settings.model_copy(update={"api_port": port}), log, env, timeout=300)
    for _ in range(300):
        if httpx.get(f"{service.url}/health", timeout=5).status_code == 200:
            return service
        time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"no model loaded; see {log}")


class Watch:
    """While a hostile request runs: /health in a loop, and the server's peak RSS."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.process = url, psutil.Process(pid)
        self.answers, self.failures, self.slowest, self.peak_rss = 0, 0, 0.0, 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._health), threading.Thread(target=self._rss)]

    def _health(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self._stop.is_set():
                clock = time.perf_counter()
                try:
                    ok = client.get(f"{self.url}/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.slowest = max(self.slowest, time.perf_counter() - clock)
                self.answers += ok
                self.failures += not ok
                time.sleep(0.05)

    def _rss(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@dataclass
class Outcome:
    status: str
    size: int
    seconds: float


def readable(sock: socket.socket) -> bool:
    """Whether the server sent something or closed (poll: descriptors may exceed 1024)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def exchange(url: str, head: bytes, pieces: Iterable[bytes]) -> Outcome:
    """Sends a raw request, stopping early when the server answers, and reads the answer."""
    host, port = url.removeprefix("http://").split(":")
    clock = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=300) as sock:
        sock.sendall(head)
        for piece in pieces:
            if readable(sock):
                break
            try:
                sock.sendall(piece)
            except OSError:
                break
        first, size = b"", 0
        try:
            while chunk := sock.recv(MB):
                first = first or chunk
                size += len(chunk)
        except OSError:
            pass
    seconds = time.perf_counter() - clock
    status = first.split(b"\r\n", 1)[0].decode("latin-1")[9:] or "(connection closed)"
    return Outcome(status, size, seconds)


def post(path: str, body: bytes) -> tuple[bytes, Iterator[bytes]]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, (body[i : i + 65536] for i in range(0, len(body), 65536))


def zeros(size: int) -> bytes:
    count = (size - 14) // 2
    return b'{"records": [' + b",".join([b"0"] * count) + b"]}"


def chunked(size: int) -> tuple[bytes, Iterator[bytes]]:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    first = json.dumps(EXAMPLE).encode()
    spaces = b" " * 65536

    def pieces() -> Iterator[bytes]:
        yield b"%x\r\n%s\r\n" % (len(first), first)
        for _ in range(size // len(spaces)):
            yield b"%x\r\n%s\r\n" % (len(spaces), spaces)
        yield b"0\r\n\r\n"

    return head, pieces()


def huge_header(size: int) -> tuple[bytes, Iterator[bytes]]:
    head = b"GET /health HTTP/1.1\r\nHost: api\r\nConnection: close\r\nX-Big: "
    pieces = (b"a" * 65536 for _ in range(size // 65536))
    return head, iter([*pieces, b"\r\n\r\n"])


def extra_keys(count: int) -> bytes:
    return json.dumps({**EXAMPLE, **{f"extra_key_{i}": 1 for i in range(count)}}).encode()


SCENARIOS: list[tuple[str, Callable[[], tuple[bytes, Iterator[bytes]]]]] = [
    ("1 MB of zeros in records", lambda: post("/predict-batch", zeros(1 * MB))),
    ("4.2 MB of zeros in records", lambda: post("/predict-batch", zeros(int(4.2 * MB)))),
    ("87,000 unknown keys (/predict)", lambda: post("/predict", extra_keys(87_000))),
    ("45 MB chunked body (/predict)", lambda: chunked(45 * MB)),
    ("8 MB header line", lambda: huge_header(8 * MB)),
]


def hostile(url: str, pid: int, make: Callable[[], tuple[bytes, Iterator[bytes]]]) -> str:
    head, pieces = make()
    with Watch(url, pid) as watch:
        outcome = exchange(url, head, pieces)
    return (
        f"{outcome.status[:24]:<24} {outcome.size / 1024:9.1f} KB {outcome.seconds:7.2f} s  "
        f"RSS {watch.peak_rss / MB:6.0f} MB  /health {watch.answers} ok, "
        f"{watch.failures} failed, slowest {watch.slowest:.2f} s"
    )


def flood(url: str, count: int, wait: float) -> str:
    """`count` connections that send half a request line; then /health ten times; then how
    many of them the server closed within `wait` seconds."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: ")
            sockets.append(sock)
        statuses = []
        for _ in range(10):
            try:
                statuses.append(str(httpx.get(f"{url}/health", timeout=5).status_code))
            except httpx.HTTPError as error:
                statuses.append(type(error).__name__)
        by_fd = {sock.fileno(): sock for sock in sockets}
        poller = select.poll()
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        open_ = set(by_fd)
        deadline = time.monotonic() + wait
        while open_ and time.monotonic() < deadline:
            for fd, _ in poller.poll(500):
                with contextlib.suppress(OSError):
                    by_fd[fd].recv(4096)
                poller.unregister(fd)
                open_.discard(fd)
        closed = count - len(open_)
        answers = {s: statuses.count(s) for s in sorted(set(statuses))}
        return f"/health during flood {answers}; closed by the server within {wait:g} s: {closed}"
    finally:
        for sock in sockets:
            sock.close()


def measure(
    label: str, settings: Settings, src: Path, logs: Path, floods: list[int], bodies: bool
) -> None:
    print(f"\n{label} ({src})")
    for name, make in SCENARIOS if bodies else []:
        api = start_server(settings, src, logs / f"{label}.log")
        try:
            print(f"  {name:<32} {hostile(api.url, api.process.pid, make)}", flush=True)
        finally:
            api.stop()
    for count in floods:
        api = start_server(settings, src, logs / f"{label}.log")
        try:
            print(f"  flood of {count} partial headers  {flood(api.url, count, 20.0)}", flush=True)
        finally:
            api.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before-ref", help="git revision of the baseline (e.g. main)")
    parser.add_argument("--flood", default="400,2000", help="sizes of partial-header floods")
    parser.add_argument("--floods-only", action="store_true", help="skip the hostile bodies")
    args = parser.parse_args()
    floods = [int(n) for n in args.flood.split(",") if n]
    bodies = not args.floods_only
    work = Path(tempfile.mkdtemp(prefix="readmit-abuse-"))
    print(f"training a small model in {work} ...", flush=True)
    settings = small_model(work / "data")
    if args.before_ref:
        (work / "before").mkdir()
        before = extract_src(args.before_ref, work / "before")
        measure(f"before ({args.before_ref})", settings, before, work, floods, bodies)
    measure("after (this tree)", settings, ROOT / "src", work, floods, bodies)
    print(f"\nserver logs in {work}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("READMIT_LOG_LEVEL", "WARNING")
    raise SystemExit(main())
