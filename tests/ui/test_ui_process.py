"""`readmit ui` as a real process: SIGTERM stops the web server it runs, and frees its port."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from readmit.stack.foreground import free_port
from readmit.stack.processes import alive, descendants
from readmit.stack.services import port_taken, program


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the UI did not answer {url}: {log.read_text(errors='replace')[-2000:]}")


def test_sigterm_stops_the_ui_and_frees_its_port(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "READMIT_UI_PORT": str(port), "READMIT_DATA_DIR": str(tmp_path)}
    with log.open("wb") as out:
        ui = subprocess.Popen(
            [program("readmit"), "ui"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started: dict[int, int] = {}
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", ui, log)
        started = descendants([ui.pid])
        ui.send_signal(signal.SIGTERM)
        ui.wait(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and port_taken(port):
            time.sleep(0.2)
        left = [pid for pid in started if alive(pid)]
        assert not port_taken(port), f"port {port} still held after SIGTERM; left: {left}"
        assert left == [], f"processes of `readmit ui` still running: {left}"
    finally:
        for pid in [ui.pid, *started]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        ui.wait(10)
