"""What the stack tests share: the `readmit` command and a stack environment on free ports."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from readmit.stack import postgres, processes
from readmit.stack.foreground import free_port

READMIT = str(Path(sys.executable).parent / "readmit")
PORTS = ("API", "UI", "MLFLOW", "S3", "AIRFLOW", "EXPORTER", "PROMETHEUS")


def cli(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """Runs `readmit ARGS` in a process of its own with ENV."""
    return subprocess.run(
        [READMIT, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def free_ports() -> dict[str, str]:
    """One free port per stack service, as the READMIT_*_PORT settings."""
    return {f"READMIT_{name}_PORT": str(free_port()) for name in PORTS}


@contextmanager
def stack_environment(
    pg_admin_url: str, dataset_uri: str, data_dir: Path, kind: str
) -> Iterator[dict[str, str]]:
    """A stack on free ports and prefixed databases, so a user's stack is never touched; it is
    stopped and its databases dropped afterwards."""
    prefix = f"readmit_{kind}_{secrets.token_hex(3)}_"
    env = {
        **os.environ,
        "READMIT_DATA_DIR": str(data_dir),
        "READMIT_DATASET_URI": dataset_uri,
        "READMIT_STACK_POSTGRES_URL": pg_admin_url,
        "READMIT_STACK_DB_PREFIX": prefix,
        "READMIT_MODEL_POLL_SECONDS": "2",
        **free_ports(),
    }
    try:
        yield env
    finally:
        if processes.records(data_dir / "stack" / "run"):
            cli(env, "stack", "down", timeout=300)
        postgres.drop_databases(pg_admin_url, prefix)
