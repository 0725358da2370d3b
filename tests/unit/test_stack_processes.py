"""`stack down` stops what `stack up` started, whole process groups, and nothing else."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from readmit.settings import Settings
from readmit.stack import processes
from readmit.stack.down import down, stragglers
from readmit.stack.errors import StackError
from readmit.stack.foreground import free_port
from readmit.stack.launch import Stack
from readmit.stack.layout import MARKER, paths_for
from readmit.stack.preflight import check_ports


def _wait_members(pgid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        members = processes.group_members(pgid)
        if len(members) >= count:
            return members
        time.sleep(0.05)
    raise AssertionError(f"group {pgid} never had {count} members")


def test_stop_ends_the_whole_group_and_removes_the_record(tmp_path: Path) -> None:
    rec = processes.launch(
        "svc",
        ["sh", "-c", "sleep 300 & sleep 300 & wait"],
        dict(os.environ),
        tmp_path / "svc.log",
        tmp_path,
    )
    members = _wait_members(rec.pid, 3)
    assert processes.record(tmp_path, "svc") == rec and rec.running
    assert processes.stop(rec, tmp_path, timeout=5)
    assert not any(processes.alive(p) for p in members)
    assert processes.record(tmp_path, "svc") is None


def test_a_group_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    script = "trap '' TERM; sleep 300 & wait"
    rec = processes.launch(
        "stubborn", ["sh", "-c", script], dict(os.environ), tmp_path / "s.log", tmp_path
    )
    members = _wait_members(rec.pid, 2)
    clock = time.monotonic()
    assert processes.stop(rec, tmp_path, timeout=1)
    assert time.monotonic() - clock >= 1.0
    assert not any(processes.alive(p) for p in members)


def test_a_reused_pid_and_other_processes_are_left_alone(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        ours = processes.launch("svc", ["sleep", "300"], dict(os.environ), tmp_path / "l", tmp_path)
        # A record whose pid now belongs to another program (another start time).
        stale = processes.ProcessRecord("old", bystander.pid, 1, ["sleep"], "l")
        assert processes.stop(stale, tmp_path)
        assert processes.stop(ours, tmp_path)
        assert bystander.poll() is None and processes.alive(bystander.pid)
        assert not processes.alive(ours.pid)
    finally:
        bystander.kill()
        bystander.wait()


def test_down_also_stops_processes_that_left_the_group(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    paths = paths_for(settings)
    env = {**os.environ, MARKER: str(paths.root)}
    # setsid puts the sleeper in a session (and group) of its own.
    rec = processes.launch(
        "svc",
        ["sh", "-c", "setsid sleep 300 & sleep 300 & wait"],
        env,
        paths.logs / "svc.log",
        paths.run,
    )
    deadline = time.monotonic() + 10
    while len(stragglers(paths)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = stragglers(paths)
    assert len(started) == 3 and len(processes.group_members(rec.pid)) == 2
    assert down(settings, report=lambda _: None) == ["svc"]
    deadline = time.monotonic() + 5
    while any(processes.alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(processes.alive(p) for p in started)
    assert stragglers(paths) == []


def test_up_refuses_a_port_another_program_holds(tmp_path: Path) -> None:
    ports = {
        f"{n}_port": free_port()
        for n in ("s3", "mlflow", "airflow", "api", "exporter", "prometheus")
    }
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        held = holder.getsockname()[1]
        settings = Settings(data_dir=tmp_path, ui_port=held, **ports)
        stack = Stack(settings, paths_for(settings), None, None, False)  # type: ignore[arg-type]
        with pytest.raises(StackError, match=f"ui port {held} \\(set READMIT_UI_PORT\\)"):
            check_ports(stack)
    check_ports(stack)


def test_down_stops_a_descendant_that_left_the_group_and_lost_the_marker(tmp_path: Path) -> None:
    # Like an Airflow task: its own session, a new process title, no stack marker to find.
    settings = Settings(data_dir=tmp_path)
    paths = paths_for(settings)
    env = {**os.environ, MARKER: str(paths.root)}
    script = "env -i setsid sleep 301 & wait"
    rec = processes.launch("svc", ["sh", "-c", script], env, paths.logs / "svc.log", paths.run)
    deadline = time.monotonic() + 10
    while not (escaped := list(processes.descendants([rec.pid]))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(escaped) == 1 and stragglers(paths) == [rec.pid]
    assert processes.group_members(rec.pid) == [rec.pid]
    assert down(settings, report=lambda _: None) == ["svc"]
    deadline = time.monotonic() + 5
    while processes.alive(escaped[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes.alive(escaped[0])
