"""The service table: each service's port setting moves its URL, a slow health answer is
waited for, a refused connection is not."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from readmit.settings import Settings
from readmit.stack import health, services
from readmit.stack.foreground import free_port


@contextmanager
def _slow_server(delays: list[float]) -> Iterator[str]:
    """Answers 200 to each GET after the next of `delays` (seconds)."""
    pending = list(delays)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(pending.pop(0) if pending else 0.0)
            try:
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:  # the client gave up on this one
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_each_port_setting_moves_its_service() -> None:
    ports = {spec.port_field: free_port() for spec in services.HTTP_SERVICES}
    settings = Settings(**ports)
    for spec in services.HTTP_SERVICES:
        assert spec.url(settings) == f"http://127.0.0.1:{ports[spec.port_field]}"
        assert spec.port_setting == f"READMIT_{spec.port_field.upper()}"
    listening = [s.port_field for s in services.HTTP_SERVICES if s.listens]
    assert len(listening) == len(set(listening)), "two services listen on one port"
    assert services.NAMES[0] == services.POSTGRES and len(set(services.NAMES)) == 11


def test_a_slow_answer_is_waited_for_and_a_refused_one_is_final(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _slow_server([0.6, 0.0]) as url:
        reply = health.get(url, attempts=3, timeout=0.3)
        assert reply is not None and reply.status_code == 200
        assert health.http_ok(reply) == (True, "HTTP 200")
    with _slow_server([0.6, 0.6, 0.6]) as url:
        assert health.get(url, attempts=2, timeout=0.3) is None
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    calls: list[str] = []
    real_get = httpx.get

    def counted_get(url: str, **kwargs: Any) -> httpx.Response:
        calls.append(url)
        return real_get(url, **kwargs)

    monkeypatch.setattr(httpx, "get", counted_get)
    assert health.get(f"http://127.0.0.1:{port}", attempts=3, timeout=5.0) is None
    assert len(calls) == 1, "a refused connection was tried again"
    assert health.http_ok(None) == (False, "not answering")


def test_airflow_parts_read_the_api_servers_health_report() -> None:
    report = {"scheduler": {"status": "healthy"}, "triggerer": {"status": "unhealthy"}}
    reply = httpx.Response(200, json=report)
    by_name = services.BY_NAME
    assert by_name["airflow-scheduler"].read(reply) == (True, "healthy")
    assert by_name["airflow-triggerer"].read(reply) == (False, "unhealthy")
    assert by_name["airflow-dag-processor"].read(reply) == (False, "None")
    assert by_name["airflow-scheduler"].read(None) == (False, "api-server not answering")


def test_mlflow_accepts_the_service_name_and_still_localhost() -> None:
    """`--allowed-hosts` replaces MLflow's defaults: the command adds them back, so the server
    named `mlflow` in Compose still answers a browser at localhost:5000."""
    settings = Settings(mlflow_allowed_hosts=" mlflow, mlflow:5000 ,")
    command = services.mlflow_server_command(settings)
    allowed = command[command.index("--allowed-hosts") + 1].split(",")
    assert allowed[:2] == ["mlflow", "mlflow:5000"]
    assert {"localhost", "localhost:*", "127.0.0.1:*"} <= set(allowed)
    assert len(allowed) == len(set(allowed))
    assert "--allowed-hosts" not in services.mlflow_server_command(Settings())
