"""Detached service processes with a record on disk, so another command can stop them.

Each process leads its own process group (its children stay in it). The record keeps the pid
and the process's start time: a pid that the system has since given to another program is
never signalled, so `stack down` stops what `stack up` started and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class ProcessRecord:
    name: str
    pid: int
    started: int
    command: list[str]
    log: str

    @property
    def running(self) -> bool:
        return _start_time(self.pid) == self.started


@dataclass(frozen=True)
class _Stat:
    """The fields of /proc/PID/stat this module uses (zombies are never returned)."""

    pid: int
    ppid: int
    pgid: int
    started: int


def _stat(pid: int) -> _Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return _Stat(pid, int(fields[1]), int(fields[2]), int(fields[19]))


def _all_stats() -> list[_Stat]:
    found = (_stat(int(e.name)) for e in Path("/proc").iterdir() if e.name.isdigit())
    return [s for s in found if s is not None]


def _start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat)."""
    stat = _stat(pid)
    return None if stat is None else stat.started


def alive(pid: int) -> bool:
    """`pid` runs and is not a zombie."""
    return _stat(pid) is not None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    return [s.pid for s in _all_stats() if s.pgid == pgid]


def descendants(roots: list[int]) -> dict[int, int]:
    """Every live descendant of `roots` (by parent links), with its start time.

    Some children leave their parent's process group (Airflow runs each task in a session of
    its own) and rename themselves, which also overwrites their environment; following
    parent links still finds them while their parent lives.
    """
    children: dict[int, list[_Stat]] = {}
    for stat in _all_stats():
        children.setdefault(stat.ppid, []).append(stat)
    found: dict[int, int] = {}
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child.pid not in found:
                found[child.pid] = child.started
                todo.append(child.pid)
    return found


def kill_if_same(pid: int, started: int) -> bool:
    """SIGKILL `pid` only if it is still the process that started at `started`."""
    if _start_time(pid) != started:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    return True


def launch(
    name: str,
    command: list[str],
    env: dict[str, str],
    log: Path,
    run_dir: Path,
    user: str | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start `command` in a new session, output appended to `log`, and record it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            user=user,
        )
    started = _start_time(process.pid) or 0
    record = ProcessRecord(name, process.pid, started, command, str(log))
    partial = run_dir / f".{name}.json.partial"
    partial.write_text(json.dumps(asdict(record), indent=1))
    partial.replace(run_dir / f"{name}.json")
    return record


def records(run_dir: Path) -> list[ProcessRecord]:
    """Every recorded process, in the order they were started."""
    found = [ProcessRecord(**json.loads(p.read_text())) for p in run_dir.glob("*.json")]
    return sorted(found, key=lambda r: (r.started, r.pid))


def record(run_dir: Path, name: str) -> ProcessRecord | None:
    path = run_dir / f"{name}.json"
    return ProcessRecord(**json.loads(path.read_text())) if path.exists() else None


def stop(rec: ProcessRecord, run_dir: Path, timeout: float = 20.0) -> bool:
    """SIGTERM the record's process group, SIGKILL what is left after `timeout`.

    Returns False when the group still has members at the end; the record is removed
    otherwise. A record whose process is gone (or whose pid now belongs to another program)
    only has its leftover group members stopped.
    """
    if _belongs_to_another_program(rec):
        (run_dir / f"{rec.name}.json").unlink(missing_ok=True)
        return True
    if rec.running or group_members(rec.pid):
        _signal_group(rec.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and group_members(rec.pid):
            _reap(rec.pid)
            time.sleep(0.2)
        if group_members(rec.pid):
            _signal_group(rec.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and group_members(rec.pid):
                _reap(rec.pid)
                time.sleep(0.1)
    _reap(rec.pid)
    if group_members(rec.pid):
        return False
    (run_dir / f"{rec.name}.json").unlink(missing_ok=True)
    return True


def _belongs_to_another_program(rec: ProcessRecord) -> bool:
    """The pid is alive but started at another time: the system reused it.

    While any member of our group lives, the kernel keeps the group's id (our pid) out of
    reuse, so a reused pid means the whole group is already gone.
    """
    now = _start_time(rec.pid)
    return now is not None and now != rec.started


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (started in this process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
