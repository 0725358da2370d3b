"""Load shedding: a request is answered 503 with `Retry-After` at once, before its body is
read, when its worker already has as many requests in progress as its in-flight bound, or when
it waited longer than READMIT_MAX_QUEUE_MS between its headers being read and its handling
starting.

The in-flight bound adapts (`InFlight`): every quarter of a second it moves by the ratio of
READMIT_LATENCY_TARGET_MS to the 90th percentile of the worker's time on each accepted
`/predict` (halved at most, doubled at most), between the worker's pool threads and
READMIT_MAX_IN_FLIGHT. By Little's law a request's time is about the requests in progress over
the rate they finish at; a flood slows that rate (the CPU goes to reading and refusing), so a
fixed bound lets every accepted request wait longer, and the adaptive one sheds more instead.
It only comes down in a window where the bound refused someone: late answers with the bound
not reached mean a slow machine or model, which refusing callers would not speed up. A quiet
window (few requests, none late) puts the bound back at its ceiling at once.
`/predict` is the signal because its work is one record: a batch of 10,000 or an explanation
takes longer by design, not because the worker is overloaded. READMIT_LATENCY_TARGET_MS=0
keeps the bound fixed at READMIT_MAX_IN_FLIGHT.

Under `readmit serve` the refusal is written by the HTTP protocol itself
(`server.GuardedHttpTools`) the moment the headers are parsed: no task, no middleware, a few
microseconds. `ShedOverload` counts the requests in progress and their times, and applies the
same bound under any other server.

The in-flight bound is the one a flood meets: scoring runs in pool threads, so requests pile up
in progress. The wait bound catches a line that forms before the app instead: requests
pipelined on one connection behind a slow one, or an event loop that fell behind. A request
that already waited that long is late for its caller, and refusing it costs a fraction of
answering it. Sheds are counted in /metrics (`readmit_http_shed_total{reason="in_flight|queued"}`,
the bound in `readmit_http_in_flight_bound`). /health and /metrics are never shed, so probes
and scrapes see the truth during a flood.
"""

from __future__ import annotations

import json
import math
import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from readmit.serving.metrics import Metrics

NEVER_SHED = frozenset({"/health", "/metrics"})
RETRY_AFTER_SECONDS = 1
# The scope key `server.GuardedHttpTools` stamps with time.monotonic() once a request's
# headers are read; absent under other servers (then only the in-flight bound applies).
HEADERS_READ_AT = "readmit.headers_read_at"
SIGNAL_PATH = "/predict"
WINDOW_SECONDS = 0.25
MIN_SAMPLES = 8  # fewer /predict answers in a window say nothing of a percentile
MAX_STEP = 2.0  # the bound at most doubles, or halves, in one window


class InFlight:
    """A worker's requests in progress and their adaptive bound, shared by `ShedOverload`
    (which counts and times them) and the HTTP protocol (which refuses past the bound). Plain
    numbers: the event loop runs one callback at a time."""

    def __init__(
        self, ceiling: int, floor: int = 1, target_ms: float = 0.0, metrics: Metrics | None = None
    ) -> None:
        self.ceiling = ceiling
        self.floor = max(1, min(floor, ceiling))
        self.target = target_ms / 1000
        self.metrics = metrics
        self.bound = ceiling
        self.count = 0
        self.window_start = time.monotonic()
        self.samples: list[float] = []
        self.refused_in_window = False
        self.bodies: dict[int, bytes] = {}
        self._publish()

    def full(self, now: float | None = None) -> bool:
        """Whether a new request must be refused; closes the window first when it is due."""
        if self.target:
            now = time.monotonic() if now is None else now
            if now - self.window_start >= WINDOW_SECONDS:
                self.adapt(now)
        return self.count >= self.bound

    def observe(self, seconds: float) -> None:
        """One accepted /predict's time in the worker, from its headers to its last byte."""
        if self.target:
            self.samples.append(seconds)

    def refused(self) -> None:
        """A request was refused for the bound in this window."""
        self.refused_in_window = True

    def adapt(self, now: float) -> None:
        """Move the bound by target / p90 of the window's times, and open a new window."""
        samples, self.samples, self.window_start = self.samples, [], now
        refused, self.refused_in_window = self.refused_in_window, False
        if len(samples) < MIN_SAMPLES:
            if all(s <= self.target for s in samples):
                self._set(self.ceiling)
            return
        p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
        step = min(MAX_STEP, max(1 / MAX_STEP, self.target / max(p90, 1e-6)))
        if step < 1 and not refused:
            return
        moved = self.bound * step
        self._set(math.ceil(moved) if step > 1 else math.floor(moved))

    def _set(self, bound: int) -> None:
        bound = max(self.floor, min(self.ceiling, bound))
        if bound != self.bound:
            self.bound = bound
            self._publish()

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.in_flight_bound.set(self.bound)

    def refusal_body(self) -> bytes:
        """The JSON body of a 503 past the bound, as `ShedOverload` and the protocol send it."""
        body = self.bodies.get(self.bound)
        if body is None:
            body = self.bodies[self.bound] = _body(f"{self.bound} requests in progress")
        return body


def _body(detail: str) -> bytes:
    answer = {"detail": f"overloaded: {detail}; retry later"}
    return json.dumps(answer, separators=(",", ":")).encode()


def _refusal(body: bytes) -> JSONResponse:
    return JSONResponse(
        json.loads(body), status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


class ShedOverload:
    """Pure ASGI: counts the requests in progress in `in_flight` and times each accepted
    /predict for it; refuses past its bound, or past the wait bound."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, in_flight: InFlight, max_queue_ms: float
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.in_flight = in_flight
        self.max_queue_seconds = max_queue_ms / 1000
        self.queued = _refusal(_body(f"waited over {max_queue_ms:g} ms to start"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NEVER_SHED:
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        reason = self.reason_to_shed(scope, now)
        if reason is not None:
            self.metrics.shed.labels(reason=reason).inc()
            if reason == "in_flight":
                self.in_flight.refused()
            refusal = self.queued if reason == "queued" else _refusal(self.in_flight.refusal_body())
            await refusal(scope, receive, send)
            return
        started = scope.get(HEADERS_READ_AT, now)
        in_flight = self.in_flight
        in_flight.count += 1
        self.metrics.in_flight.set(in_flight.count)
        try:
            await self.app(scope, receive, send)
        finally:
            in_flight.count -= 1
            self.metrics.in_flight.set(in_flight.count)
            if scope["path"] == SIGNAL_PATH:
                in_flight.observe(time.monotonic() - started)

    def reason_to_shed(self, scope: Scope, now: float) -> str | None:
        """Why this request is refused now, or None to handle it."""
        if self.in_flight.full(now):
            return "in_flight"
        read_at = scope.get(HEADERS_READ_AT)
        if read_at is not None and now - read_at > self.max_queue_seconds:
            return "queued"
        return None
