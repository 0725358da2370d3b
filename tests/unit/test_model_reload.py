"""/reload-model under several workers: the shared generation counter, the acknowledgements,
and a worker's poll thread acting on a generation raised by another worker (real files and
threads; the registry is left out: `refresh` only counts)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from readmit.serving import reload
from readmit.serving.metrics import Metrics
from readmit.serving.model_store import ModelStore
from readmit.settings import Settings

BOUND = 10.0  # seconds; against hanging only


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    shared = tmp_path / "reload"
    reload.use_folder(shared)
    yield shared
    reload.use_folder(None)


class CountingStore(ModelStore):
    """A ModelStore whose check of `@production` only counts."""

    refreshes = 0

    def refresh(self) -> bool:
        self.refreshes += 1
        return False


def _store(tmp_path: Path, poll: float) -> CountingStore:
    settings = Settings(data_dir=tmp_path, model_poll_seconds=poll, api_workers=2)
    return CountingStore(settings, Metrics())


def _until(condition) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_one_process_has_no_signal(tmp_path):
    store = _store(tmp_path, 3600)
    assert store.signal is None
    assert store.reload_everywhere() == (False, False, None)


def test_generations_and_acknowledgements(folder):
    signal = reload.shared(2)
    assert signal is not None and signal.generation() == 0
    assert [signal.request(), signal.request()] == [1, 2]
    signal.acknowledge(2)
    assert (signal.confirmed(2), signal.confirmed(3)) == (1, 0)
    (folder / reload.ACKS / "4242").write_text("2")  # another worker's
    assert signal.wait(2, timeout=BOUND) == 2
    signal.forget(4242)  # it died
    assert signal.wait(2, timeout=0.3) == 1  # waited its time, then says how many


def _raise(folder: Path, times: int) -> None:
    reload.use_folder(folder)
    signal = reload.shared(2)
    assert signal is not None
    for _ in range(times):
        signal.request()


def test_requests_at_once_each_get_a_generation(folder):
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_raise, args=(folder, 200)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(BOUND)
    signal = reload.shared(2)
    assert signal is not None and signal.generation() == 400


def test_a_worker_checks_production_when_another_raises_the_generation(folder, tmp_path):
    store = _store(tmp_path, 3600)  # its own polling is an hour away
    store.start()
    try:
        assert store.refreshes == 1  # the load at start
        other = reload.shared(2)
        assert other is not None
        generation = other.request()
        _until(lambda: other.confirmed(generation) == 1)
        assert store.refreshes == 2
    finally:
        store.stop()


def test_the_request_waits_for_every_worker_and_says_how_many_answered(
    folder, tmp_path, monkeypatch
):
    monkeypatch.setattr(reload, "WAIT_SECONDS", 0.5)
    store = _store(tmp_path, 3600)
    store.start()
    try:
        (folder / reload.ACKS / "4242").write_text("0")  # a sibling that never answers
        assert store.reload_everywhere() == (False, False, "1 of 2 workers checked @production")
        time.sleep(3 * reload.CHECK_SECONDS)
        assert store.refreshes == 2  # at start, and once for the request: not again
    finally:
        store.stop()


def test_polling_goes_on_beside_the_signal(folder, tmp_path):
    store = _store(tmp_path, 0.3)
    store.start()
    try:
        _until(lambda: store.refreshes >= 3)
    finally:
        store.stop()


def test_each_worker_publishes_the_version_it_serves_and_a_dead_ones_is_forgotten(folder, tmp_path):
    store = ModelStore(Settings(data_dir=tmp_path, api_workers=3), Metrics())
    assert store.workers_serving() == {reload.NONE: 3}
    served = SimpleNamespace(version=None)

    def refresh() -> bool:
        store.champion._current = served if served.version else None  # type: ignore[assignment]
        return True

    store.champion.refresh = refresh  # type: ignore[method-assign]
    store.refresh()
    assert store.workers_serving() == {reload.NONE: 3}  # no model yet
    served.version = "3"
    store.refresh()
    assert store.workers_serving() == {"3": 1, reload.NONE: 2}
    (folder / reload.SERVING / "4242").write_text("2")  # a sibling still on v2
    assert store.workers_serving() == {"3": 1, "2": 1, reload.NONE: 1}
    assert store.signal is not None
    store.signal.forget(4242)  # it died
    assert store.workers_serving() == {"3": 1, reload.NONE: 2}
