"""Who may call the API: named keys with scopes, sent in the `X-API-Key` header.

Keys come from READMIT_API_KEYS_FILE, one a line, `NAME SCOPE[,SCOPE] sha256:HEX` (blank lines
and `#` comments skipped), and from READMIT_API_KEY, a key with every scope named `api_key`.
The file holds SHA-256 digests, never keys: `key_line` writes a line for a new key. It is
re-read when it changes (checked at most every RELOAD_CHECK_SECONDS), so a key is added or
revoked without a restart; a file that no longer parses keeps the keys read before, and says so
in the log. A presented key is hashed and compared with every stored digest in constant time.
Keys are never logged; the log line of a request names the key (`caller`).

Each key may make READMIT_API_KEY_RATE requests a second (0: no limit), a burst of one second's
worth; past it a 429 with `Retry-After`. Each of READMIT_API_WORKERS workers keeps its own
bucket of rate / workers: a key never exceeds the rate in all, and a client whose requests
all reach one worker (one keep-alive connection) gets that worker's share only.

Scopes: `predict` (/predict, /predict-batch, /explain; checked only when READMIT_AUTH=keys),
`outcomes` (POST /outcomes) and `admin` (/reload-model), both always checked.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from readmit.errors import ReadmitError
from readmit.settings import Settings

log = logging.getLogger(__name__)
HEADER = "X-API-Key"
SCOPES = ("predict", "outcomes", "admin")
SETTING_KEY_NAME = "api_key"
RELOAD_CHECK_SECONDS = 1.0
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


class KeyFileError(ReadmitError, ValueError):
    """The key file cannot be read: names the line and what is wrong with it."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes
    scopes: frozenset[str]


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_line(name: str, scopes: list[str], key: str) -> str:
    """The key file's line for `key` (its digest, not the key)."""
    _check_name(name, "the name")
    _check_scopes(scopes, "the scopes")
    return f"{name} {','.join(scopes)} sha256:{digest_of(key).hex()}"


def _check_name(name: str, where: str) -> None:
    if not KEY_NAME.fullmatch(name):
        raise KeyFileError(f"{where}: a key name is 1-64 letters, digits, '_', '.' or '-'")


def _check_scopes(scopes: list[str], where: str) -> None:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise KeyFileError(f"{where}: scopes are a comma-separated list of {', '.join(SCOPES)}")


def parse_keys(text: str) -> list[ApiKey]:
    """The keys of a key file; KeyFileError names the first bad line."""
    keys: list[ApiKey] = []
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"line {number}"
        parts = line.split()
        if len(parts) != 3:
            raise KeyFileError(f"{where}: expected 'NAME SCOPE[,SCOPE] sha256:HEX'")
        name, scopes, digest = parts
        _check_name(name, where)
        _check_scopes(scopes.split(","), where)
        found = DIGEST.fullmatch(digest)
        if found is None:
            raise KeyFileError(f"{where}: the digest is 'sha256:' and 64 lowercase hex digits")
        if name in names:
            raise KeyFileError(f"{where}: the name {name} is used twice")
        names.add(name)
        keys.append(ApiKey(name, bytes.fromhex(found.group(1)), frozenset(scopes.split(","))))
    return keys


class RateLimit:
    """A token bucket per key name: `rate` a second, holding at most max(rate, 1) tokens.
    Called from the event loop only, so no lock."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.clock = time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, when)

    def allow(self, name: str) -> bool:
        now = self.clock()
        tokens, then = self._buckets.get(name, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[name] = (tokens - 1.0 if allowed else tokens, now)
        return allowed


class KeyRing:
    """The keys in force; `find` is what a request calls."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.api_keys_file
        self._fixed: list[ApiKey] = []
        if settings.api_key:
            key = ApiKey(SETTING_KEY_NAME, digest_of(settings.api_key), frozenset(SCOPES))
            self._fixed.append(key)
        self._from_file: list[ApiKey] = []
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        share = settings.api_key_rate / settings.api_workers
        self.limit = RateLimit(share) if share > 0 else None
        if self.path is not None:
            self._from_file = parse_keys(self.path.read_text(encoding="utf-8"))
            self._stamp = _stamp(self.path)

    @property
    def keys(self) -> list[ApiKey]:
        self._reload_if_changed()
        return [*self._fixed, *self._from_file]

    def find(self, presented: str) -> ApiKey | None:
        """The key `presented` is, or None. Every digest is compared, so the time taken does
        not depend on which one matches."""
        digest = digest_of(presented)
        match = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                match = key
        return match

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < RELOAD_CHECK_SECONDS:
            return
        with self._lock:
            self._checked = now
            try:
                stamp = _stamp(self.path)
                if stamp == self._stamp:
                    return
                keys = parse_keys(self.path.read_text(encoding="utf-8"))
            except (OSError, KeyFileError) as exc:
                kept = len(self._from_file)
                log.warning("API key file not reloaded, keeping %d key(s): %s", kept, exc)
                return
            self._from_file, self._stamp = keys, stamp
            log.info("API key file reloaded", extra={"keys": len(keys)})


def _stamp(path: Path) -> tuple[int, int]:
    """What changes when the file is edited or replaced: its change time and size."""
    status = path.stat()
    return status.st_mtime_ns, status.st_size


RETRY = {"Retry-After": "1"}
API_KEY_HEADER = APIKeyHeader(
    name=HEADER,
    auto_error=False,
    description="A key from READMIT_API_KEYS_FILE or READMIT_API_KEY; see the scopes of each "
    "endpoint.",
)


def require(scope: str) -> Callable[..., Awaitable[None]]:
    """A route dependency: 401 without a known key, 403 for a key without `scope`. The
    `predict` scope is checked only when READMIT_AUTH=keys."""

    async def check(
        request: Request, presented: Annotated[str | None, Security(API_KEY_HEADER)]
    ) -> None:
        settings: Settings = request.app.state.settings
        if scope == "predict" and settings.auth == "none":
            return
        if not presented:
            raise HTTPException(401, f"{HEADER} header required", {"WWW-Authenticate": HEADER})
        ring: KeyRing = request.app.state.keys
        key = ring.find(presented)
        if key is None:
            raise HTTPException(401, f"{HEADER} is not a valid key", {"WWW-Authenticate": HEADER})
        request.state.caller = key.name
        if scope not in key.scopes:
            raise HTTPException(403, f"the key {key.name} lacks the scope {scope}")
        if ring.limit is not None and not ring.limit.allow(key.name):
            rate = settings.api_key_rate
            raise HTTPException(
                429, f"the key {key.name} is over its {rate:g} requests a second", RETRY
            )

    return check
