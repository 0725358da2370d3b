"""Load shedding: at most READMIT_MAX_IN_FLIGHT requests in progress per worker.

Past the bound a request is answered at once with 503 and `Retry-After`, before its body is
read, and counted in /metrics (`readmit_http_shed_total`): the requests already accepted keep
a bounded latency instead of all of them slowing down together, and memory stays bounded.
/health and /metrics are never shed, so probes and scrapes see the truth during a flood.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from readmit.serving.metrics import Metrics

NEVER_SHED = frozenset({"/health", "/metrics"})
RETRY_AFTER_SECONDS = 1


class ShedOverload:
    """Pure ASGI; the count is a plain integer, as the event loop runs one callback at a time."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_in_flight: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.refusal = JSONResponse(
            {"detail": f"overloaded: {max_in_flight} requests in progress; retry later"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NEVER_SHED:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.metrics.shed.inc()
            await self.refusal(scope, receive, send)
            return
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
