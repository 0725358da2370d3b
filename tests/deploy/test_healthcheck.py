"""deploy/docker/healthcheck.py, the images' HEALTHCHECK, against a local HTTP server."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.deploy.checks import DOCKER

SCRIPT = DOCKER / "healthcheck.py"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = int(self.path.strip("/") or 200)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "x"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def check(*args: str) -> int:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, timeout=30
    ).returncode


def test_healthy_on_200(server: str) -> None:
    assert check(f"{server}/200") == 0


def test_unhealthy_on_503_by_default(server: str) -> None:
    assert check(f"{server}/503") == 1


def test_api_check_accepts_503_while_no_model_is_loaded(server: str) -> None:
    assert check(f"{server}/503", "200,503") == 0
    assert check(f"{server}/500", "200,503") == 1


def test_unhealthy_when_nothing_answers(server: str) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    assert check(f"http://127.0.0.1:{closed}/health") == 1


def test_usage_error() -> None:
    assert check() == 2
