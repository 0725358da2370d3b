"""The id each request carries in its answer, its log line and the prediction log."""

from __future__ import annotations

import random
import re

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(headers: dict[bytes, bytes]) -> str:
    """The client's X-Request-ID when it is a short token of safe characters (it is echoed in
    headers, bodies and logs), otherwise a new one."""
    given = headers.get(b"x-request-id", b"").decode("latin-1")
    # 128 random bits, as a uuid4 has, from `random` (reseeded in each forked worker):
    # uuid4 asks the kernel for each one, a system call per request.
    return given if REQUEST_ID.fullmatch(given) else f"{random.getrandbits(128):032x}"
