"""The prediction API: `create_app(settings)` builds it; routes live in `routes.py`.

The app holds one ModelStore (the served model, refreshed in the background) and one Metrics
registry. Middleware gives every request an id, a JSON log line, latency and error metrics,
and refuses bodies larger than READMIT_MAX_BODY_BYTES.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from readmit import __version__
from readmit.logs import configure_json_logging
from readmit.monitoring.prediction_log import PredictionLog
from readmit.serving.metrics import Metrics
from readmit.serving.model_store import ModelStore
from readmit.serving.routes import router
from readmit.settings import Settings
from readmit.storage.monitor import monitor_engine

log = logging.getLogger("readmit.serving")


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
    prediction_log = None
    if settings.prediction_log_enabled:
        prediction_log = PredictionLog(settings, metrics, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if prediction_log is not None:
            prediction_log.start()
        store.start()
        try:
            yield
        finally:
            store.stop()
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
    app.state.monitor_engine = engine
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, validation_error)

    app.add_middleware(ObserveMiddleware, metrics=metrics, store=store,
                       max_body_bytes=settings.max_body_bytes)  # fmt: skip
    return app


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field. The offending input is not echoed: it may hold patient data,
    and NaN or infinity cannot be written as JSON anyway."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    return JSONResponse({"detail": detail}, status_code=422)


class ObserveMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware: it costs a task and a queue per request).

    Gives each request an id (X-Request-ID in and out, also `request.state.request_id`),
    refuses bodies over the limit with 413, turns unhandled errors into a JSON 500 without a
    traceback, and records latency, status and a JSON log line with the model version.
    """

    def __init__(
        self, app: ASGIApp, metrics: Metrics, store: ModelStore, max_body_bytes: int
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.store = store
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        endpoint = _endpoint(scope)
        clock = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode("latin-1"))]  # fmt: skip
            await send(message)

        length = headers.get(b"content-length", b"")
        try:
            if length.isdigit() and int(length) > self.max_body_bytes:
                await _too_large(int(length), self.max_body_bytes)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "endpoint": endpoint})
            if not started:
                error = JSONResponse({"detail": "internal error", "request_id": request_id}, 500)
                await error(scope, receive, send_with_id)
        seconds = time.perf_counter() - clock
        self.metrics.observe_request(endpoint, scope["method"], status, seconds)
        if endpoint != "/metrics" and log.isEnabledFor(logging.INFO):
            current = self.store.current
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "endpoint": endpoint,
                    "method": scope["method"],
                    "status": status,
                    "latency_ms": round(seconds * 1000, 3),
                    "model_version": current.version if current else None,
                },
            )


def _too_large(length: int, limit: int) -> JSONResponse:
    detail = [
        {
            "loc": ["body"],
            "msg": f"body of {length} bytes exceeds {limit}",
            "type": "body_too_large",
        }
    ]
    return JSONResponse({"detail": detail}, status_code=413)


def app_factory() -> Any:
    """Entry point for uvicorn's --factory."""
    return create_app()
