"""ShedOverload's two bounds, on ASGI scopes as `serving/server.py` stamps them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from readmit.serving.metrics import Metrics
from readmit.serving.overload import HEADERS_READ_AT, WINDOW_SECONDS, InFlight, ShedOverload


def _call(shed: ShedOverload, path: str, read_at: float | None) -> tuple[int, dict[str, Any]]:
    scope: dict[str, Any] = {"type": "http", "path": path, "method": "POST", "headers": []}
    if read_at is not None:
        scope[HEADERS_READ_AT] = read_at
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(shed(scope, receive, send))
    start, body = sent[0], sent[1]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], {"headers": headers, "body": json.loads(body["body"] or b"null")}


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _shed_count(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("readmit_http_shed_total", {"reason": reason})
    assert value is not None
    return value


def test_a_request_that_waited_past_the_bound_is_refused_and_counted() -> None:
    metrics = Metrics()
    shed = ShedOverload(_ok, metrics, InFlight(8), max_queue_ms=50)
    status, answer = _call(shed, "/predict", time.monotonic() - 0.2)
    assert status == 503 and answer["headers"]["retry-after"] == "1"
    assert "waited over 50 ms" in answer["body"]["detail"]
    assert _shed_count(metrics, "queued") == 1 and _shed_count(metrics, "in_flight") == 0


def test_a_request_within_the_bound_or_unstamped_is_handled() -> None:
    metrics = Metrics()
    shed = ShedOverload(_ok, metrics, InFlight(8), max_queue_ms=50)
    assert _call(shed, "/predict", time.monotonic())[0] == 200
    assert _call(shed, "/predict", None)[0] == 200  # another server: no stamp, no wait bound
    assert _shed_count(metrics, "queued") == 0


def test_health_and_metrics_are_never_shed_however_long_they_waited() -> None:
    metrics = Metrics()
    shed = ShedOverload(_ok, metrics, InFlight(8), max_queue_ms=50)
    for path in ("/health", "/metrics"):
        assert _call(shed, path, time.monotonic() - 10)[0] == 200
    assert _shed_count(metrics, "queued") == 0


def test_past_the_in_flight_bound_a_request_is_shed_with_the_body_the_protocol_sends() -> None:
    """Under another server than `readmit serve` the middleware applies the bound itself."""
    metrics = Metrics()
    in_flight = InFlight(2)
    shed = ShedOverload(_ok, metrics, in_flight, max_queue_ms=50)
    assert _call(shed, "/predict", time.monotonic())[0] == 200
    assert in_flight.count == 0  # counted while in progress only
    in_flight.count = 2
    status, answer = _call(shed, "/predict", time.monotonic())
    assert status == 503 and answer["headers"]["retry-after"] == "1"
    assert json.dumps(answer["body"], separators=(",", ":")).encode() == in_flight.refusal_body()
    assert _call(shed, "/health", time.monotonic())[0] == 200
    assert _shed_count(metrics, "in_flight") == 1


def _window(
    in_flight: InFlight, seconds: float, count: int, start: float, refused: bool = True
) -> float:
    """`count` /predict times of `seconds` in one window (and a refusal past the bound, or
    none); the window closes at the next check."""
    for _ in range(count):
        in_flight.observe(seconds)
    if refused:
        in_flight.refused()
    now = start + WINDOW_SECONDS
    in_flight.full(now)
    return now


def test_the_bound_shrinks_while_accepted_requests_are_late_and_never_below_the_floor() -> None:
    metrics = Metrics()
    in_flight = InFlight(64, floor=4, target_ms=50, metrics=metrics)
    now = in_flight.window_start
    now = _window(in_flight, 0.200, 20, now)  # four times the target: halved, no further
    assert in_flight.bound == 32
    now = _window(in_flight, 0.080, 20, now)  # 50/80 of it
    assert in_flight.bound == 20
    assert metrics.registry.get_sample_value("readmit_http_in_flight_bound") == 20
    for _ in range(10):
        now = _window(in_flight, 1.0, 20, now)
    assert in_flight.bound == 4
    assert json.loads(in_flight.refusal_body())["detail"].startswith("overloaded: 4 requests")


def test_the_bound_grows_back_when_requests_are_fast_and_at_once_when_quiet() -> None:
    in_flight = InFlight(64, floor=4, target_ms=50)
    now = in_flight.window_start
    for _ in range(5):
        now = _window(in_flight, 1.0, 20, now)
    assert in_flight.bound == 4
    now = _window(in_flight, 0.020, 20, now)  # under the target: at most doubled
    assert in_flight.bound == 8
    now = _window(in_flight, 0.049, 20, now)  # just under: one more, rounded up
    assert in_flight.bound == 9
    now = _window(in_flight, 1.0, 3, now)  # too few to judge, but late: kept
    assert in_flight.bound == 9
    _window(in_flight, 0.010, 2, now)  # few and fast: the flood is over
    assert in_flight.bound == 64


def test_late_answers_without_a_refusal_leave_the_bound_where_it_is() -> None:
    """A slow machine or model, not a line of requests at the bound: refusing would not help."""
    in_flight = InFlight(64, floor=4, target_ms=50)
    now = _window(in_flight, 0.5, 20, in_flight.window_start, refused=False)
    assert in_flight.bound == 64
    now = _window(in_flight, 0.5, 20, now)
    assert in_flight.bound == 32
    _window(in_flight, 0.5, 20, now, refused=False)
    assert in_flight.bound == 32


def test_no_window_closes_before_its_time_and_a_zero_target_keeps_the_bound() -> None:
    in_flight = InFlight(64, floor=4, target_ms=50)
    for _ in range(50):
        in_flight.observe(1.0)
    assert not in_flight.full(in_flight.window_start + WINDOW_SECONDS / 2)
    assert in_flight.bound == 64
    fixed = InFlight(64, floor=4, target_ms=0)
    for _ in range(50):
        fixed.observe(1.0)
    fixed.full(fixed.window_start + 10 * WINDOW_SECONDS)
    assert fixed.bound == 64 and fixed.samples == []


def test_the_middleware_times_each_accepted_predict_and_only_predict() -> None:
    in_flight = InFlight(64, floor=4, target_ms=50)
    shed = ShedOverload(_ok, Metrics(), in_flight, max_queue_ms=1000)
    _call(shed, "/predict", time.monotonic() - 0.3)
    _call(shed, "/predict-batch", time.monotonic() - 0.3)
    assert len(in_flight.samples) == 1 and 0.3 <= in_flight.samples[0] < 1.0
