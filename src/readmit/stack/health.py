"""Reading a service's health answer: one GET that tolerates a slow service, and the readers
that turn each service's answer into (healthy, detail)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from readmit.stack import s3

Health = tuple[bool, str]
Reader = Callable[[httpx.Response | None], Health]


def get(url: str, attempts: int = 3, timeout: float = 5.0) -> httpx.Response | None:
    """GET with a short timeout, tried again when the service is slow rather than down.

    A service busy with start-up work (the Airflow API server while DAGs are parsed on two
    cores) can miss one short deadline; a refused connection is final at once.
    """
    for _ in range(attempts):
        try:
            return httpx.get(url, timeout=timeout)
        except httpx.ConnectError:
            return None
        except httpx.HTTPError:
            continue
    return None


def http_ok(reply: httpx.Response | None) -> Health:
    if reply is None:
        return False, "not answering"
    return reply.status_code == 200, f"HTTP {reply.status_code}"


def api_health(reply: httpx.Response | None) -> Health:
    """The API is up once it answers, with a model (200) or still without one (503, live)."""
    if reply is None:
        return False, "not answering"
    try:
        body = reply.json()
    except ValueError:
        return False, f"HTTP {reply.status_code}"
    if reply.status_code == 200:
        model = body.get("model") or {}
        return True, f"serving {model.get('name', '?')} v{model.get('version', '?')}"
    if reply.status_code == 503 and body.get("live"):
        return True, f"up, no model yet ({body.get('detail')})"
    return False, f"HTTP {reply.status_code}"


def s3_health(reply: httpx.Response | None) -> Health:
    """The S3 server answers, and the folder that holds its objects is there."""
    if reply is None:
        return False, "not answering"
    try:
        store = Path(reply.json()["directory"])
    except (ValueError, KeyError, TypeError):
        return False, f"HTTP {reply.status_code}, not the stack's S3 server"
    if reply.status_code != 200:
        return False, f"HTTP {reply.status_code}"
    if not (store / s3.BUCKET).is_dir():
        return False, f"bucket folder {store / s3.BUCKET} is missing"
    return True, f"objects on disk in {store} ({s3.usage(store).describe()})"


def airflow_component(key: str) -> Reader:
    """A part of Airflow that serves no HTTP itself, as the api-server's health report sees it."""

    def read(reply: httpx.Response | None) -> Health:
        if reply is None or reply.status_code != 200:
            return False, "api-server not answering"
        status = (reply.json().get(key) or {}).get("status")
        return status == "healthy", str(status)

    return read
