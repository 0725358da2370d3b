"""MLflow's artifacts through the tracking server into the local S3 server's folder and back,
and a registered version whose artifacts are gone, as `readmit status`, the exporter and the
API's /health report it."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from typer.testing import CliRunner

from readmit import registry
from readmit.cli import app
from readmit.exporter import registry_for
from readmit.serving.app import create_app
from readmit.settings import Settings
from readmit.stack import s3
from readmit.stack.s3 import s3_env
from readmit.status import production_model
from tests.models import API_KEY, MODEL_INPUTS, log_and_register


def _bucket(mlflow_server):
    env = s3_env(mlflow_server.s3_endpoint)
    return s3.client(
        mlflow_server.s3_endpoint, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    )


def test_large_and_many_artifacts_go_to_disk_and_come_back_byte_for_byte(
    mlflow_server, tmp_path: Path
) -> None:
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    folder = tmp_path / "model"
    folder.mkdir()
    files = {
        "large.bin": os.urandom(40 * 2**20),  # over boto3's 8 MiB multipart threshold
        "MLmodel": b"flavors: {}\n",
        "empty.txt": b"",
        "nested/deeper/weights.npy": os.urandom(3000),
    }
    for name, body in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(body)
    experiment = mlflow.set_experiment("artifact-store")
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_artifacts(str(folder), "model")
    back = Path(
        mlflow.artifacts.download_artifacts(
            f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path / "back")
        )
    )
    for name, body in files.items():
        assert (back / name).read_bytes() == body, name
    prefix = f"{experiment.experiment_id}/{run.info.run_id}/artifacts/model/"
    on_disk = mlflow_server.s3_store / s3.BUCKET / (prefix + "large.bin" + s3.OBJECT_SUFFIX)
    assert on_disk.read_bytes() == files["large.bin"]


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_a_production_version_without_its_artifacts_is_reported_as_missing(
    mlflow_server, small_build, small_data, lightgbm_model, tmp_path: Path
) -> None:
    settings = small_build.settings.model_copy(
        update={
            **mlflow_server.client_settings,
            "model_name": "readmission_gone",
            "api_key": API_KEY,
            "model_poll_seconds": 3600,
        }
    )
    version = log_and_register(settings, lightgbm_model, small_data.test_inputs[MODEL_INPUTS])
    registry.promote(settings, version)
    assert production_model(settings).artifacts == "present"
    metric = "readmit_production_model_artifacts_present"
    assert _samples(generate_latest(registry_for(settings)).decode())[metric] == 1

    client = registry.client_for(settings)
    uri = client.get_model_version_download_uri(settings.model_name, version)
    prefix = uri.split(":/", 1)[1].strip("/") + "/"
    bucket = _bucket(mlflow_server)
    listed = bucket.list_objects_v2(Bucket=s3.BUCKET, Prefix=prefix).get("Contents", [])
    assert listed
    for item in listed:
        bucket.delete_object(Bucket=s3.BUCKET, Key=item["Key"])

    state = production_model(settings)
    assert (state.version, state.artifacts) == (version, "missing")
    assert f"artifacts of readmission_gone v{version} are missing" in state.detail
    assert _samples(generate_latest(registry_for(settings)).decode())[metric] == 0

    env = {
        "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
        "READMIT_MODEL_NAME": settings.model_name,
        "READMIT_DATA_DIR": str(settings.data_dir),
    }
    result = CliRunner().invoke(app, ["status"], env=env)
    assert result.exit_code == 0, result.output
    assert "missing from the artifact store" in result.output
    assert "Traceback" not in result.output

    with TestClient(create_app(settings)) as api:
        health = api.get("/health")
    assert health.status_code == 503
    detail = health.json()["detail"]
    assert f"artifacts of readmission_gone v{version} are missing" in detail, detail


def test_status_reports_an_unreachable_registry_without_a_trace(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, mlflow_tracking_uri="http://127.0.0.1:9")
    state = production_model(settings)
    assert state.artifacts == "unknown" and state.detail.startswith("registry unreachable")
