"""`readmit serve` with READMIT_API_WORKERS processes on one listening socket.

One process serves one core: the request path (HTTP parsing, validation, JSON, the model) holds
the GIL. The supervisor binds the socket, then forks the workers; each builds its own app, so
each loads the model off the request path, polls `@production` and hot-swaps it, and keeps its
own prediction log (its own queue and spill file: a record is scored and logged by exactly one
worker). The kernel hands each new connection to one of the workers waiting on the socket.
A worker that dies is replaced; SIGTERM or SIGINT stops them all gracefully.

/metrics adds up every worker: prometheus_client's multiprocess mode, each worker writing its
values to files in a private folder made for this run, any worker reading all of them when
scraped (counters and histograms summed; each gauge's rule is in `metrics.py`). A dead worker's
live gauges are dropped. /health and /model-info answer for the worker that takes the request,
and /health also counts the workers serving each version and is ready only once every worker
has a model; after a promotion every worker has swapped within READMIT_MODEL_POLL_SECONDS, and
a POST /reload-model makes every worker check `@production` before it answers (`reload.py`, a
generation counter and each worker's version in the same run folder).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

import uvicorn
from prometheus_client import multiprocess

from readmit.logs import configure_json_logging
from readmit.serving import reload
from readmit.serving.metrics import use_multiprocess
from readmit.settings import Settings

# Builds one worker's server from the settings (server.build_server).
ServerFactory = Callable[[Settings], uvicorn.Server]

log = logging.getLogger(__name__)
STOP_SECONDS = 20.0
RESTART_PAUSE_SECONDS = 1.0  # between restarts, so a worker that cannot start does not spin


def _listening_socket(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.api_host, settings.api_port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(build: ServerFactory, settings: Settings, sock: socket.socket) -> None:
    """One worker: its own app and uvicorn server on the shared socket."""
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)  # uvicorn installs its own once it runs
    build(settings).run(sockets=[sock])


class Supervisor:
    """Starts the workers, replaces one that dies, stops them all on SIGTERM or SIGINT."""

    def __init__(
        self, build: ServerFactory, settings: Settings, sock: socket.socket, metrics_dir: Path
    ) -> None:
        self.build = build
        self.settings = settings
        self.sock = sock
        self.metrics_dir = metrics_dir
        self.context = multiprocessing.get_context("fork")
        self.workers: list[BaseProcess] = []
        self.stopping = threading.Event()
        self.signal = reload.shared(settings.api_workers)

    def start_worker(self) -> BaseProcess:
        process = self.context.Process(
            target=_worker, args=(self.build, self.settings, self.sock), name="readmit-api-worker"
        )
        process.start()
        return process

    def run(self) -> None:
        previous = {n: signal.signal(n, self._stop) for n in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.workers = [self.start_worker() for _ in range(self.settings.api_workers)]
            log.info("API workers started", extra={"workers": len(self.workers)})
            while not self.stopping.is_set():
                self._replace_dead()
                self.stopping.wait(RESTART_PAUSE_SECONDS)
        finally:
            self._stop_all()
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _replace_dead(self) -> None:
        for i, process in enumerate(self.workers):
            if process.is_alive() or self.stopping.is_set():
                continue
            log.warning(
                "API worker %s exited with %s; starting another", process.pid, process.exitcode
            )
            multiprocess.mark_process_dead(process.pid, str(self.metrics_dir))
            if self.signal is not None and process.pid is not None:
                self.signal.forget(process.pid)
            self.workers[i] = self.start_worker()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _stop_all(self) -> None:
        for process in self.workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in self.workers:
            process.join(STOP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()


def run_workers(settings: Settings, build: ServerFactory) -> None:
    """Serve with `settings.api_workers` processes, each running the server `build` makes,
    until SIGTERM or SIGINT."""
    configure_json_logging(settings.log_level)
    run_dir = Path(tempfile.mkdtemp(prefix="readmit-api-"))  # 0700
    metrics_dir = run_dir / "metrics"
    try:
        metrics_dir.mkdir(mode=0o700)
        use_multiprocess(metrics_dir)
        reload.use_folder(run_dir / "reload")
        with _listening_socket(settings) as sock:
            Supervisor(build, settings, sock, metrics_dir).run()
    finally:
        reload.use_folder(None)
        shutil.rmtree(run_dir, ignore_errors=True)
