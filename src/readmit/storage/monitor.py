"""monitor-db: the prediction log, the outcomes hospitals send back, and the corrections.

Clocks: `predictions.scored_at` is the scoring time (UTC) of live traffic; outcomes carry the
time they were received. Predictions and outcomes meet on `encounter_id` when read, so an
outcome that arrives before (or without) its prediction is kept and joins later.
Patients appear only as keyed pseudonyms (`patient_key`), never as `patient_nbr`.
Each logged score names its `variant`: the champion's answer, the challenger's answer (a canary),
or the challenger's shadow score of a record the champion answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from readmit.errors import StorageError, first_line
from readmit.settings import Settings
from readmit.storage import db
from readmit.storage.db import is_postgres, make_engine

metadata = sa.MetaData()
KEY_CHUNK = 5_000
LABELS = ("<30", ">30", "NO")
POSITIVE = "<30"


class Variant(StrEnum):
    """Which model produced a logged score, and whether the caller got it."""

    CHAMPION = "champion"  # @production, answered the caller
    CHALLENGER = "challenger"  # @challenger, answered the caller (canary)
    SHADOW = "shadow"  # @challenger, scored beside the champion's answer, never returned


predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("row_id", sa.String(48), primary_key=True),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("model_alias", sa.Text, nullable=False),
    sa.Column("encounter_id", sa.BigInteger, nullable=True, index=True),
    sa.Column("patient_key", sa.String(64), nullable=True),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("readmitted_30d", sa.Boolean, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("variant", sa.String(16), nullable=False, server_default=Variant.CHAMPION.value),
)
# Columns added after the table's first release: a monitor-db made before gets them, each with
# its server default for the rows already there.
ADDED_COLUMNS = {predictions.name: ("variant",)}
PREDICTION_COLUMNS = [c.name for c in predictions.columns]

outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("encounter_id", sa.BigInteger, primary_key=True),
    sa.Column("readmitted", sa.String(3), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

outcome_corrections = sa.Table(
    "outcome_corrections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("encounter_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("previous", sa.String(3), nullable=False),
    sa.Column("readmitted", sa.String(3), nullable=False),
    sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=False),
)

monitor_runs = sa.Table(
    "monitor_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("window_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("window_limit", sa.Integer, nullable=True),
    sa.Column("first_scored_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_scored_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("model_name", sa.Text, nullable=True),
    sa.Column("model_version", sa.Text, nullable=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("labelled_rows", sa.Integer, nullable=False),
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("figures", sa.JSON, nullable=False),
    sa.Column("mlflow_run_id", sa.String(64), nullable=True),
)
MONITOR_RUN_COLUMNS = [c.name for c in monitor_runs.columns]

comparisons = sa.Table(
    "comparisons",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("window_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("mode", sa.String(16), nullable=True),
    sa.Column("champion_version", sa.Text, nullable=True),
    sa.Column("challenger_version", sa.Text, nullable=True),
    sa.Column("labelled", sa.Integer, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("applied", sa.Boolean, nullable=False),
    sa.Column("figures", sa.JSON, nullable=False),
)


def monitor_engine(settings: Settings, timeout: float | None = None) -> Engine:
    """An engine on monitor-db; with `timeout`, connecting and each statement give up after
    that many seconds (the prediction log must not hang on a database that stopped answering)."""
    url = settings.resolved_monitor_db_url
    args: dict[str, Any] = {}
    if timeout is not None and url.startswith("postgresql"):
        millis = int(timeout * 1000)
        args = {
            "connect_timeout": max(int(timeout), 1),
            "options": f"-c statement_timeout={millis}",
        }
    elif timeout is not None and url.startswith("sqlite"):
        args = {"timeout": timeout}
    return make_engine(url, "monitor-db", args)


def create_tables(conn: Connection) -> None:
    metadata.create_all(conn)


def ensure_tables(engine: Engine) -> None:
    """Create the missing tables and add the missing columns, each in a transaction of its own:
    the log writer and an outcomes load may both find them missing on a fresh (or older)
    database, and the second creator must not fail."""
    db.create_tables(engine, metadata, "monitor-db")
    for table, names in ADDED_COLUMNS.items():
        db.add_missing_columns(engine, metadata.tables[table], names, "monitor-db")


# --- prediction log ---------------------------------------------------------------------------


def insert_predictions(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert logged rows, skipping row ids already there (a replay); returns rows added.

    PostgreSQL: COPY into a temporary table, then one INSERT ... ON CONFLICT DO NOTHING.
    SQLite: one executemany of INSERT OR IGNORE.
    """
    if not rows:
        return 0
    if not is_postgres(conn):
        result = conn.execute(predictions.insert().prefix_with("OR IGNORE"), list(rows))
        return max(result.rowcount, 0)
    conn.execute(sa.text("CREATE TEMP TABLE predictions_in (LIKE predictions) ON COMMIT DROP"))
    names = ", ".join(PREDICTION_COLUMNS)
    cursor = conn.connection.cursor()
    try:
        with cursor.copy(f"COPY predictions_in ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([_copy_value(name, row[name]) for name in PREDICTION_COLUMNS])
    except psycopg.Error as exc:  # the raw cursor's errors are not wrapped by SQLAlchemy
        reason = first_line(exc) or type(exc).__name__
        raise StorageError(f"monitor-db: COPY failed: {reason}") from exc
    added = conn.execute(
        sa.text(
            f"INSERT INTO predictions ({names}) SELECT {names} FROM predictions_in "
            "ON CONFLICT (row_id) DO NOTHING"
        )
    )
    return max(added.rowcount, 0)


def _copy_value(name: str, value: Any) -> Any:
    return json.dumps(value) if name == "features" else value


def read_window(
    engine: Engine, last: int | None = None, since: datetime | None = None
) -> pd.DataFrame:
    """Logged predictions, oldest first, with their outcome (NaN when none yet).

    `last` keeps the newest N rows, `since` the rows scored at or after a time (both may be
    given). Columns: the log's own columns except `features`, whose fields become columns
    of their own (`encounter_id` is nullable Int64), then `outcome` ("<30", ">30", "NO" or
    None) and `label` (1 for "<30", 0 otherwise, <NA> without an outcome).
    """
    query = sa.select(predictions, outcomes.c.readmitted.label("outcome")).select_from(
        predictions.outerjoin(outcomes, predictions.c.encounter_id == outcomes.c.encounter_id)
    )
    if since is not None:
        query = query.where(predictions.c.scored_at >= since)
    query = query.order_by(predictions.c.scored_at.desc(), predictions.c.row_id.desc())
    if last is not None:
        query = query.limit(last)
    with engine.connect() as conn:
        found = conn.execute(query).mappings().all()
    return _window_frame(list(reversed(found)))


LABELLED_COLUMNS = [
    "row_id",
    "scored_at",
    "request_id",
    "variant",
    "model_name",
    "model_version",
    "model_alias",
    "encounter_id",
    "patient_key",
    "probability",
    "threshold",
]


def read_labelled(
    engine: Engine,
    since: datetime | None = None,
    until: datetime | None = None,
    variants: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The logged scores that have an outcome, per variant and model version, oldest first:
    what comparing a champion with its challenger reads (features left out).

    `since`/`until` keep rows scored at or after / before a time; `variants` keeps those
    variants. Columns: LABELLED_COLUMNS, then `outcome` and `label` (1 for "<30", else 0).
    With a shadowing challenger an encounter has a champion and a shadow row, both here.
    """
    query = sa.select(
        *(predictions.c[name] for name in LABELLED_COLUMNS), outcomes.c.readmitted
    ).join(outcomes, predictions.c.encounter_id == outcomes.c.encounter_id)
    if since is not None:
        query = query.where(predictions.c.scored_at >= since)
    if until is not None:
        query = query.where(predictions.c.scored_at < until)
    if variants is not None:
        query = query.where(predictions.c.variant.in_(list(variants)))
    query = query.order_by(predictions.c.scored_at, predictions.c.row_id)
    with engine.connect() as conn:
        found = conn.execute(query).all()
    frame = pd.DataFrame(found, columns=[*LABELLED_COLUMNS, "outcome"])
    frame["label"] = (frame["outcome"] == POSITIVE).astype("int64")
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
    frame["encounter_id"] = frame["encounter_id"].astype("int64")
    frame["probability"] = frame["probability"].astype("float64")
    return frame


def _window_frame(found: list[Any]) -> pd.DataFrame:
    meta = [c for c in PREDICTION_COLUMNS if c != "features"]
    frame = pd.DataFrame([{k: r[k] for k in meta} for r in found], columns=meta)
    fields = pd.DataFrame([r["features"] for r in found])
    frame = pd.concat([frame, fields], axis=1)
    frame["outcome"] = [r["outcome"] for r in found]
    label = [None if r["outcome"] is None else int(r["outcome"] == POSITIVE) for r in found]
    frame["label"] = pd.array(label, dtype="Int64")
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
    frame["encounter_id"] = pd.array(frame["encounter_id"].tolist(), dtype="Int64")
    return frame


# --- outcomes ---------------------------------------------------------------------------------


@dataclass
class OutcomeCounts:
    """What one load did: every received entry is exactly one of inserted, updated (a
    correction of an earlier value) or unchanged; `unmatched` counts entries whose encounter
    was never scored (kept all the same)."""

    received: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    unmatched: int = 0

    def add(self, other: OutcomeCounts) -> None:
        for name in ("received", "inserted", "updated", "unchanged", "unmatched"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def upsert_outcomes(
    conn: Connection, entries: Sequence[tuple[int, str]], now: datetime
) -> OutcomeCounts:
    """Store (encounter_id, readmitted) pairs in order: new ones inserted, a different value
    replaces the stored one and is recorded in outcome_corrections, the same value is left.
    Safe to run twice and at once (PostgreSQL serialises loads with an advisory lock)."""
    if is_postgres(conn):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('readmit.outcomes'))"))
    ids = sorted({encounter for encounter, _ in entries})
    stored = _stored_outcomes(conn, ids)
    scored = _scored_encounters(conn, ids)
    counts = OutcomeCounts(received=len(entries))
    current = dict(stored)
    corrections = []
    for encounter, label in entries:
        counts.unmatched += encounter not in scored
        previous = current.get(encounter)
        if previous is None:
            counts.inserted += 1
        elif previous == label:
            counts.unchanged += 1
        else:
            counts.updated += 1
            corrections.append(
                {
                    "encounter_id": encounter,
                    "previous": previous,
                    "readmitted": label,
                    "corrected_at": now,
                }
            )
        current[encounter] = label
    _write_outcomes(conn, stored, current, now)
    if corrections:
        conn.execute(outcome_corrections.insert(), corrections)
    return counts


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), KEY_CHUNK):
        yield ids[start : start + KEY_CHUNK]


def _stored_outcomes(conn: Connection, ids: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for chunk in _chunks(ids):
        query = sa.select(outcomes.c.encounter_id, outcomes.c.readmitted).where(
            outcomes.c.encounter_id.in_(chunk)
        )
        found.update({int(e): str(r) for e, r in conn.execute(query)})
    return found


def _scored_encounters(conn: Connection, ids: list[int]) -> set[int]:
    found: set[int] = set()
    column = predictions.c.encounter_id
    for chunk in _chunks(ids):
        query = sa.select(column).where(column.in_(chunk)).distinct()
        found.update(int(e) for e in conn.execute(query).scalars())
    return found


def _write_outcomes(
    conn: Connection, stored: dict[int, str], current: dict[int, str], now: datetime
) -> None:
    new = [
        {"encounter_id": e, "readmitted": r, "received_at": now, "updated_at": now}
        for e, r in current.items()
        if e not in stored
    ]
    changed = [
        {"key": e, "value": r, "now": now}
        for e, r in current.items()
        if e in stored and stored[e] != r
    ]
    if new:
        conn.execute(outcomes.insert(), new)
    if changed:
        update = (
            outcomes.update()
            .where(outcomes.c.encounter_id == sa.bindparam("key"))
            .values(readmitted=sa.bindparam("value"), updated_at=sa.bindparam("now"))
        )
        conn.execute(update, changed)


def corrections_of(conn: Connection, encounter_id: int) -> list[tuple[str, str]]:
    """(previous, new) value of every correction of one encounter's outcome, oldest first."""
    query = (
        sa.select(outcome_corrections.c.previous, outcome_corrections.c.readmitted)
        .where(outcome_corrections.c.encounter_id == encounter_id)
        .order_by(outcome_corrections.c.id)
    )
    return [(str(p), str(r)) for p, r in conn.execute(query)]


# --- champion against challenger ---------------------------------------------------------------


def insert_comparison(conn: Connection, row: dict[str, Any]) -> int:
    """Record one comparison (every column of comparisons but `id`); returns its id."""
    key = conn.execute(comparisons.insert(), row).inserted_primary_key
    assert key is not None
    return int(key[0])


def latest_comparisons(conn: Connection, n: int = 1) -> list[dict[str, Any]]:
    """The newest `n` comparisons, newest first (`figures` as a dict, times in UTC); none on a
    monitor-db where no comparison was ever recorded."""
    if not sa.inspect(conn).has_table(comparisons.name):
        return []
    query = sa.select(comparisons).order_by(comparisons.c.run_at.desc(), comparisons.c.id.desc())
    found = conn.execute(query.limit(n)).mappings().all()
    rows = []
    for row in found:
        item = dict(row)
        for name in ("run_at", "window_since"):
            value = item[name]
            if isinstance(value, datetime) and value.tzinfo is None:
                item[name] = value.replace(tzinfo=UTC)
        if isinstance(item["figures"], str):
            item["figures"] = json.loads(item["figures"])
        rows.append(item)
    return rows


# --- monitoring runs --------------------------------------------------------------------------


def insert_run(conn: Connection, run: dict[str, Any]) -> int:
    """Record one monitoring run (every column of monitor_runs but `id`); returns its id."""
    key = conn.execute(monitor_runs.insert(), run).inserted_primary_key
    assert key is not None
    return int(key[0])


def latest_runs(conn: Connection, n: int = 1) -> list[dict[str, Any]]:
    """The newest `n` monitoring runs, newest first, as dicts of monitor_runs' columns
    (`figures` is the run's figures as a dict; times are timezone-aware UTC). A monitor-db
    where no run was ever recorded (no monitor_runs table yet) has none."""
    if not sa.inspect(conn).has_table(monitor_runs.name):
        return []
    query = sa.select(monitor_runs).order_by(monitor_runs.c.run_at.desc(), monitor_runs.c.id.desc())
    found = conn.execute(query.limit(n)).mappings().all()
    return [_run_dict(row) for row in found]


def _run_dict(row: Any) -> dict[str, Any]:
    run = dict(row)
    for name in ("run_at", "window_since", "first_scored_at", "last_scored_at"):
        value = run[name]
        if isinstance(value, datetime) and value.tzinfo is None:
            run[name] = value.replace(tzinfo=UTC)  # SQLite gives back naive UTC times
    if isinstance(run["figures"], str):
        run["figures"] = json.loads(run["figures"])
    return run
