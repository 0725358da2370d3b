"""`readmit stack up` where no PostgreSQL answers: it runs its own cluster, and `down` stops it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from readmit.settings import Settings
from readmit.stack import postgres, processes
from readmit.stack.credentials import load_secrets
from readmit.stack.foreground import free_port
from readmit.stack.layout import paths_for
from tests.conftest import _unavailable

pytestmark = pytest.mark.slow
READMIT = str(Path(sys.executable).parent / "readmit")


def test_stack_up_starts_a_private_cluster_when_no_server_answers(dataset_uri: str) -> None:
    try:
        postgres._pg_bin("initdb")
    except postgres.PostgresError as exc:
        _unavailable(str(exc))
    # Reachable by the `postgres` user when the tests run as root.
    folder = Path(tempfile.mkdtemp(prefix="readmit-private-"))
    folder.chmod(0o755)
    ports = {
        f"READMIT_{n}_PORT": str(free_port())
        for n in ("API", "UI", "MLFLOW", "S3", "AIRFLOW", "EXPORTER", "PROMETHEUS")
    }
    private_port = free_port()
    env = {
        **os.environ,
        **ports,
        "READMIT_DATA_DIR": str(folder / "data"),
        "READMIT_DATASET_URI": dataset_uri,
        "READMIT_STACK_POSTGRES_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x",
        "READMIT_STACK_PRIVATE_PG_PORT": str(private_port),
    }
    settings = Settings(data_dir=folder / "data", stack_private_pg_port=private_port)
    paths = paths_for(settings)
    try:
        up = subprocess.run(
            [READMIT, "stack", "up"], env=env, capture_output=True, text=True, timeout=400
        )
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "private cluster" in up.stdout
        rec = processes.record(paths.run, "postgres")
        assert rec is not None and rec.running
        password = load_secrets(paths, settings).postgres_password
        url = postgres.private_cluster_url(private_port, password)
        assert postgres.reachable(url)
        raw = postgres.database_urls(url, "")["raw"]
        assert f"{private_port}/raw" in (paths.env_file.read_text())
        assert postgres.reachable(raw)
        status = subprocess.run(
            [READMIT, "stack", "status"], env=env, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stdout
        assert "(external server" not in status.stdout
    finally:
        down = subprocess.run(
            [READMIT, "stack", "down"], env=env, capture_output=True, text=True, timeout=180
        )
        shutil.rmtree(folder, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "postgres: stopped" in down.stdout
    assert not postgres.reachable(url, timeout=1)
