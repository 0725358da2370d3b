"""The prediction API: `create_app(settings)` builds it; routes live in `routes.py`.

The app holds one ModelStore (the served model, refreshed in the background) and one Metrics
registry. Middleware gives every request an id, a JSON log line, latency and error metrics,
and refuses bodies larger than READMIT_MAX_BODY_BYTES.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import Match

from readmit import __version__
from readmit.logs import configure_json_logging
from readmit.serving.metrics import Metrics
from readmit.serving.model_store import ModelStore
from readmit.serving.routes import router
from readmit.settings import Settings

log = logging.getLogger("readmit.serving")


def _endpoint(app: FastAPI, request: Request) -> str:
    """The route template (not the raw path), so metrics keep a small label set."""
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "other"))
    return "other"


def create_app(settings: Settings | None = None, store: ModelStore | None = None) -> FastAPI:
    """The API; `store` may be given (tests), otherwise one is made from the settings."""
    settings = settings or Settings()
    configure_json_logging(settings.log_level)
    metrics = store.metrics if store is not None else Metrics()
    store = store or ModelStore(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.start()
        try:
            yield
        finally:
            store.stop()

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
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = request_id
        endpoint = _endpoint(app, request)
        clock = time.perf_counter()
        too_large = _body_too_large(request, settings.max_body_bytes)
        if too_large is not None:
            response: Response = too_large
        else:
            try:
                response = await call_next(request)
            except Exception:
                log.exception(
                    "unhandled error", extra={"request_id": request_id, "endpoint": endpoint}
                )
                response = JSONResponse(
                    {"detail": "internal error", "request_id": request_id}, status_code=500
                )
        seconds = time.perf_counter() - clock
        response.headers["X-Request-ID"] = request_id
        metrics.observe_request(endpoint, request.method, response.status_code, seconds)
        current = store.current
        if endpoint != "/metrics":
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "endpoint": endpoint,
                    "method": request.method,
                    "status": response.status_code,
                    "latency_ms": round(seconds * 1000, 3),
                    "model_version": current.version if current else None,
                },
            )
        return response

    return app


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field. The offending input is not echoed: it may hold patient data,
    and NaN or infinity cannot be written as JSON anyway."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    return JSONResponse({"detail": detail}, status_code=422)


def _body_too_large(request: Request, limit: int) -> Response | None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return JSONResponse(
            {"detail": [{"loc": ["body"], "msg": f"body of {length} bytes exceeds {limit}",
                         "type": "body_too_large"}]},
            status_code=413,
        )  # fmt: skip
    return None


def app_factory() -> Any:
    """Entry point for uvicorn's --factory."""
    return create_app()
