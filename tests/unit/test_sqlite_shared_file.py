"""A SQLite database used by two processes at once keeps every committed row.

SQLite's locks are POSIX record locks, which a process loses on a file as soon as it closes
any descriptor of that file. Opening the database file outside SQLite while connections are
open (to create it private, say) made another process's reader believe it was the last user:
it checkpointed and deleted the write-ahead log under the first process, whose later commits
then went to a deleted file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from readmit.storage.db import make_engine

READ_AND_CLOSE = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(c.execute('select count(*) from t').fetchone()[0]); c.close()"


def _count_elsewhere(path: Path) -> int:
    found = subprocess.run(
        [sys.executable, "-c", READ_AND_CLOSE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(found.stdout)


def test_rows_committed_while_another_process_reads_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    engine = make_engine(f"sqlite:///{path}", "shared-db")
    with engine.begin() as conn:
        conn.exec_driver_sql("create table t (x integer)")
    held = engine.connect()  # a connection that stays open, as a server's pool keeps one
    with held.begin():
        held.exec_driver_sql("insert into t values (1)")
    with engine.connect() as second:  # a new connection of the same engine, same process
        assert second.exec_driver_sql("select count(*) from t").scalar() == 1
    assert _count_elsewhere(path) == 1  # another process reads, then closes
    assert Path(f"{path}-wal").exists(), "the write-ahead log was deleted under open connections"
    with held.begin():
        held.exec_driver_sql("insert into t values (2)")
    assert _count_elsewhere(path) == 2  # committed, so visible to every process at once
    held.close()
    engine.dispose()
