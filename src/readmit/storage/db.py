"""Engines, connection errors and the bulk load shared by raw-db and clean-db.

On PostgreSQL rows travel by COPY; on SQLite, by one executemany. Callers find rows that are
already there with `existing_keys` first, so the unique index never has to reject a row.

SQLite gets real transactions: pysqlite by itself commits DDL (DROP, CREATE) outside of the
transaction, so a clean build killed midway would leave empty tables behind. SQLite files
are in WAL mode, so readers keep seeing the last committed build while a rebuild runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from readmit.errors import StorageError, first_line
from readmit.files import private_file

KEY_CHUNK = 5_000


def safe_url(url: str) -> str:
    """The URL with its password hidden (in the user part and in a `password` query parameter),
    for messages and logs; a plain path comes back as it is."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _hide_user_password(url)
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def _hide_user_password(url: str) -> str:
    """For what SQLAlchemy cannot parse: file paths, and URLs of other shapes."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<invalid URL>"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def sqlite_path(url: str | URL) -> Path | None:
    """The file behind a SQLite URL; None for another backend or an in-memory database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


# Execution option for a transaction that reads, then writes what it read: on SQLite it takes the
# write lock at BEGIN (a deferred one that finds another writer's commit since its read fails at
# once with "database is locked", without waiting).
WRITE_FIRST = "readmit_write_first"


def _sqlite_setup(engine: Engine, path: Path | None, name: str) -> None:
    """The file is created private on first connect; then SQLAlchemy's recipe for real
    transactions: pysqlite leaves transactions alone and every BEGIN is emitted here."""

    @event.listens_for(engine, "do_connect")
    def create_private(*_args: Any) -> None:
        if path is None:
            return
        try:
            private_file(path)
        except OSError as exc:
            raise StorageError(f"{name}: cannot create {path}: {exc.strerror}") from exc

    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def begin(conn: Connection) -> None:
        writes_after_reading = conn.get_execution_options().get(WRITE_FIRST, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes_after_reading else "BEGIN")


def make_engine(url: str, name: str, connect_args: dict[str, Any] | None = None) -> Engine:
    """An engine for `url`; a SQLite file is created private (on first use), in WAL mode and with
    real transactions."""
    try:
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args or {})
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StorageError(f"{name}: invalid database URL {url!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine, sqlite_path(url), name)
    return engine


def create_tables(engine: Engine, metadata: sa.MetaData, name: str) -> None:
    """Create the missing tables of `metadata`; another process creating them at once is fine.

    Two first runs may both find a table missing; the one that creates it second fails. The
    tables are then there, which a second look confirms.
    """
    writer = engine.execution_options(**{WRITE_FIRST: True})  # it reads the catalogue first
    try:
        with transaction(writer, name) as conn:
            metadata.create_all(conn)
    except StorageError:
        with transaction(writer, name) as conn:
            metadata.create_all(conn)


def add_missing_columns(engine: Engine, table: sa.Table, names: tuple[str, ...], name: str) -> None:
    """Add those of `names` that an existing `table` lacks (its rows get the column's server
    default): the migration of a database made by an earlier release. Like `create_tables`,
    a second process adding the same column at once fails once, then finds it there."""
    writer = engine.execution_options(**{WRITE_FIRST: True})
    try:
        with transaction(writer, name) as conn:
            _add_columns(conn, table, names)
    except StorageError:
        with transaction(writer, name) as conn:
            _add_columns(conn, table, names)


def _add_columns(conn: Connection, table: sa.Table, names: tuple[str, ...]) -> None:
    present = {column["name"] for column in sa.inspect(conn).get_columns(table.name)}
    quote = conn.dialect.identifier_preparer.quote
    for column_name in names:
        if column_name not in present:
            column = sa.schema.CreateColumn(table.c[column_name]).compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {column}"))


def check_connection(engine: Engine, name: str) -> None:
    """Fail with one line naming the database when it cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except DBAPIError as exc:
        reason = first_line(exc.orig or exc)
        raise StorageError(
            f"{name}: cannot connect to {safe_url(str(engine.url))}: {reason}"
        ) from exc


@contextmanager
def transaction(engine: Engine, name: str) -> Iterator[Connection]:
    """One transaction; a database error becomes a one-line StorageError after rollback."""
    try:
        with engine.begin() as conn:
            yield conn
    except DBAPIError as exc:
        reason = first_line(exc.orig or exc)
        raise StorageError(f"{name}: {reason}") from exc


def count_rows(conn: Connection, table: sa.Table) -> int:
    """How many rows `table` holds."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def bulk_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Insert every row of `frame` into `table` (COPY on PostgreSQL); return the row count."""
    if frame.empty:
        return 0
    if is_postgres(conn):
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in frame.columns)
        cursor = conn.connection.cursor()
        with cursor.copy(f"COPY {quote(table.name)} ({names}) FROM STDIN") as copy:
            copy.write(copy_text(frame))
    else:
        rows = frame.astype(object).where(frame.notna(), None)
        conn.execute(
            table.insert(), [{str(k): v for k, v in r.items()} for r in rows.to_dict("records")]
        )
    return len(frame)


_COPY_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_column(series: pd.Series) -> list[str]:
    """One column as COPY text values: NULL as \\N, specials escaped, few Python calls."""
    if series.dtype == object:
        values = [str(v) for v in series.tolist()]
        joined = "".join(values)
        if joined != joined.translate(_COPY_ESCAPES):
            values = [v.translate(_COPY_ESCAPES) for v in values]
        nulls = series.isna().to_numpy()
        if nulls.any():
            values = [_COPY_NULL if null else v for v, null in zip(values, nulls, strict=True)]
        return values
    if pd.api.types.is_datetime64_any_dtype(series):
        lookup = {
            v: (_COPY_NULL if pd.isna(v) else pd.Timestamp(v).isoformat()) for v in series.unique()
        }
        return [lookup[v] for v in series.tolist()]
    text = series.astype(str)
    return text.where(series.notna(), _COPY_NULL).tolist()


def copy_text(frame: pd.DataFrame) -> str:
    """`frame` in PostgreSQL's COPY text format, built column by column."""
    columns = [_copy_column(frame[name]) for name in frame.columns]
    return "".join(line + "\n" for line in map("\t".join, zip(*columns, strict=True)))


def existing_keys(conn: Connection, column: sa.Column, keys: list[str]) -> set[str]:
    """Which of `keys` are already in `column`: one array query on PostgreSQL, chunks on SQLite."""
    if not keys:
        return set()
    if is_postgres(conn):
        # One text parameter split server-side: far cheaper than binding a 15,000-item array.
        # The keys are hex digests, so a comma never occurs inside one.
        as_array = sa.func.string_to_array(sa.bindparam("keys", type_=sa.Text), ",")
        query = sa.select(column).where(column == sa.any_(as_array))
        return set(conn.execute(query, {"keys": ",".join(keys)}).scalars())
    found: set[str] = set()
    for start in range(0, len(keys), KEY_CHUNK):
        chunk = keys[start : start + KEY_CHUNK]
        found.update(conn.execute(sa.select(column).where(column.in_(chunk))).scalars())
    return found
