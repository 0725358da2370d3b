"""The stack's S3 server (s3server/: s3rver with writes fsynced before the answer) beside
moto's in-memory server, the one the stack used before: start time, and upload / download of
a model's artifacts and of one large artifact with boto3, as MLflow's S3 repository does.

    .venv/bin/python bench/s3_store.py            # moto only if `moto_server` is installed

Prints one line per server and measure; moto is the baseline (it keeps nothing on disk).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from boto3.s3.transfer import TransferConfig

from readmit.stack import s3
from readmit.stack.foreground import Service, free_port, spawn, start_s3_server, wait_healthy
from readmit.stack.s3 import s3_env
from readmit.stack.services import S3_HEALTH_PATH, program

ROUNDS = 3
CONFIG = TransferConfig()  # boto3's defaults: multipart above 8 MiB, as MLflow uploads


def model_folder(root: Path) -> Path:
    """Files shaped like one registered model: MLmodel, environment files, the fitted model."""
    folder = root / "model"
    folder.mkdir(parents=True)
    sizes = {
        "MLmodel": 600,
        "conda.yaml": 300,
        "python_env.yaml": 200,
        "requirements.txt": 400,
        "input_example.json": 4_000,
        "serving_input_example.json": 4_000,
        "model/model.joblib": 6 * 2**20,
        "model/info.json": 2_000,
    }
    for name, size in sizes.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(os.urandom(size))
    return folder


def start_moto(port: int, log: Path) -> Service:
    command = [program("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    service = spawn("moto", command, dict(os.environ), log, f"http://127.0.0.1:{port}")
    wait_healthy(service, "/moto-api/", timeout=60)
    client(service.url).create_bucket(Bucket=s3.BUCKET)
    return service


def client(url: str):
    env = s3_env(url)
    return s3.client(url, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


def upload(bucket, folder: Path, prefix: str) -> float:
    clock = time.perf_counter()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(folder).as_posix()
        bucket.upload_file(str(path), s3.BUCKET, key, Config=CONFIG)
    return time.perf_counter() - clock


def download(bucket, folder: Path, prefix: str, target: Path) -> float:
    clock = time.perf_counter()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        bucket.download_file(s3.BUCKET, prefix + rel, str(target / rel), Config=CONFIG)
    return time.perf_counter() - clock


def measure(name: str, start: Callable[[Path], Service], work: Path) -> None:
    """Best of ROUNDS fresh servers: start, model up/down, one 64 MiB artifact up/down."""
    times: dict[str, list[float]] = {k: [] for k in ("start", "up", "down", "big up", "big down")}
    model = model_folder(work / f"{name}-src")
    large = work / f"{name}-large"
    large.mkdir()
    (large / "large.bin").write_bytes(os.urandom(64 * 2**20))
    for round_ in range(ROUNDS):
        clock = time.perf_counter()
        service = start(work / f"{name}-{round_}")
        times["start"].append(time.perf_counter() - clock)
        try:
            bucket = client(service.url)
            back = work / f"{name}-back-{round_}"
            times["up"].append(upload(bucket, model, "run/model/"))
            times["down"].append(download(bucket, model, "run/model/", back / "model"))
            times["big up"].append(upload(bucket, large, "run/large/"))
            times["big down"].append(download(bucket, large, "run/large/", back / "large"))
            assert (back / "large" / "large.bin").read_bytes() == (large / "large.bin").read_bytes()
        finally:
            service.stop()
    files = [p for p in model.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files) / 2**20
    best = {k: f"{min(v) * 1000:6.0f} ms" for k, v in times.items()}
    print(
        f"{name:<9} start {best['start']} | model ({len(files)} files, {size:.1f} MiB) "
        f"up {best['up']} down {best['down']} | 64 MiB up {best['big up']} "
        f"down {best['big down']}  (best of {ROUNDS})"
    )


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="readmit-bench-s3-"))
    try:
        if shutil.which(program("moto_server")):
            measure("moto", lambda d: start_moto(free_port(), d.with_suffix(".log")), work)
        else:
            print("moto       (not installed: `pip install moto[server]` for the baseline)")
        measure("s3server", lambda d: start_s3_server(free_port(), d.with_suffix(".log"), d), work)
        version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
        print(
            f"s3server keeps objects in a folder and fsyncs each before answering; node "
            f"{version.strip()}; health path {S3_HEALTH_PATH}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
