"""Faults with real processes: a clean killed midway, readers during a rebuild, two ingests at once."""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from readmit.dataset import Dataset, load_dataset, order_by_encounter
from readmit.pipeline.clean import build_clean
from readmit.pipeline.ingest import ingest, load_batch
from readmit.pipeline.train import load_training_data
from readmit.settings import Settings
from readmit.split import SPLITS
from readmit.storage.clean import latest_build, read_latest_build
from readmit.storage.db import make_engine
from readmit.storage.locks import exclusive
from readmit.storage.raw import open_raw_db
from tests.synthetic import synthetic_rows

REPO = Path(__file__).resolve().parents[2]
INGEST = [sys.executable, "-m", "readmit.cli", "ingest"]
STARTED: list[subprocess.Popen[str]] = []
PAUSED = "paused after clean_train"

# A real `build_clean` in its own process that stops, its transaction open, right after
# clean_train is written; it goes on when a line arrives on stdin.
CLEAN_PAUSING = f"""
import sys
from readmit.pipeline.clean import build_clean
from readmit.settings import Settings

def report(line):
    if line.startswith("wrote") and line.endswith("clean_train"):
        print({PAUSED!r}, flush=True)
        sys.stdin.readline()

build_clean(Settings(), report=report)
print("done", flush=True)
"""


@pytest.fixture(autouse=True)
def no_process_left() -> Iterator[None]:
    """A test that fails midway leaves none of the processes it started running."""
    yield
    for child in STARTED:
        if child.poll() is None:
            child.kill()
            child.wait()
    STARTED.clear()


def _start(command: list[str], settings: Settings, **kwargs: object) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        command,
        env=_env(settings),
        cwd=settings.data_dir,
        text=True,
        stdout=subprocess.PIPE,
        **kwargs,  # type: ignore[call-overload]
    )
    STARTED.append(child)
    return child


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("READMIT_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
        READMIT_DATA_DIR=str(settings.data_dir),
        READMIT_RAW_DB_URL=settings.resolved_raw_db_url,
        READMIT_CLEAN_DB_URL=settings.resolved_clean_db_url,
        READMIT_DATASET_URI=settings.dataset_uri,
        READMIT_BATCH_SIZE=str(settings.batch_size),
    )
    return env


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stdout lines, read by a thread so that waiting on them can time out."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], wanted: str, timeout: float = 120) -> None:
    while (line := lines.get(timeout=timeout)) != wanted:
        print(line)


@pytest.fixture(params=["sqlite", "postgres"])
def built(request, tmp_path) -> Settings:
    """Raw-db and clean-db with one clean build of 3,000 synthetic encounters."""
    settings = Settings(data_dir=tmp_path, batch_size=3000)
    if request.param == "postgres":
        create = request.getfixturevalue("pg_database_factory")
        settings = settings.model_copy(update={"raw_db_url": create(), "clean_db_url": create()})
    frame = order_by_encounter(synthetic_rows(3000, seed=3))
    dataset = Dataset(frame, hashlib.sha256(b"faults").hexdigest(), "synthetic")
    ingest(settings, dataset=dataset)
    build_clean(settings)
    return settings


def _assert_whole(settings: Settings, build_id: str) -> None:
    """The newest build is `build_id` and every one of its splits has all its rows."""
    engine = make_engine(settings.resolved_clean_db_url, "clean-db")
    try:
        build, frames = read_latest_build(engine)
    finally:
        engine.dispose()
    assert build.build_id == build_id
    assert {s: len(frames[s]) for s in SPLITS} == build.rows
    assert all(n > 0 for n in build.rows.values())


def _start_pausing_clean(settings: Settings) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    child = _start([sys.executable, "-c", CLEAN_PAUSING], settings, stdin=subprocess.PIPE)
    lines = _lines(child)
    _wait_for(lines, PAUSED)
    return child, lines


def test_a_clean_killed_after_writing_clean_train_leaves_the_previous_build_whole(built):
    engine = make_engine(built.resolved_clean_db_url, "clean-db")
    previous = latest_build(engine).build_id
    engine.dispose()
    child, _ = _start_pausing_clean(built)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    _assert_whole(built, previous)
    data = load_training_data(built)
    assert data.build.build_id == previous and len(data.test_inputs) == data.build.rows["test"]
    assert build_clean(built).build_id != previous  # and the next clean completes


# On PostgreSQL a reader waits for a rebuild to finish (LOCK TABLE in read_latest_build).
@pytest.mark.parametrize("built", ["sqlite"], indirect=True)
def test_a_reader_sees_the_previous_build_whole_while_a_rebuild_runs(built):
    engine = make_engine(built.resolved_clean_db_url, "clean-db")
    previous = latest_build(engine).build_id
    engine.dispose()
    child, lines = _start_pausing_clean(built)
    _assert_whole(built, previous)
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    _wait_for(lines, "done")
    assert child.wait(timeout=60) == 0
    engine = make_engine(built.resolved_clean_db_url, "clean-db")
    current = latest_build(engine).build_id
    engine.dispose()
    assert current != previous
    _assert_whole(built, current)


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_raw_db(request, dataset_uri, tmp_path) -> Settings:
    """Settings of an empty raw-db (no tables yet) for the real data set in batches of 40,000."""
    settings = Settings(data_dir=tmp_path, dataset_uri=dataset_uri, batch_size=40_000)
    if request.param == "postgres":
        create = request.getfixturevalue("pg_database_factory")
        settings = settings.model_copy(update={"raw_db_url": create()})
    return settings


def test_two_ingests_at_once_on_a_fresh_database_load_two_batches_exactly(fresh_raw_db):
    settings = fresh_raw_db
    runs = [_start(INGEST, settings, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    engine = sa.create_engine(settings.resolved_raw_db_url)
    with engine.connect() as conn:
        batches = conn.execute(
            sa.text(
                "SELECT batch_id, status, rows_read, rows_train + rows_validation + rows_test"
                " AS inserted, rows_duplicate, rows_rejected FROM batch_metadata"
                " ORDER BY batch_id"
            )
        ).all()
        stored = Counter[int]()
        for split in SPLITS:
            query = f"SELECT batch_id, count(*) FROM raw_{split} GROUP BY batch_id"
            stored.update(dict(conn.execute(sa.text(query)).tuples().all()))
    engine.dispose()
    assert [(b.batch_id, b.status) for b in batches] == [(1, "succeeded"), (2, "succeeded")]
    for batch in batches:
        assert batch.rows_read == 40_000 and batch.rows_duplicate == 0
        assert batch.inserted + batch.rows_rejected == 40_000
    assert stored == {b.batch_id: b.inserted for b in batches}


def test_an_ingest_waits_for_the_one_running_says_so_then_loads_the_next_batch(fresh_raw_db):
    settings = fresh_raw_db
    engine = open_raw_db(settings)
    try:
        with exclusive(engine, "raw-db", "ingest", report=print):  # as a running ingest would
            waiting = _start(INGEST, settings, stderr=subprocess.STDOUT)
            lines = _lines(waiting)
            _wait_for(lines, "raw-db: another ingest is running; waiting for it to finish")
            load_batch(engine, load_dataset(settings), 1, settings)  # the holder's batch
        assert waiting.wait(timeout=300) == 0
    finally:
        engine.dispose()
    engine = sa.create_engine(settings.resolved_raw_db_url)
    with engine.connect() as conn:
        loaded = conn.execute(
            sa.text("SELECT batch_id, status FROM batch_metadata ORDER BY batch_id")
        ).all()
    engine.dispose()
    assert [tuple(b) for b in loaded] == [(1, "succeeded"), (2, "succeeded")]
