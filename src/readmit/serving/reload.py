"""POST /reload-model in every worker of one `readmit serve`, not only the one it reaches.

The workers share a folder made by the supervisor for the run (`use_folder`, before it forks
them). It holds a generation counter: the worker that takes /reload-model checks `@production`
itself, then raises the counter; every worker's poll thread reads the counter every
CHECK_SECONDS and checks `@production` when it has moved. Each worker writes the generation it
has acted on to `acks/<pid>`, so the request can wait, at most WAIT_SECONDS, until every worker
has, and say how many did. The supervisor removes the acknowledgement of a worker that died;
its replacement loads `@production` when it starts anyway.

Each worker also writes the `@production` version it serves to `serving/<pid>`, so /health
taken by any worker can say whether a promotion has reached all of them (`versions`).

With one process there is no folder and nothing to signal.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

CHECK_SECONDS = 0.2
WAIT_SECONDS = 60.0  # a load takes seconds; a worker stuck longer is reported, not awaited
COUNTER = "generation"
ACKS = "acks"
SERVING = "serving"
NONE = "none"  # a worker with no model yet, in `versions`

_folder: Path | None = None


def use_folder(folder: Path | None) -> None:
    """Share `folder` with the workers forked after this call (None: one process)."""
    global _folder
    _folder = folder
    if folder is not None:
        (folder / ACKS).mkdir(mode=0o700, parents=True, exist_ok=True)
        (folder / SERVING).mkdir(mode=0o700, exist_ok=True)


def shared(workers: int) -> ReloadSignal | None:
    """The signal of this run's workers, or None when the process serves alone."""
    return None if _folder is None else ReloadSignal(_folder, workers)


class ReloadSignal:
    """The generation counter and the acknowledgements of the workers of one run."""

    def __init__(self, folder: Path, workers: int) -> None:
        self.counter = folder / COUNTER
        self.acks = folder / ACKS
        self.serving = folder / SERVING
        self.workers = workers

    def generation(self) -> int:
        """The current generation (0 before the first /reload-model)."""
        try:
            return int(self.counter.read_text(encoding="ascii") or 0)
        except FileNotFoundError:
            return 0

    def request(self) -> int:
        """Raise the generation (under a lock: two requests at once get two generations)."""
        fd = os.open(self.counter, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = int(os.read(fd, 32) or 0)
            raised = current + 1
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, str(raised).encode("ascii"))
            return raised
        finally:
            os.close(fd)  # releases the lock

    def acknowledge(self, generation: int) -> None:
        """Record that this worker has checked `@production` for `generation`."""
        _write(self.acks / str(os.getpid()), str(generation))

    def publish(self, version: str | None) -> None:
        """Record the version this worker serves (None: no model yet)."""
        _write(self.serving / str(os.getpid()), version or "")

    def versions(self) -> dict[str, int]:
        """How many workers serve each version; workers that have not published one, or have
        no model yet, are counted under NONE."""
        counts: dict[str, int] = {}
        for path in self.serving.iterdir():
            if path.suffix == ".tmp":
                continue
            try:
                version = path.read_text(encoding="ascii")
            except FileNotFoundError:
                continue
            if version:
                counts[version] = counts.get(version, 0) + 1
        missing = self.workers - sum(counts.values())
        if missing > 0:
            counts[NONE] = missing
        return counts

    def confirmed(self, generation: int) -> int:
        """How many workers have acted on `generation` (or a later one)."""
        count = 0
        for path in self.acks.iterdir():
            if path.suffix == ".tmp":
                continue
            try:
                count += int(path.read_text(encoding="ascii")) >= generation
            except (FileNotFoundError, ValueError):
                continue
        return count

    def wait(self, generation: int, timeout: float | None = None) -> int:
        """Wait until every worker has acted on `generation`, or `timeout` (default
        WAIT_SECONDS); how many have."""
        deadline = time.monotonic() + (WAIT_SECONDS if timeout is None else timeout)
        while (count := self.confirmed(generation)) < self.workers:
            if time.monotonic() >= deadline:
                break
            time.sleep(CHECK_SECONDS / 2)
        return count

    def forget(self, pid: int) -> None:
        """Drop what a worker that is gone recorded."""
        (self.acks / str(pid)).unlink(missing_ok=True)
        (self.serving / str(pid)).unlink(missing_ok=True)


def _write(path: Path, text: str) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(text, encoding="ascii")
    partial.replace(path)  # readers never see a half-written value
