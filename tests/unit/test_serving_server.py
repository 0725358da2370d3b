"""The connection cap of `readmit serve` never exceeds what the open-file limit allows."""

from __future__ import annotations

import resource

from readmit.serving import server
from readmit.settings import Settings


def test_max_connections_is_lowered_to_fit_the_open_file_limit(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    fitted = server.fitted_to_open_files(Settings(max_connections=5000))
    assert fitted.max_connections == 1024 - server.FILES_RESERVED


def test_max_connections_under_the_limit_is_kept(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert server.fitted_to_open_files(Settings(max_connections=100)).max_connections == 100
