"""Passwords in the settings never reach what the commands print, nor a process's argv
(which `ps` shows to every user of the machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from readmit.cli import app
from readmit.stack.foreground import free_port, stop_process_group
from readmit.stack.processes import alive, descendants
from readmit.stack.services import program
from tests.synthetic import synthetic_rows

SECRET = "Zq7-not-for-your-eyes"


def _with_password(url: str) -> str:
    """The same database with a password in its URL (the test server trusts local logins)."""
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def test_commands_print_no_password(tmp_path: Path, pg_database_factory) -> None:
    csv = tmp_path / "diabetic_data.csv"
    synthetic_rows(300).to_csv(csv, index=False)
    env = {
        "READMIT_DATA_DIR": str(tmp_path / "state"),
        "READMIT_DATASET_URI": str(csv),
        "READMIT_VERIFY_CHECKSUM": "false",
        "READMIT_RAW_DB_URL": _with_password(pg_database_factory()),
        "READMIT_CLEAN_DB_URL": _with_password(pg_database_factory()),
        # Nothing answers there: train prints where it goes, then fails to connect.
        "MLFLOW_TRACKING_URI": f"http://readmit:{SECRET}@127.0.0.1:{free_port()}",
    }
    runner = CliRunner()
    outputs = {}
    for command in ("ingest", "status", "clean", "train"):
        result = runner.invoke(app, [command], env=env)
        outputs[command] = result.output
        assert result.exit_code == (1 if command == "train" else 0), result.output
    assert "raw-db postgresql+psycopg://postgres:***@127.0.0.1" in outputs["ingest"]
    assert "-> http://readmit:***@127.0.0.1" in outputs["train"]
    for command, output in outputs.items():
        assert SECRET not in output, f"`readmit {command}` printed the password: {output}"


def _cmdlines(root: int) -> list[str]:
    lines = []
    for pid in [root, *descendants([root])]:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return lines


def _start_mlflow_server(tmp_path: Path, store_url: str) -> subprocess.Popen[bytes]:
    """`readmit mlflow-server` in a session of its own, healthy when this returns."""
    port = free_port()
    env = {
        **os.environ,
        "READMIT_DATA_DIR": str(tmp_path / "state"),
        "READMIT_MLFLOW_BACKEND_STORE_URI": store_url,
        "READMIT_MLFLOW_PORT": str(port),
    }
    with (tmp_path / "mlflow.log").open("wb") as log:
        server = subprocess.Popen(
            [program("readmit"), "mlflow-server"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    healthy = False
    while not healthy and time.monotonic() < deadline and server.poll() is None:
        try:
            healthy = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            time.sleep(0.5)
    if not healthy:
        stop_process_group(server)
        output = (tmp_path / "mlflow.log").read_text(errors="replace")
        pytest.fail(f"the MLflow server did not become healthy: {output[-2000:]}")
    return server


def test_mlflow_server_argv_holds_no_password(tmp_path: Path, pg_database_factory) -> None:
    server = _start_mlflow_server(tmp_path, _with_password(pg_database_factory()))
    try:
        output = (tmp_path / "mlflow.log").read_text(errors="replace")
        cmdlines = _cmdlines(server.pid)
        assert any("uvicorn" in line for line in cmdlines), cmdlines
        for line in cmdlines:
            assert SECRET not in line, f"a password in argv: {line}"
        assert SECRET not in output
        assert "store postgresql+psycopg://postgres:***@" in output
    finally:
        stop_process_group(server)


def test_mlflow_server_stops_whole_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM to the group (as tini -g, podman stop and `stack down` send it) ends the server
    and its uvicorn child with exit code 0, not by a later SIGKILL."""
    server = _start_mlflow_server(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    children = descendants([server.pid])
    assert children, "no uvicorn child"
    try:
        os.killpg(server.pid, signal.SIGTERM)
        code = server.wait(timeout=60)
    finally:
        stop_process_group(server)
    assert code == 0, (tmp_path / "mlflow.log").read_text(errors="replace")[-2000:]
    assert not [pid for pid in children if alive(pid)], "a child outlived the server"


@pytest.fixture(autouse=True)
def _no_inherited_mlflow_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test's environment only."""
    for name in ("MLFLOW_TRACKING_URI", "READMIT_MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
