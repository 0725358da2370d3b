"""The prediction API: `create_app(settings)` builds it; routes live in `routes.py`.

The app holds one ModelStore (the champion and the challenger, refreshed in the background),
one Metrics registry and, in shadow mode, the ShadowScorer (`challenger.py`). Middleware gives
every request an id, a JSON log line, latency and error metrics;
`body.BoundedBody` refuses bodies larger than READMIT_MAX_BODY_BYTES or slower than
READMIT_BODY_TIMEOUT_SECONDS; `overload.ShedOverload` answers 503 past READMIT_MAX_IN_FLIGHT
requests in progress or READMIT_MAX_QUEUE_MS of waiting to start. Connection limits live in
`server.py` (the HTTP protocol).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from readmit import __version__
from readmit.feature_store.lookup import HistoryLookup
from readmit.logs import configure_json_logging
from readmit.monitoring.prediction_log import PredictionLog
from readmit.monitoring.pseudonym import pseudonym_key
from readmit.serving.auth import KeyRing
from readmit.serving.body import BoundedBody, public_errors
from readmit.serving.challenger import ShadowScorer
from readmit.serving.metrics import Metrics
from readmit.serving.model_store import ModelStore
from readmit.serving.overload import InFlight, ShedOverload
from readmit.serving.request_ids import request_id
from readmit.serving.routes import router
from readmit.settings import Settings
from readmit.storage.monitor import monitor_engine

log = logging.getLogger(__name__)


def _endpoint(scope: Scope) -> str:
    """The route template (not the raw path), so metrics keep a small label set."""
    for route in scope["app"].router.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "other"))
    return "other"


def create_app(settings: Settings | None = None, store: ModelStore | None = None) -> FastAPI:
    """The API; `store` may be given (tests), otherwise one is made from the settings."""
    settings = settings or Settings()
    configure_json_logging(settings.log_level)
    metrics = store.metrics if store is not None else Metrics()
    store = store or ModelStore(settings, metrics)
    engine = monitor_engine(settings, settings.prediction_log_timeout_seconds)
    history = HistoryLookup(settings)
    prediction_log = None
    if settings.prediction_log_enabled:
        prediction_log = PredictionLog(settings, metrics, engine)
    shadow = None
    if settings.challenger_mode == "shadow":
        shadow = ShadowScorer(metrics, prediction_log)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync routes and dependencies run in this pool (FastAPI's default limiter).
        to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        if settings.challenger_mode == "canary":  # a missing key fails the start, not a request
            app.state.canary_key = pseudonym_key(settings)
        if prediction_log is not None:
            prediction_log.start()
        if shadow is not None:
            shadow.start()
        store.start()
        history.start()
        try:
            yield
        finally:
            history.stop()
            store.stop()
            if shadow is not None:
                shadow.stop()  # its last scores still reach the prediction log
            if prediction_log is not None:
                prediction_log.stop()
            engine.dispose()

    app = FastAPI(
        title="readmit",
        version=__version__,
        description="30-day readmission risk for diabetic inpatients, from the raw fields of one "
        "encounter. The model is the registered `@production` version, reloaded when it changes.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.prediction_log = prediction_log
    app.state.history = history
    app.state.shadow = shadow
    app.state.canary_key = b""
    app.state.monitor_engine = engine
    app.state.keys = KeyRing(settings)
    app.state.in_flight = InFlight(
        settings.max_in_flight, settings.api_threads, settings.latency_target_ms, metrics
    )
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, validation_error)

    app.add_middleware(
        BoundedBody, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout_seconds
    )
    app.add_middleware(
        ShedOverload,
        metrics=metrics,
        in_flight=app.state.in_flight,
        max_queue_ms=settings.max_queue_ms,
    )
    app.add_middleware(ObserveMiddleware, metrics=metrics, store=store)
    return app


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field. The offending input is not echoed: it may hold patient data,
    and NaN or infinity cannot be written as JSON anyway. Nor are the names of unknown fields,
    and the list is capped (`body.public_errors`)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": public_errors(errors)}, status_code=422)


class ObserveMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware: it costs a task and a queue per request).

    Gives each request an id (X-Request-ID in and out, also `request.state.request_id`),
    turns unhandled errors into a JSON 500 without a traceback, and records latency, status
    and a JSON log line with the model version.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, store: ModelStore) -> None:
        self.app = app
        self.metrics = metrics
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(dict(scope["headers"]))
        scope.setdefault("state", {})["request_id"] = rid
        endpoint = _endpoint(scope)
        clock = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", rid.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": rid, "endpoint": endpoint})
            if not started:
                error = JSONResponse({"detail": "internal error", "request_id": rid}, 500)
                await error(scope, receive, send_with_id)
        seconds = time.perf_counter() - clock
        self.metrics.observe_request(endpoint, scope["method"], status, seconds)
        if endpoint != "/metrics" and log.isEnabledFor(logging.INFO):
            current = self.store.current
            log.info(
                "request",
                extra={
                    "request_id": rid,
                    "endpoint": endpoint,
                    "method": scope["method"],
                    "status": status,
                    "latency_ms": round(seconds * 1000, 3),
                    "model_version": current.version if current else None,
                    "caller": scope["state"].get("caller"),
                },
            )
