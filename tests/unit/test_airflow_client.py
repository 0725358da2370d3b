"""The Airflow REST client sends a read again when the api-server stalls past the timeout, and
never sends a new run twice."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from readmit.stack.airflow import AirflowClient


@contextmanager
def _stalling_airflow(stalls: int) -> Iterator[tuple[str, list[str]]]:
    """Answers the login at once; every other call stalls 0.6 s for the first `stalls` calls."""
    seen: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict) -> None:
            with lock:
                seen.append(f"{self.command} {self.path}")
                stall = len(seen) <= stalls
            if stall:
                time.sleep(0.6)
            payload = json.dumps(body).encode()
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up on this one
                pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            self.rfile.read(length)
            if self.path == "/auth/token":
                self.send_response(201)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"access_token": "t"}')
                return
            self._answer({"dag_run_id": "r1"})

        def do_GET(self) -> None:
            self._answer({"dag_id": "d"})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_read_that_times_out_is_sent_again() -> None:
    with _stalling_airflow(stalls=2) as (url, seen):
        client = AirflowClient(url, "admin", "secret", timeout=0.3)
        assert client.dag("d") == {"dag_id": "d"}
        client.close()
    assert seen == ["GET /api/v2/dags/d"] * 3


def test_a_new_run_is_never_sent_twice() -> None:
    with _stalling_airflow(stalls=1) as (url, seen):
        client = AirflowClient(url, "admin", "secret", timeout=0.3)
        with pytest.raises(httpx.ReadTimeout, match="timed out"):
            client.trigger("d")
        client.close()
    assert seen == ["POST /api/v2/dags/d/dagRuns"]


def test_failures_show_the_end_of_each_failed_tasks_log_with_its_exception() -> None:
    """A stand-in for the api-server (httpx.MockTransport) answering as Airflow 3.3.2 does:
    task instances with their state and try number, logs as structured entries."""
    instances = {
        "task_instances": [
            {"task_id": "ingest", "state": "failed", "try_number": 3},
            {"task_id": "publish", "state": "upstream_failed", "try_number": 0},
            {"task_id": "retry", "state": "failed", "try_number": 2},
            {"task_id": "audit", "state": "success", "try_number": 1},
        ]
    }
    logs = {
        "ingest/logs/3": [
            {"event": "::group::Log message source details"},
            {"event": "reading batch 2", "level": "info"},
            {
                "event": "Task failed with exception",
                "error_detail": [{"exc_type": "KeyError", "exc_value": "'patient_nbr'"}],
            },
        ],
        "retry/logs/2": ["Task exited with return code -9"],
    }
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        if request.url.path.endswith("/taskInstances"):
            return httpx.Response(200, json=instances)
        key = "/".join(request.url.path.split("/")[-3:])
        assert request.url.params["full_content"] == "true"
        return httpx.Response(200, json={"content": logs[key]})

    client = AirflowClient("http://airflow", "admin", "secret")
    client._http = httpx.Client(base_url="http://airflow", transport=httpx.MockTransport(answer))
    shown = client.failures("d", "r1", lines=2)
    assert shown.splitlines() == [
        "--- ingest (failed)",
        "reading batch 2",
        "Task failed with exception | KeyError: 'patient_nbr'",
        "--- publish (upstream_failed)",
        "--- retry (failed)",
        "Task exited with return code -9",
    ]
    assert not any("audit" in path or "publish/logs" in path for path in asked)
