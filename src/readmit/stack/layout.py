"""The stack's folder, <data dir>/stack: where its process records, logs, secrets, state and
data live; private files in it, and the lock that lets one `stack` command run at a time."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from readmit.settings import Settings
from readmit.stack import s3
from readmit.stack.errors import StackError

# Every process the stack starts carries this variable, set to the stack's folder.
MARKER = "READMIT_STACK_HOME"


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def env_file(self) -> Path:
        return self.root / "stack.env"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def s3_store(self) -> Path:
        """The S3 server's objects, on disk (one folder per bucket)."""
        return self.root / "s3store"

    @property
    def s3_snapshot(self) -> Path:
        """Where earlier versions saved the in-memory bucket at `stack down`."""
        return self.root / "s3" / s3.BUCKET

    @property
    def prometheus(self) -> Path:
        return self.root / "prometheus"


def paths_for(settings: Settings) -> Paths:
    return Paths(settings.data_dir.resolve() / "stack")


def private_dirs(paths: Paths) -> None:
    """The stack folder holds credentials: only its owner may read it. A private cluster run
    as `postgres` by root needs to pass through it, hence execute for others then."""
    for folder in (paths.root, paths.run, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    paths.root.chmod(0o711 if os.geteuid() == 0 else 0o700)
    paths.run.chmod(0o700)


def write_private(path: Path, text: str) -> None:
    """Write a file that only its owner can read, from its first byte."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


@contextmanager
def exclusive(paths: Paths) -> Iterator[None]:
    """One `stack up` or `stack down` at a time per data dir."""
    with (paths.root / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(
                f"another `readmit stack` command is running on {paths.root}"
            ) from None
        yield
