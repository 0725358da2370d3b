"""`readmit stack status`: each service's recorded process and its health."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from readmit.settings import Settings
from readmit.stack import postgres, processes, services
from readmit.stack.health import Health
from readmit.stack.layout import paths_for


def checks(settings: Settings, server_url: str) -> dict[str, Callable[[], Health]]:
    """Service name -> health check returning (healthy, detail), in start order."""

    def pg() -> Health:
        ok = postgres.reachable(server_url, timeout=2)
        return ok, "accepting connections" if ok else "not answering"

    found: dict[str, Callable[[], Health]] = {services.POSTGRES: pg}
    for spec in services.HTTP_SERVICES:
        found[spec.name] = partial(spec.check, settings)
    return found


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str


def status(settings: Settings) -> list[ServiceStatus]:
    """Each service: its recorded process (if the stack started it) and its health."""
    paths = paths_for(settings)
    server_url = settings.stack_postgres_url
    if paths.state.exists():
        server_url = json.loads(paths.state.read_text()).get("server_url", server_url)
    result = []
    for name, check in checks(settings, server_url).items():
        rec = processes.record(paths.run, name) if paths.run.exists() else None
        running = rec is not None and rec.running
        healthy, detail = check()
        if name == services.POSTGRES and rec is None and healthy:
            detail += " (external server, not managed by the stack)"
        result.append(ServiceStatus(name, rec.pid if rec else None, running, healthy, detail))
    return result
