"""One writer at a time per database: a PostgreSQL advisory lock, or a file lock for SQLite.

The lock belongs to a session (or an open file), so a process that dies, even by kill -9,
releases it at once; nothing is left to clean up.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from readmit.storage.db import sqlite_path


def advisory_key(purpose: str) -> int:
    """A stable signed 64-bit key for `purpose` (advisory locks are per database already)."""
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "big", signed=True)


@contextmanager
def exclusive(
    engine: Engine, name: str, purpose: str, report: Callable[[str], None]
) -> Iterator[None]:
    """Hold the `purpose` lock of the database behind `engine`; wait, saying so, if it is taken."""
    waiting = f"{name}: another {purpose} is running; waiting for it to finish"
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, advisory_key(f"readmit:{purpose}"), lambda: report(waiting)):
            yield
        return
    path = sqlite_path(engine.url)
    if path is None:  # an in-memory database has a single user
        yield
        return
    with _file_lock(path.with_name(f"{path.name}.{purpose}.lock"), lambda: report(waiting)):
        yield


@contextmanager
def _advisory_lock(engine: Engine, key: int, on_wait: Callable[[], None]) -> Iterator[None]:
    with engine.connect() as conn:
        params = {"key": key}
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), params).scalar_one():
            on_wait()
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), params)
        conn.commit()  # the lock is the session's: no transaction stays open while it is held
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), params)
            conn.commit()


@contextmanager
def _file_lock(path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
