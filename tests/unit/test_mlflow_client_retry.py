"""readmit's MLflow client defaults against a real socket server that resets connections the
way a tracking server does when its keep-alive timeout closes a connection just as a request
is sent on it."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from readmit.settings import MLFLOW_CLIENT_DEFAULTS

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class ResettingServer:
    """Answers the first request on each connection and keeps it open; the next request on
    that connection gets a TCP reset instead of an answer. With `reset_all`, every request is
    reset. Counts the connections it accepted."""

    def __init__(self, reset_all: bool = False) -> None:
        self.reset_all = reset_all
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        answered = self.reset_all
        while _read_request(conn):
            if answered:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break
            conn.sendall(ANSWER)
            answered = True
        conn.close()

    def __enter__(self) -> ResettingServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.listener.close()


def _read_request(conn: socket.socket) -> bool:
    """Reads one body-less request's head; False when the client closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    return True


def _client(server: ResettingServer) -> MlflowClient:
    """Both URIs named: another test may have set a process-wide registry URI."""
    url = f"http://127.0.0.1:{server.port}"
    return MlflowClient(tracking_uri=url, registry_uri=url)


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in MLFLOW_CLIENT_DEFAULTS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)


def test_a_kept_alive_connection_reset_by_the_server_is_retried_on_a_new_one(
    defaults: None,
) -> None:
    with ResettingServer() as server:
        client = _client(server)
        client.search_registered_models()
        client.search_registered_models()
        assert server.connections == 2


def test_without_the_retry_the_reset_reaches_the_caller(
    defaults: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with ResettingServer() as server:
        client = _client(server)
        client.search_registered_models()
        with pytest.raises(MlflowException, match="reset"):
            client.search_registered_models()


def test_a_server_that_resets_every_request_is_tried_twice_then_reported(defaults: None) -> None:
    with ResettingServer(reset_all=True) as server:
        with pytest.raises(MlflowException, match="reset"):
            _client(server).search_registered_models()
        assert server.connections == 2
