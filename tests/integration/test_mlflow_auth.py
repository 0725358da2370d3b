"""The MLflow server answers only to logged-in clients; readmit's clients log in from the
settings; the login never shows in a process's argv."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from readmit import registry, tracking
from readmit.settings import Settings
from readmit.stack.processes import descendants
from readmit.tracking import MlflowUnavailable

CREATE_MODEL = "/api/2.0/mlflow/registered-models/create"


def test_a_client_without_the_login_is_refused(mlflow_server) -> None:
    url = mlflow_server.tracking_uri
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    anonymous = httpx.post(f"{url}{CREATE_MODEL}", json={"name": "intruder"}, timeout=10)
    assert anonymous.status_code == 401
    wrong = httpx.post(
        f"{url}{CREATE_MODEL}",
        json={"name": "intruder"},
        timeout=10,
        auth=(mlflow_server.username, "not-the-password"),
    )
    assert wrong.status_code == 401
    search = httpx.get(
        f"{url}/api/2.0/mlflow/registered-models/search",
        timeout=10,
        auth=(mlflow_server.username, mlflow_server.password),
    )
    assert "intruder" not in {m["name"] for m in search.json().get("registered_models", [])}


def test_readmit_clients_log_in_from_the_settings(
    mlflow_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    anonymous = Settings(data_dir=tmp_path, mlflow_tracking_uri=mlflow_server.tracking_uri)
    with pytest.raises(MlflowUnavailable, match="asks for a login"):
        tracking.connect(anonymous)
    wrong = Settings(
        data_dir=tmp_path,
        mlflow_tracking_uri=mlflow_server.tracking_uri,
        mlflow_tracking_username=mlflow_server.username,
        mlflow_tracking_password="x" * 16,
    )
    with pytest.raises(MlflowUnavailable, match="refused the login"):
        tracking.connect(wrong)
    logged_in = Settings(
        data_dir=tmp_path,
        mlflow_tracking_uri=mlflow_server.tracking_uri,
        mlflow_tracking_username=mlflow_server.username,
        mlflow_tracking_password=mlflow_server.password,
    )
    client = registry.client_for(logged_in)
    created = client.create_registered_model("readmission_auth_check")
    assert created.name == "readmission_auth_check"


def test_the_server_argv_holds_no_secret(mlflow_server) -> None:
    lines = []
    for pid in [mlflow_server.pid, *descendants([mlflow_server.pid])]:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    assert any("--app-name basic-auth" in line for line in lines), lines
    for line in lines:
        assert mlflow_server.password not in line
        assert "postgresql" not in line
