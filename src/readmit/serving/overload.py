"""Load shedding: a request is answered 503 with `Retry-After` at once, before its body is
read, when its worker already has READMIT_MAX_IN_FLIGHT requests in progress, or when it waited
longer than READMIT_MAX_QUEUE_MS between its headers being read and its handling starting.

Under `readmit serve` the first refusal is written by the HTTP protocol itself
(`server.GuardedHttpTools`) the moment the headers are parsed, from the worker's `InFlight`
count: no task, no middleware, a few microseconds. A flood of clients that resend at once
after each 503 then leaves the CPU, and the GIL, to the requests that were accepted.
`ShedOverload` keeps the count, and applies the same bound under any other server.

The first bound is the one a flood meets: scoring runs in pool threads, so requests pile up in
progress. The second catches a line that forms before the app instead: requests pipelined on
one connection behind a slow one, or an event loop that fell behind. A request that already
waited that long is late for its caller, and refusing it costs a fraction of answering it.
Sheds are counted in /metrics (`readmit_http_shed_total{reason="in_flight|queued"}`). /health
and /metrics are never shed, so probes and scrapes see the truth during a flood.
"""

from __future__ import annotations

import json
import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from readmit.serving.metrics import Metrics

NEVER_SHED = frozenset({"/health", "/metrics"})
RETRY_AFTER_SECONDS = 1
# The scope key `server.GuardedHttpTools` stamps with time.monotonic() once a request's
# headers are read; absent under other servers (then only the in-flight bound applies).
HEADERS_READ_AT = "readmit.headers_read_at"


class InFlight:
    """A worker's requests in progress and their bound, shared by `ShedOverload` (which counts)
    and the HTTP protocol (which reads). Plain integers: the event loop runs one callback at a
    time."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.count = 0

    def full(self) -> bool:
        return self.count >= self.bound

    def refusal_body(self) -> bytes:
        """The JSON body of a 503 past the bound, as `ShedOverload` and the protocol send it."""
        return _body(f"{self.bound} requests in progress")


def _body(detail: str) -> bytes:
    answer = {"detail": f"overloaded: {detail}; retry later"}
    return json.dumps(answer, separators=(",", ":")).encode()


def _refusal(detail: str) -> JSONResponse:
    return JSONResponse(
        json.loads(_body(detail)),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class ShedOverload:
    """Pure ASGI: counts the requests in progress in `in_flight`, refuses past its bound."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, in_flight: InFlight, max_queue_ms: float
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.in_flight = in_flight
        self.max_queue_seconds = max_queue_ms / 1000
        self.refusals = {
            "in_flight": _refusal(f"{in_flight.bound} requests in progress"),
            "queued": _refusal(f"waited over {max_queue_ms:g} ms to start"),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NEVER_SHED:
            await self.app(scope, receive, send)
            return
        reason = self.reason_to_shed(scope)
        if reason is not None:
            self.metrics.shed.labels(reason=reason).inc()
            await self.refusals[reason](scope, receive, send)
            return
        self.in_flight.count += 1
        self.metrics.in_flight.set(self.in_flight.count)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.count -= 1
            self.metrics.in_flight.set(self.in_flight.count)

    def reason_to_shed(self, scope: Scope) -> str | None:
        """Why this request is refused now, or None to handle it."""
        if self.in_flight.full():
            return "in_flight"
        read_at = scope.get(HEADERS_READ_AT)
        if read_at is not None and time.monotonic() - read_at > self.max_queue_seconds:
            return "queued"
        return None
