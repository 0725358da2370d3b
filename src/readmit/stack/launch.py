"""Starting one service of the stack as a recorded, detached process, and waiting until the
services answer healthy; a service that exits or never answers is named with its log's tail."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from readmit.settings import Settings
from readmit.stack import processes
from readmit.stack.credentials import Secrets
from readmit.stack.endpoints import Endpoints
from readmit.stack.errors import StackError
from readmit.stack.layout import MARKER, Paths
from readmit.stack.status import checks

Report = Callable[[str], None]


@dataclass
class Stack:
    settings: Settings
    paths: Paths
    secrets: Secrets
    endpoints: Endpoints
    private_postgres: bool
    launched: list[str] = field(default_factory=list)


def launch(stack: Stack, name: str, command: list[str], env: dict[str, str]) -> None:
    """Start the service unless its recorded process runs already."""
    rec = processes.record(stack.paths.run, name)
    if rec is not None and rec.running:
        return
    full_env = {**os.environ, **env, MARKER: str(stack.paths.root)}
    processes.launch(name, command, full_env, stack.paths.logs / f"{name}.log", stack.paths.run)
    stack.launched.append(name)


def wait(stack: Stack, names: list[str], timeout: float, report: Report) -> None:
    """Wait until each named service is healthy; StackError names the ones that are not."""
    health = checks(stack.settings, stack.endpoints.server_url)
    pending = list(names)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            ok, detail = health[name]()
            if ok:
                report(f"{name}: healthy ({detail})")
                pending.remove(name)
                continue
            rec = processes.record(stack.paths.run, name)
            if rec is not None and not rec.running:
                raise StackError(f"{name} exited during start-up: {tail(stack, name)}")
        if pending:
            time.sleep(1.0)
    if pending:
        detail = "; ".join(f"{n}: {tail(stack, n)}" for n in pending)
        raise StackError(f"not healthy after {timeout:.0f} s: {detail}")


def tail(stack: Stack, name: str, lines: int = 3) -> str:
    log = stack.paths.logs / f"{name}.log"
    if not log.exists():
        return "(no log)"
    last = log.read_text(errors="replace").splitlines()[-lines:]
    return " | ".join(line.strip()[:200] for line in last) + f" (log: {log})"


def stop_launched(stack: Stack) -> None:
    """Stop what this start-up launched, newest first; services already up keep running."""
    for name in reversed(stack.launched):
        rec = processes.record(stack.paths.run, name)
        if rec is not None:
            processes.stop(rec, stack.paths.run)
