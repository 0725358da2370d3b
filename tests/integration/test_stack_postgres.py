"""Where no PostgreSQL answers, `stack up` initialises and runs a private cluster."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from readmit.stack import postgres, processes
from readmit.stack.foreground import free_port
from tests.conftest import _unavailable


@pytest.fixture
def world_readable_dir():
    # The cluster runs as `postgres` when the tests run as root: it must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="readmit-pg-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_private_cluster_starts_holds_the_databases_and_stops(world_readable_dir: Path) -> None:
    try:
        postgres._pg_bin("initdb")
    except postgres.PostgresError as exc:
        _unavailable(str(exc))
    port = free_port()
    url = postgres.private_cluster_url(port, "s3cret-pw")
    assert not postgres.reachable(url, timeout=1)
    run = world_readable_dir / "run"
    rec = postgres.start_private_cluster(
        world_readable_dir / "pgdata", port, "s3cret-pw", world_readable_dir / "postgres.log", run
    )
    try:
        assert postgres.reachable(url)
        refused = postgres.connection_problem(postgres.private_cluster_url(port, "wrong"))
        assert refused is not None and "password authentication failed" in refused
        assert not (world_readable_dir / "pg-password").exists()
        assert postgres.ensure_databases(url, "t_") == [
            "t_raw",
            "t_clean",
            "t_monitor",
            "t_airflow",
            "t_mlflow",
            "t_mlflow_auth",
        ]
        assert postgres.ensure_databases(url, "t_") == []
        engine = sa.create_engine(postgres.database_urls(url, "t_")["raw"])
        with engine.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar() == "t_raw"
            listen = conn.execute(sa.text("show listen_addresses")).scalar()
        engine.dispose()
        assert listen == "127.0.0.1"
        if os.geteuid() == 0:
            assert (world_readable_dir / "pgdata").owner() == "postgres"
    finally:
        stopped = processes.stop(rec, run)
    assert stopped
    assert not postgres.reachable(url, timeout=1)
    with socket.socket() as holder, pytest.raises(postgres.PostgresError, match="in use"):
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        postgres.start_private_cluster(
            world_readable_dir / "pgdata", port, "s3cret-pw", world_readable_dir / "l", run
        )
