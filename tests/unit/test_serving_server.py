"""The connection cap of `readmit serve` never exceeds what the open-file limit allows."""

from __future__ import annotations

import resource

import pytest

from readmit.serving import server
from readmit.settings import Settings


def test_max_connections_is_lowered_to_fit_the_open_file_limit(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    fitted = server.fitted_to_open_files(Settings(max_connections=5000))
    assert fitted.max_connections == 1024 - server.FILES_RESERVED


def test_max_connections_under_the_limit_is_kept(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert server.fitted_to_open_files(Settings(max_connections=100)).max_connections == 100


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.example", "[2001:db8::1]"])
def test_an_open_address_without_keys_is_refused_naming_the_way_out(host):
    with pytest.raises(server.OpenBindRefused) as refused:
        server.check_bind(Settings(api_host=host, auth="none"))
    message = str(refused.value)
    assert "\n" not in message
    assert host in message and "READMIT_AUTH=keys" in message
    assert "READMIT_ALLOW_OPEN_BIND=true" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_keys(host):
    server.check_bind(Settings(api_host=host, auth="none"))


def test_an_open_address_is_served_with_keys_or_when_allowed_on_purpose():
    server.check_bind(Settings(api_host="0.0.0.0", auth="keys"))
    server.check_bind(Settings(api_host="0.0.0.0", auth="none", allow_open_bind=True))


def test_readmit_serve_refuses_before_binding(monkeypatch, tmp_path):
    """The CLI prints the reason on one line and exits 1; nothing listens."""
    from typer.testing import CliRunner

    from readmit.cli import app

    def never(*args, **kwargs):
        raise AssertionError("bound a socket")

    monkeypatch.setattr(server, "build_server", never)
    env = {"READMIT_API_HOST": "0.0.0.0", "READMIT_AUTH": "none", "READMIT_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["serve"], env=env)
    assert result.exit_code == 1
    assert "not serving on 0.0.0.0 with READMIT_AUTH=none" in result.output
    assert "Traceback" not in result.output
