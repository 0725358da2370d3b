"""Local state holds patient numbers: the data dir is 0700, its databases and cache 0600."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from readmit.dataset import Dataset, load_dataset, order_by_encounter
from readmit.pipeline.clean import build_clean
from readmit.pipeline.ingest import ingest
from readmit.settings import Settings
from tests.synthetic import synthetic_rows


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The usual umask, under which files are world-readable unless created otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_ingest_and_clean_create_a_private_data_dir_and_databases(tmp_path):
    settings = Settings(data_dir=tmp_path / "new" / "state", batch_size=1000)
    frame = order_by_encounter(synthetic_rows(1000, seed=1))
    ingest(settings, dataset=Dataset(frame, hashlib.sha256(b"p").hexdigest(), "synthetic"))
    build_clean(settings)
    assert _mode(tmp_path / "new") == 0o700
    assert _mode(settings.data_dir) == 0o700
    files = sorted(p.name for p in settings.data_dir.iterdir() if p.is_file())
    assert "raw.db" in files and "clean.db" in files
    assert {name: _mode(settings.data_dir / name) for name in files} == dict.fromkeys(files, 0o600)


def test_an_existing_world_readable_database_is_made_private(tmp_path):
    settings = Settings(data_dir=tmp_path, batch_size=1000)
    database = tmp_path / "raw.db"
    database.touch(mode=0o644)
    frame = order_by_encounter(synthetic_rows(1000, seed=1))
    ingest(settings, dataset=Dataset(frame, hashlib.sha256(b"p").hexdigest(), "synthetic"))
    assert _mode(database) == 0o600


def test_the_downloaded_data_set_cache_is_private(tmp_path):
    buffer = io.StringIO()
    synthetic_rows(50).to_csv(buffer, index=False)
    body = buffer.getvalue().encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/diabetic_data.csv"
        settings = Settings(
            data_dir=tmp_path / "state",
            dataset_uri=url,
            dataset_sha256=hashlib.sha256(body).hexdigest(),
        )
        assert len(load_dataset(settings, show_progress=False).frame) == 50
    finally:
        server.shutdown()
    assert _mode(settings.data_dir) == 0o700
    assert _mode(settings.download_dir) == 0o700
    assert _mode(settings.download_dir / "diabetic_data.csv") == 0o600
