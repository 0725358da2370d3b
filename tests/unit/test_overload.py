"""ShedOverload's two bounds, on ASGI scopes as `serving/server.py` stamps them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from readmit.serving.metrics import Metrics
from readmit.serving.overload import HEADERS_READ_AT, InFlight, ShedOverload


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
