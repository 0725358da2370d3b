"""Engines, connection errors and the bulk load shared by raw-db and clean-db.

On PostgreSQL rows travel by COPY into a temporary table, then one INSERT ... SELECT that
skips rows whose unique key is already there; on SQLite, one executemany of INSERT OR IGNORE.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from readmit.errors import StorageError


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def make_engine(url: str, name: str) -> Engine:
    """An engine for `url`; a SQLite file gets its folder created first."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StorageError(f"{name}: invalid database URL {url!r}: {exc}") from exc


def check_connection(engine: Engine, name: str) -> None:
    """Fail with one line naming the database when it cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StorageError(f"{name}: cannot connect to {safe_url(str(engine.url))}: {reason}") from exc


@contextmanager
def transaction(engine: Engine, name: str) -> Iterator[Connection]:
    """One transaction; a database error becomes a one-line StorageError after rollback."""
    try:
        with engine.begin() as conn:
            yield conn
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StorageError(f"{name}: {reason}") from exc


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def bulk_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Insert `frame` into `table`, skipping rows that break a unique key; return rows added."""
    if frame.empty:
        return 0
    columns = list(frame.columns)
    if is_postgres(conn):
        return _copy_insert(conn, table, frame, columns)
    before = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    conn.execute(table.insert().prefix_with("OR IGNORE"), records)
    after = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    return int(after - before)


def _copy_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame, columns: list[str]) -> int:
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    staging = quote(f"staging_{table.name}")
    buffer = io.StringIO()
    frame.to_csv(buffer, header=False, index=False)
    cursor = conn.connection.cursor()
    cursor.execute(
        f"CREATE TEMP TABLE {staging} (LIKE {quote(table.name)} INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    with cursor.copy(f"COPY {staging} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getvalue())
    cursor.execute(
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} FROM {staging} "
        "ON CONFLICT DO NOTHING"
    )
    inserted = cursor.rowcount
    cursor.execute(f"DROP TABLE {staging}")
    return int(inserted)
