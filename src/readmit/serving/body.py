"""Request bodies under bounds: bytes counted as they arrive, JSON parsed and sized off the
event loop, error lists capped.

A hostile body must cost the server about what its bytes cost, never much more: a megabyte of
`[0, 0, ...]` once produced two million 422 entries, built on the event loop while /health
waited. Here the body is read with a byte limit and a deadline (`BoundedBody`), parsed in a
worker thread and refused early when an array, object, string or nesting is larger than any
valid request can be (`CheckedRoute`), and error lists never name unknown fields nor grow past
`MAX_ERRORS` entries (`public_errors`).
"""

from __future__ import annotations

import asyncio
import email.message
import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from readmit.serving.schemas import Encounter, Outcome

MAX_ERRORS = 50
MAX_OBJECT_KEYS = 200
MAX_STRING = 256
MAX_DEPTH = 8
KNOWN_KEYS = frozenset({*Encounter.model_fields, *Outcome.model_fields, "records", "outcomes"})
UNKNOWN = "unknown field"


class BodyTooLarge(Exception):
    """More body bytes arrived than READMIT_MAX_BODY_BYTES."""


class ClientGone(Exception):
    """The client disconnected before its body was complete."""


def _problem(status: int, msg: str, kind: str) -> JSONResponse:
    detail = [{"loc": ["body"], "msg": msg, "type": kind}]
    # The rest of the body is not read: the connection cannot be reused.
    return JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})


def too_large(limit: int, length: int | None = None) -> JSONResponse:
    size = f"body of {length} bytes" if length is not None else "body"
    return _problem(413, f"{size} exceeds {limit} bytes", "body_too_large")


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, counted chunk by chunk (Content-Length may be absent or lie)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BoundedBody:
    """Pure ASGI: reads each request body before the app sees it, at most `max_bytes` (413)
    within `timeout` seconds (408), then replays it."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(self.max_bytes, int(declared))(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout):
                body = await read_body(receive, self.max_bytes)
        except BodyTooLarge:
            await too_large(self.max_bytes)(scope, receive, send)
            return
        except TimeoutError:
            msg = f"body not received within {self.timeout:g} s"
            await _problem(408, msg, "body_timeout")(scope, receive, send)
            return
        except ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _is_json(content_type: str | None) -> bool:
    """What FastAPI parses as JSON (strict content type)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _invalid(loc: Sequence[Any], msg: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": kind, "input": None}])


def _key(key: str) -> str:
    """A key as it may appear in an error: known field names only, never the client's text."""
    return key if key in KNOWN_KEYS else UNKNOWN


def check_shape(value: Any, max_items: int) -> None:
    """Refuse, before any validation, sizes no valid request has; raises the first found.

    Only the containers and over-long strings of what json.loads made are visited: a record's
    ordinary values (and its keys, named in an error only) cost one type test each, which a
    batch of 10,000 records of 50 fields pays half a million times."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ("body",))]
    while stack:
        node, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            raise _invalid(loc, f"nested deeper than {MAX_DEPTH} levels", "too_deep")
        if isinstance(node, dict):
            if len(node) > MAX_OBJECT_KEYS:
                msg = f"object of {len(node)} fields; at most {MAX_OBJECT_KEYS}"
                raise _invalid(loc, msg, "too_many_fields")
            for key, child in node.items():
                if _visited(child):
                    stack.append((child, (*loc, _key(key))))
        elif isinstance(node, list):
            if len(node) > max_items:
                raise _invalid(loc, f"array of {len(node)} items; at most {max_items}", "too_long")
            for index, child in enumerate(node):
                if _visited(child):
                    stack.append((child, (*loc, index)))
        elif isinstance(node, str) and len(node) > MAX_STRING:
            msg = f"string of {len(node)} characters; at most {MAX_STRING}"
            raise _invalid(loc, msg, "string_too_long")


def _visited(child: Any) -> bool:
    # json.loads makes exact dicts, lists and strs: a type test is enough and costs less.
    kind = type(child)
    return kind is dict or kind is list or (kind is str and len(child) > MAX_STRING)


def parse_bounded(body: bytes, max_items: int) -> Any:
    """JSON of the body, with its shape checked; runs in a worker thread."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError as error:
        detail = {
            "loc": ("body", error.pos),
            "msg": "JSON decode error",
            "type": "json_invalid",
            "input": None,
            "ctx": {"error": error.msg},
        }
        raise RequestValidationError([detail]) from None
    except (RecursionError, UnicodeDecodeError):
        raise _invalid(("body",), "not JSON this service can read", "json_invalid") from None
    check_shape(value, max_items)
    return value


class ParsedRequest(Request):
    """A request whose body was already read and parsed (FastAPI then skips both)."""

    def __init__(self, request: Request, body: bytes, parsed: Any) -> None:
        super().__init__(request.scope, request.receive)
        self._raw = body
        self._parsed = parsed

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._parsed


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


INLINE_BYTES = 16 * 1024  # bodies up to this size are parsed on the event loop


class CheckedRoute(APIRoute):
    """A route whose JSON body is parsed and shape-checked before validation. A body larger
    than INLINE_BYTES is parsed in a worker thread, so a large or hostile body never holds the
    event loop (and /health) while it is taken apart; a smaller one (one encounter is about
    1.5 kB) costs less to parse than the hop to a thread, and is parsed in place."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            if not _is_json(request.headers.get("content-type")):
                return await handler(request)
            body = await request.body()
            if not body:
                return await handler(request)
            max_items = request.app.state.settings.max_batch
            if len(body) <= INLINE_BYTES:
                parsed = parse_bounded(body, max_items)
            else:
                parsed = await run_in_threadpool(parse_bounded, body, max_items)
            return await handler(ParsedRequest(request, body, parsed))

        return checked


def public_errors(
    errors: Sequence[Any], limit: int = MAX_ERRORS, where: Sequence[Any] = ("body",)
) -> list[dict[str, Any]]:
    """Validation errors as the API reports them: location, message and type, never the
    input; unknown fields counted per object, not named; at most `limit` entries, then one
    saying how many more there were."""
    detail: list[dict[str, Any]] = []
    unknown: dict[tuple[Any, ...], int] = {}
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            unknown[loc[:-1]] = unknown.get(loc[:-1], 0) + 1
        else:
            detail.append({"loc": list(loc), "msg": error["msg"], "type": error["type"]})
    for parent, count in unknown.items():
        msg = f"unknown field(s): {count}"
        detail.append({"loc": list(parent), "msg": msg, "type": "extra_forbidden"})
    if len(detail) > limit:
        more = len(detail) - limit
        detail = detail[:limit]
        detail.append({"loc": list(where), "msg": f"{more} more errors", "type": "too_many_errors"})
    return detail
