"""`readmit stack down`: stop every process the stack started, and nothing else.

The services go newest first, S3 and PostgreSQL last, once nothing writes to them. The S3
server has every object on disk already: stopping it loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

from readmit.settings import Settings
from readmit.stack import processes, services
from readmit.stack.errors import StackError
from readmit.stack.layout import MARKER, Paths, exclusive, paths_for

Report = Callable[[str], None]
LAST = (services.S3.name, services.POSTGRES)


def down(settings: Settings, report: Report) -> list[str]:
    """Stop every process the stack started; returns the names stopped."""
    paths = paths_for(settings)
    if not paths.run.exists():
        return []
    with exclusive(paths):
        return _down(paths, report)


def _down(paths: Paths, report: Report) -> list[str]:
    stopped: list[str] = []
    stuck: list[str] = []

    def stop(rec: processes.ProcessRecord) -> None:
        if processes.stop(rec, paths.run):
            stopped.append(rec.name)
            report(f"{rec.name}: stopped (process group {rec.pid})")
        else:
            stuck.append(rec.name)

    recorded = processes.records(paths.run)
    tree = processes.descendants([r.pid for r in recorded if r.running])
    for rec in reversed(recorded):
        if rec.name not in LAST:
            stop(rec)
    for name in LAST:
        final = processes.record(paths.run, name)
        if final is not None:
            stop(final)
    _stop_leftovers(paths, tree, report)
    if stuck:
        raise StackError(f"could not stop {', '.join(stuck)}")
    return stopped


def _stop_leftovers(paths: Paths, tree: dict[int, int], report: Report) -> None:
    """Processes the services started outside their groups (Airflow's tasks), and any other
    process that carries the stack's marker."""
    for pid, started in tree.items():
        if processes.kill_if_same(pid, started):
            report(
                f"stopped leftover process {pid} (started by a stack service, outside its group)"
            )
    for pid in stragglers(paths):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        report(f"stopped leftover process {pid} started by the stack")


def stragglers(paths: Paths) -> list[int]:
    """Processes carrying this stack's marker in their environment (started by it)."""
    marker = f"{MARKER}={paths.root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found
