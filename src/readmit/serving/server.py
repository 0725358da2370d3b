"""The HTTP server of `readmit serve`: uvicorn with the connection limits it lacks.

uvicorn's httptools protocol puts no deadline on a request's headers (a connection that sends
half a request line stays open for ever), no bound on their size (a 64 MB header line is
buffered and answered) and no cap on open connections (21,000 idle sockets ran the process out
of file descriptors). `GuardedHttpTools` adds all three, and stamps each request with the time
its headers were read (`overload.ShedOverload` refuses one that waited too long to start); what
it closes is counted in /metrics (`readmit_http_connections_closed_total`) and logged. It also
answers 503 itself, as soon as a request's headers are parsed, while the worker has as many
requests in progress as its in-flight bound (`overload.py` says why).
uvicorn's own `limit_concurrency` is not used: it answers 503 to every request, including
/health, once the idle connections reach it, and still keeps them open.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from typing import Any, ClassVar

import httptools
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from readmit.errors import ReadmitError
from readmit.logs import configure_json_logging
from readmit.serving.metrics import Metrics
from readmit.serving.overload import (
    HEADERS_READ_AT,
    NEVER_SHED,
    RETRY_AFTER_SECONDS,
    InFlight,
)
from readmit.serving.request_ids import request_id
from readmit.serving.workers import run_workers
from readmit.settings import Settings

log = logging.getLogger(__name__)
WARN_EVERY_SECONDS = 10.0
FILES_RESERVED = 64  # open files the process needs besides its connections


def _reply(status: str) -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode("ascii")


REPLIES = {
    "over_limit": _reply("503 Service Unavailable"),
    "header_timeout": _reply("408 Request Timeout"),
    "header_too_large": _reply("431 Request Header Fields Too Large"),
}


class GuardedHttpTools(HttpToolsProtocol):
    """httptools protocol with a header deadline, a header size limit and a connection cap.

    A request is "awaiting headers" from the connection's first byte (or the end of the
    previous request) until its headers are complete; that phase must end within
    `header_timeout` seconds and `max_header_bytes` bytes (plus at most one read chunk).
    Idle keep-alive connections are closed by uvicorn's `timeout_keep_alive`.
    """

    settings: ClassVar[Settings]
    metrics: ClassVar[Metrics]
    in_flight: ClassVar[InFlight]
    endpoints: ClassVar[frozenset[str]]  # the app's route paths, the metrics' endpoint labels
    warned: ClassVar[dict[str, float]] = {}
    closed: ClassVar[dict[str, int]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awaiting_headers = True
        self.headers_completed = False  # in the chunk being parsed
        self.header_bytes = 0
        self.header_timer: asyncio.TimerHandle | None = None
        self.shed = False  # the request being parsed was answered 503: its body is dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.metrics.open_connections.set(len(self.connections))
        if len(self.connections) > self.settings.max_connections:
            self.refuse("over_limit")
            return
        self.header_timer = self.loop.call_later(
            self.settings.header_timeout_seconds, self.refuse, "header_timeout"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_header_timer()
        super().connection_lost(exc)
        self.metrics.open_connections.set(len(self.connections))

    def data_received(self, data: bytes) -> None:
        """Counts the chunk as header bytes only when no request's headers ended in it: a
        whole small request in one chunk is body, not headers."""
        before = self.awaiting_headers
        self.headers_completed = False
        super().data_received(data)
        if self.headers_completed or self.transport.is_closing():
            return
        if before and self.awaiting_headers:
            self.header_bytes += len(data)
            if self.header_bytes > self.settings.max_header_bytes:
                self.refuse("header_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.shed = False
        self.awaiting_headers = True
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(
                self.settings.header_timeout_seconds, self.refuse, "header_timeout"
            )

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        self.headers_completed = True
        self.header_bytes = 0
        self.cancel_header_timer()
        now = time.monotonic()
        self.scope[HEADERS_READ_AT] = now  # type: ignore[literal-required]
        if self.in_flight.full(now):
            path = httptools.parse_url(self.url).path.decode("ascii", "replace")
            if path not in NEVER_SHED and self.idle() and not self.parser.should_upgrade():
                self.refuse_request(path)
                return
        super().on_headers_complete()

    def idle(self) -> bool:
        """No earlier request of this connection is still being answered (a 503 written now
        would overtake its answer)."""
        return self.cycle is None or self.cycle.response_complete

    def refuse_request(self, path: str) -> None:
        """503 with Retry-After and the request's id, written at once; the body that follows is
        read and dropped, and the connection stays open when the client keeps it alive (unless
        it waits for `100 Continue`, which would leave its body unsent) and sends the rest within
        READMIT_HEADER_TIMEOUT_SECONDS. Nothing more is read from it for READMIT_SHED_PAUSE_MS."""
        self.shed = True
        method = self.parser.get_method().decode("ascii", "replace")
        keep_alive = (
            self.parser.get_http_version() == "1.1"
            and self.parser.should_keep_alive()
            and not self.expect_100_continue
        )
        body = self.in_flight.refusal_body()
        rid = request_id(dict(self.headers))
        close = "" if keep_alive else "connection: close\r\n"
        head = (
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nretry-after: {RETRY_AFTER_SECONDS}\r\n"
            f"x-request-id: {rid}\r\n{close}\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        self.metrics.shed.labels(reason="in_flight").inc()
        self.in_flight.refused()
        endpoint = path if path in self.endpoints else "other"
        waited = time.monotonic() - self.scope[HEADERS_READ_AT]  # type: ignore[literal-required]
        self.metrics.observe_request(endpoint, method, 503, waited)
        self.warn("shedding requests", "in_flight", "shed_so_far")
        if not keep_alive:
            self.transport.close()
            return
        # The rest of its body, and the next request's headers, within the header deadline:
        # a client that goes silent mid-body is closed as a silent client is.
        self.cancel_header_timer()
        self.header_timer = self.loop.call_later(
            self.settings.header_timeout_seconds, self.refuse, "header_timeout"
        )
        if self.settings.shed_pause_ms:
            # A client that resends at once, ignoring Retry-After, waits in its own socket
            # for a moment instead of taking the CPU from the requests that were accepted.
            self.flow.pause_reading()
            self.loop.call_later(self.settings.shed_pause_ms / 1000, self.resume_after_shed)

    def resume_after_shed(self) -> None:
        if not self.transport.is_closing():
            self.flow.resume_reading()

    def on_body(self, body: bytes) -> None:
        if not self.shed:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.shed:
            super().on_message_complete()
        self.awaiting_headers = True  # what comes next is the next request's headers

    def cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def refuse(self, reason: str) -> None:
        """Answer with the status of `reason` and close; counted, and logged at most every
        WARN_EVERY_SECONDS per reason (a flood must not flood the logs too)."""
        self.header_timer = None
        if self.transport.is_closing():
            return
        self.metrics.connections_closed.labels(reason=reason).inc()
        self.warn("closing connections", reason, "closed_so_far")
        if reason != "header_timeout" or self.header_bytes:  # a silent client gets no answer
            self.transport.write(REPLIES[reason])
        self.transport.close()

    def warn(self, what: str, reason: str, count_name: str) -> None:
        """Count one more `reason`, logged at most every WARN_EVERY_SECONDS per reason."""
        self.closed[reason] = self.closed.get(reason, 0) + 1
        now = time.monotonic()
        if now - self.warned.get(reason, 0.0) >= WARN_EVERY_SECONDS:
            self.warned[reason] = now
            log.warning(
                "%s: %s",
                what,
                reason,
                extra={
                    "reason": reason,
                    count_name: self.closed[reason],
                    "open_connections": len(self.connections),
                },
            )


def guarded_protocol(
    settings: Settings, metrics: Metrics, in_flight: InFlight, endpoints: frozenset[str]
) -> type[GuardedHttpTools]:
    """A protocol class bound to one app's settings, metrics and in-flight count (uvicorn
    instantiates it)."""
    attributes = {"settings": settings, "metrics": metrics, "in_flight": in_flight}
    return type(
        "GuardedHttpTools",
        (GuardedHttpTools,),
        {**attributes, "endpoints": endpoints, "warned": {}, "closed": {}},
    )


def fitted_to_open_files(settings: Settings) -> Settings:
    """READMIT_MAX_CONNECTIONS lowered to what the open-file limit allows: past it, accept()
    fails and every client, /health included, gets nothing."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    allowed = soft - FILES_RESERVED
    if soft == resource.RLIM_INFINITY or settings.max_connections <= allowed:
        return settings
    allowed = max(allowed, 1)
    log.warning(
        "READMIT_MAX_CONNECTIONS lowered to fit the open-file limit",
        extra={
            "max_connections": settings.max_connections,
            "open_file_limit": soft,
            "lowered_to": allowed,
        },
    )
    return settings.model_copy(update={"max_connections": allowed})


def build_server(settings: Settings, app: FastAPI | None = None) -> uvicorn.Server:
    """The uvicorn server of `readmit serve` for `app` (default: `create_app(settings)`)."""
    from readmit.serving.app import create_app

    app = app or create_app(settings)
    settings = fitted_to_open_files(settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        http=guarded_protocol(
            settings,
            app.state.metrics,
            app.state.in_flight,
            frozenset(str(getattr(r, "path", "")) for r in app.router.routes),
        ),
        timeout_keep_alive=settings.keep_alive_seconds,
        access_log=False,
        log_level="warning",
    )
    return uvicorn.Server(config)


class OpenBindRefused(ReadmitError):
    """The API would serve patient predictions to a network without asking who calls."""


def is_loopback(host: str) -> bool:
    """Whether `host` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface


def check_bind(settings: Settings) -> None:
    """Refuse a non-loopback address without keys, unless READMIT_ALLOW_OPEN_BIND says so."""
    if settings.auth == "keys" or is_loopback(settings.api_host):
        return
    if not settings.allow_open_bind:
        raise OpenBindRefused(
            f"not serving on {settings.api_host} with READMIT_AUTH=none: anyone who reaches "
            "the port could score patient records; set READMIT_AUTH=keys, or "
            "READMIT_ALLOW_OPEN_BIND=true to serve without keys on purpose"
        )
    log.warning(
        "serving without API keys on a non-loopback address (READMIT_ALLOW_OPEN_BIND=true)",
        extra={"host": settings.api_host},
    )


def serve(settings: Settings) -> None:
    """Run `readmit serve`: one process, or READMIT_API_WORKERS of them (`workers.py`)."""
    configure_json_logging(settings.log_level)
    check_bind(settings)
    if settings.api_workers > 1:
        run_workers(settings, build_server)
        return
    build_server(settings).run()
