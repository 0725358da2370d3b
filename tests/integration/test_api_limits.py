"""Hostile requests cost about what their bytes cost: bounded errors, bodies and headers, idle
connections closed, /health answering throughout. In process (TestClient) where the app alone
decides, on a real uvicorn server (`readmit serve`'s) where the HTTP layer does."""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from readmit.serving.body import MAX_ERRORS
from readmit.serving.schemas import EXAMPLE, Encounter
from readmit.serving.server import build_server
from readmit.stack.foreground import free_port, start_api
from tests.models import records

WAIT = 30.0  # generous guard so a broken server fails the test instead of hanging it


def _post(client: Any, path: str, body: bytes) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


def test_records_of_zeros_get_one_bounded_error(served):
    body = b'{"records": [' + b",".join([b"0"] * 200_000) + b"]}"
    response = _post(served.client, "/predict-batch", body)
    assert response.status_code == 422
    assert len(response.content) < 1_000
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "records"] and "at most 10000" in error["msg"]


def test_unknown_fields_are_counted_never_named(served):
    flood = {**EXAMPLE, **{f"secret_{i}": "x" for i in range(87_000)}}
    response = served.client.post("/predict", json=flood)
    assert response.status_code == 422
    assert len(response.content) < 1_000 and "secret_" not in response.text

    response = served.client.post("/predict", json={**EXAMPLE, "ssn": 1, "mrn": 2, "dob": 3})
    assert response.status_code == 422 and "ssn" not in response.text
    assert response.json()["detail"] == [
        {"loc": ["body"], "msg": "unknown field(s): 3", "type": "extra_forbidden"}
    ]

    batch = records(served.inputs.head(2))
    batch[1] = {**batch[1], "ssn": 1, "num_medications": -1}
    response = served.client.post("/predict-batch", json={"records": batch})
    assert response.status_code == 200
    error = response.json()["results"][1]["error"]
    assert "num_medications" in error and "unknown field(s): 1" in error and "ssn" not in error


def test_the_error_list_is_capped(served):
    every_field_wrong = {name: [1] for name in Encounter.model_fields}
    response = served.client.post("/predict", json={**every_field_wrong, "extra": 1})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == MAX_ERRORS + 1
    more = len(Encounter.model_fields) + 1 - MAX_ERRORS  # one error per field, one for "extra"
    assert more > 0
    assert detail[-1] == {"loc": ["body"], "msg": f"{more} more errors", "type": "too_many_errors"}


@pytest.mark.parametrize("given", ["<script>", "a" * 65, "id with spaces", "é"])
def test_an_unsafe_request_id_is_replaced(served, given):
    response = served.client.get("/health", headers={"X-Request-ID": given.encode("utf-8")})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_a_safe_request_id_is_kept(served):
    response = served.client.get("/health", headers={"X-Request-ID": "trace.A-1_b"})
    assert response.headers["x-request-id"] == "trace.A-1_b"


LiveServer = Callable[..., str]


@pytest.fixture
def live_server(served) -> Iterator[LiveServer]:
    """Starts `readmit serve`'s uvicorn server (in a thread, on a free loopback port) with
    the served model and the given setting overrides; returns its URL once it is ready."""
    servers: list[tuple[Any, threading.Thread]] = []

    def start(**overrides: Any) -> str:
        settings = served.settings.model_copy(
            update={"api_host": "127.0.0.1", "api_port": free_port(), **overrides}
        )
        server = build_server(settings)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        url = f"http://127.0.0.1:{settings.api_port}"
        _wait_ready(url)
        return url

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(WAIT)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _connect(url: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", _port(url)), timeout=WAIT)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or WAIT passes)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open: {received[:200]!r}") from None
    except ConnectionResetError:
        pass
    return received


def _send_until_answered(sock: socket.socket, pieces: Iterator[bytes]) -> None:
    """Sends until the server answers or closes: unread data would make it reset the
    connection, and the answer could be lost."""
    for piece in pieces:
        if select.select([sock], [], [], 0)[0]:
            return
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return


def _closed_count(url: str, reason: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    match = re.search(rf'readmit_http_connections_closed_total{{reason="{reason}"}} (\S+)', text)
    assert match, text
    return float(match.group(1))


@pytest.fixture
def api_process(served, tmp_path) -> Iterator[str]:
    """`readmit serve` as a process of its own (the test's client must not share its GIL),
    with the served model and a READMIT_MAX_BATCH large enough for a hostile batch."""
    settings = served.settings.model_copy(update={"api_port": free_port()})
    env = {
        "READMIT_DATA_DIR": str(settings.data_dir),
        "READMIT_MLFLOW_TRACKING_URI": str(settings.mlflow_tracking_uri),
        "READMIT_MODEL_NAME": settings.model_name,
        "READMIT_API_PORT": str(settings.api_port),
        "READMIT_MAX_BATCH": "200000",
        "READMIT_MODEL_POLL_SECONDS": "3600",
        "READMIT_LOG_LEVEL": "WARNING",
    }
    service = start_api(settings, tmp_path / "api.log", env)
    try:
        _wait_ready(service.url)
        yield service.url
    finally:
        service.stop()


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the API at {url} did not become ready")


def test_health_answers_while_a_huge_batch_is_validated(api_process):
    """150,000 bad records (allowed by a large READMIT_MAX_BATCH) are validated and answered
    off the event loop: /health keeps answering while they are."""
    url = api_process
    body = b'{"records": [' + b",".join([b"0"] * 150_000) + b"]}"
    hostile = _connect(url)
    hostile.sendall(
        b"POST /predict-batch HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    answered_meanwhile = 0
    with httpx.Client(base_url=url, timeout=WAIT) as client:
        while not select.select([hostile], [], [], 0)[0]:
            assert client.get("/health").status_code == 200
            if not select.select([hostile], [], [], 0)[0]:
                answered_meanwhile += 1
    response = _read_until_closed(hostile)
    assert response.startswith(b"HTTP/1.1 200")
    results = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert results["rejected"] == 150_000
    assert answered_meanwhile >= 3


def test_partial_headers_and_silent_connections_are_closed_after_the_timeout(live_server):
    url = live_server(header_timeout_seconds=1.0, max_connections=400)
    silent = [_connect(url) for _ in range(150)]
    partial = [_connect(url) for _ in range(150)]
    for sock in partial:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\nX-Slow: ")
    assert httpx.get(f"{url}/health", timeout=WAIT).status_code == 200
    for sock in silent:
        assert _read_until_closed(sock) == b""
    for sock in partial:
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408")
    assert _closed_count(url, "header_timeout") >= 300
    assert httpx.get(f"{url}/health", timeout=WAIT).status_code == 200


def test_connections_over_the_limit_are_refused_and_counted(live_server):
    url = live_server(header_timeout_seconds=1.0, max_connections=20)
    held = [_connect(url) for _ in range(30)]
    replies = [_read_until_closed(sock) for sock in held]
    refused = [r for r in replies if r.startswith(b"HTTP/1.1 503")]
    assert len(refused) == 10
    assert _closed_count(url, "over_limit") == 10
    assert _closed_count(url, "header_timeout") == 20


def test_a_header_of_a_megabyte_is_refused(live_server):
    url = live_server()
    sock = _connect(url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\nX-Big: ")
    _send_until_answered(sock, (b"a" * 8192 for _ in range(128)))  # up to 1 MB
    assert _read_until_closed(sock).startswith(b"HTTP/1.1 431")
    assert _closed_count(url, "header_too_large") == 1


def test_a_large_body_in_one_read_is_not_taken_for_headers(live_server, served):
    """A whole request whose body is larger than the header limit, sent in one write on a
    kept-alive connection, is a request, not an oversized header."""
    url = live_server(max_header_bytes=4096)
    body = json.dumps({"records": records(served.inputs.head(60))}).encode()
    assert len(body) > 4096
    request = (
        b"POST /predict-batch HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    with httpx.Client(base_url=url, timeout=WAIT) as client:
        for _ in range(3):  # the first request, then two more on the same connection
            answer = client.post(
                "/predict-batch", content=body, headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 200, answer.text[:200]
    sock = _connect(url)
    sock.sendall(request + request)
    answers = b""
    while answers.count(b"HTTP/1.1 ") < 2:
        chunk = sock.recv(65536)
        assert chunk, answers[:200]
        answers += chunk
    sock.close()
    assert answers.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 431" not in answers
    assert _closed_count(url, "header_too_large") == 0


def test_a_chunked_body_over_the_limit_is_refused(live_server):
    """No Content-Length: the bytes are counted as they arrive."""
    url = live_server(max_body_bytes=100_000)
    sock = _connect(url)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    first = json.dumps(EXAMPLE).encode()
    spaces = b" " * 8192
    pieces = [b"%x\r\n%s\r\n" % (len(first), first)]
    pieces += [b"%x\r\n%s\r\n" % (len(spaces), spaces)] * 256  # 2 MB, far over the limit
    _send_until_answered(sock, iter([*pieces, b"0\r\n\r\n"]))
    response = _read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 413")
    assert b"exceeds 100000 bytes" in response


def test_a_body_that_stalls_gets_a_408(live_server):
    url = live_server(body_timeout_seconds=1.0)
    sock = _connect(url)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    response = _read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 408") and b"body_timeout" in response


def _metric(url: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", httpx.get(f"{url}/metrics").text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_requests_past_the_in_flight_bound_are_shed_at_once_and_health_answers(live_server):
    url = live_server(max_in_flight=2)
    body = json.dumps(EXAMPLE).encode()
    head = (
        b"POST /predict HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    held = [_connect(url) for _ in range(2)]
    for sock in held:
        sock.sendall(head + body[:10])  # in progress: the body is still coming
    deadline = time.monotonic() + WAIT
    while _metric(url, "readmit_http_requests_in_flight") < 2:
        assert time.monotonic() < deadline, "the held requests never started"
        time.sleep(0.05)
    shed = httpx.post(f"{url}/predict", json=EXAMPLE, timeout=WAIT)
    assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
    assert "overloaded" in shed.json()["detail"]
    assert httpx.get(f"{url}/health", timeout=WAIT).status_code == 200
    assert _shed_count(url, "in_flight") == 1
    for sock in held:
        sock.sendall(body[10:])
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.close()
    assert httpx.post(f"{url}/predict", json=EXAMPLE, timeout=WAIT).status_code == 200
    assert _shed_count(url, "in_flight") == 1
    assert _shed_count(url, "queued") == 0


STALLED = (
    b"POST /predict HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{"
)


def _hold(url: str, partial: bytes) -> socket.socket:
    """A connection whose request is in progress (its body still coming) once this returns."""
    held = _connect(url)
    held.sendall(partial)
    deadline = time.monotonic() + WAIT
    while _metric(url, "readmit_http_requests_in_flight") < 1:
        assert time.monotonic() < deadline, "the held request never started"
        time.sleep(0.05)
    return held


def test_a_shed_request_keeps_its_connection_and_id_and_is_counted(live_server):
    """The 503 written at the headers carries the caller's request id, its body is read and
    dropped, and the same keep-alive connection is served once the bound clears; the refusal
    counts in the request metrics as the app's own answers do."""
    url = live_server(max_in_flight=1)
    body = json.dumps(EXAMPLE).encode()

    def post(request_id: bytes) -> bytes:
        return (
            b"POST /predict HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            b"X-Request-ID: %s\r\nContent-Length: %d\r\n\r\n%s" % (request_id, len(body), body)
        )

    held = _hold(url, post(b"held")[:-10])  # in progress: the body is still coming
    sock = _connect(url)
    sock.sendall(post(b"shed-1"))
    (shed,) = _answers(sock, 1)
    head = shed.lower()
    assert shed.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head
    assert b"x-request-id: shed-1" in head and b"connection: close" not in head
    assert json.loads(shed.partition(b"\r\n\r\n")[2]) == {
        "detail": "overloaded: 1 requests in progress; retry later"
    }
    held.sendall(body[-10:])
    (done,) = _answers(held, 1)
    assert done.startswith(b"HTTP/1.1 200") and b"x-request-id: held" in done.lower()
    deadline = time.monotonic() + WAIT
    while _metric(url, "readmit_http_requests_in_flight") > 0:
        assert time.monotonic() < deadline, "the held request never finished"
        time.sleep(0.05)
    sock.sendall(post(b"after"))
    (scored,) = _answers(sock, 1)
    assert scored.startswith(b"HTTP/1.1 200") and b"x-request-id: after" in scored.lower()
    held.close()
    sock.close()
    assert _shed_count(url, "in_flight") == 1
    metrics = httpx.get(f"{url}/metrics").text
    assert 'readmit_http_requests_total{endpoint="/predict",method="POST",status="503"} 1.0' in (
        metrics
    )


def test_after_a_shed_its_connection_is_not_read_for_the_pause_and_others_are(live_server):
    """A request resent at once on the connection that was refused waits out
    READMIT_SHED_PAUSE_MS in its socket; one on another connection is answered meanwhile."""
    url = live_server(max_in_flight=1, shed_pause_ms=1000)
    body = json.dumps(EXAMPLE).encode()
    post = (
        b"POST /predict HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    held = _hold(url, post[:-10])
    sock = _connect(url)
    sock.sendall(post)
    (shed,) = _answers(sock, 1)
    refused_at = time.monotonic()
    assert shed.startswith(b"HTTP/1.1 503")
    held.sendall(post[-10:])
    assert _answers(held, 1)[0].startswith(b"HTTP/1.1 200")
    sock.sendall(post)  # at once, as a client that ignores Retry-After does
    resent: list[tuple[bytes, float]] = []
    reader = threading.Thread(target=lambda: resent.append((*_answers(sock, 1), time.monotonic())))
    reader.start()
    other = httpx.post(f"{url}/predict", json=EXAMPLE, timeout=WAIT)
    other_at = time.monotonic()
    reader.join(WAIT)
    ((scored, scored_at),) = resent
    assert other.status_code == 200 and scored.startswith(b"HTTP/1.1 200")
    assert other_at < scored_at  # answered while the refused connection was paused
    assert scored_at - refused_at >= 0.95
    held.close()
    sock.close()


def test_a_shed_request_whose_body_stalls_is_closed_after_the_header_timeout(live_server):
    """Its 503 is sent at once; the rest of the body never comes, and the connection is not
    kept for ever."""
    url = live_server(max_in_flight=1, header_timeout_seconds=1.0)
    held = _hold(url, STALLED)
    sock = _connect(url)
    sock.sendall(STALLED)
    clock = time.monotonic()
    answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 503") and answer.count(b"HTTP/1.1") == 1
    assert time.monotonic() - clock >= 0.9  # kept open for the rest, then closed
    held.close()


def test_a_shed_request_that_expects_100_continue_closes_its_connection(live_server):
    """Its body will not come: what the client sends next cannot be read as a request."""
    url = live_server(max_in_flight=1)
    held = _hold(url, STALLED)
    sock = _connect(url)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n"
    )
    answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 503") and b"connection: close" in answer.lower()
    held.close()


def _shed_count(url: str, reason: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    match = re.search(rf'^readmit_http_shed_total{{reason="{reason}"}} (\S+)$', text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def _answers(sock: socket.socket, count: int) -> list[bytes]:
    """The next `count` responses on a keep-alive connection (each with a Content-Length)."""
    buffer, answers = b"", []
    while len(answers) < count:
        head, sep, rest = buffer.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: (\d+)", head) if sep else None
        if length and len(rest) >= int(length.group(1)):
            answers.append(head + sep + rest[: int(length.group(1))])
            buffer = rest[int(length.group(1)) :]
            continue
        chunk = sock.recv(65536)
        assert chunk, (answers, buffer[:200])
        buffer += chunk
    return answers


def test_a_request_that_waited_too_long_to_start_is_shed_and_health_is_not(live_server):
    """Pipelined behind a batch that takes far longer than READMIT_MAX_QUEUE_MS, a /predict
    has waited too long once its turn comes: 503 at once, counted; /health after it answers."""
    url = live_server(max_queue_ms=50)
    batch = json.dumps({"records": [EXAMPLE] * 5000}).encode()
    one = json.dumps(EXAMPLE).encode()

    def post(path: bytes, body: bytes) -> bytes:
        return (
            b"POST %s HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path, len(body), body)
        )

    sock = _connect(url)
    sock.sendall(post(b"/predict-batch", batch) + post(b"/predict", one))
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\n\r\n")
    scored, shed, health = _answers(sock, 3)
    sock.close()
    assert scored.startswith(b"HTTP/1.1 200")
    assert shed.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in shed.lower()
    assert b"waited over 50 ms to start" in shed
    assert health.startswith(b"HTTP/1.1 200")
    assert _shed_count(url, "queued") == 1
    assert _shed_count(url, "in_flight") == 0
    assert httpx.post(f"{url}/predict", json=EXAMPLE, timeout=WAIT).status_code == 200
