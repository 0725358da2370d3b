"""The API on a real small model registered in a temporary MLflow (TestClient, in process)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from anyio import to_thread
from fastapi.testclient import TestClient

from readmit import registry
from readmit.model import Calibration
from readmit.serving import model_store, reload
from readmit.serving.app import create_app
from readmit.serving.schemas import EXAMPLE
from readmit.settings import Settings
from readmit.tracking import connect
from tests.integration.conftest import Served
from tests.models import API_KEY, MODEL_INPUTS, log_and_register, records
from tests.scraped import samples, total, value


def test_health_is_ready_with_the_production_version(served):
    response = served.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert (
        body["ready"] and body["live"] and body["model"] == {"name": "readmission", "version": "1"}
    )


def test_predict_returns_the_models_probability(served):
    response = served.client.post("/predict", json=EXAMPLE, headers={"X-Request-ID": "abc-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    record = {**{k: ("?" if v is None else v) for k, v in EXAMPLE.items()}}
    assert body["probability"] == served.model.predict_record(record)
    assert body["readmitted_30d"] == (body["probability"] >= 0.12)
    assert body["threshold"] == 0.12 and body["model"]["version"] == "1"
    assert body["request_id"] == "abc-1" == response.headers["x-request-id"]


def test_the_fast_path_equals_the_registered_models_own_predict_on_thousands_of_rows(served):
    connect(served.settings)  # tracking and registry URIs: other tests may have moved them
    pyfunc = mlflow.pyfunc.load_model(registry.production_uri(served.settings))
    expected = pyfunc.predict(served.inputs)["probability"].to_numpy()
    loaded = served.client.app.state.store.current.model
    fast = np.array([loaded.predict_record(r) for r in served.inputs.to_dict("records")])
    assert len(fast) > 2000
    np.testing.assert_array_equal(fast, expected)


def test_predict_batch_keeps_order_and_reports_bad_records_by_index_and_field(served):
    payload = records(served.inputs.head(40))
    payload[7] = {**payload[7], "num_medications": -2}
    payload[21] = {**payload[21], "gender": "Robot"}
    response = served.client.post("/predict-batch", json={"records": payload})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]] == list(range(40))
    assert (body["scored"], body["rejected"]) == (38, 2)
    assert (
        "num_medications" in body["results"][7]["error"]
        and body["results"][7]["probability"] is None
    )
    assert "gender" in body["results"][21]["error"]
    expected = served.model.predict_frame(served.inputs.head(40))
    for i, result in enumerate(body["results"]):
        if i not in (7, 21):
            assert result["probability"] == expected[i]


def test_explain_sums_back_to_the_prediction(served):
    full = served.client.post("/explain?top=100", json=EXAMPLE).json()
    predicted = served.client.post("/predict", json=EXAMPLE).json()["probability"]
    assert full["probability"] == pytest.approx(predicted, abs=1e-12)
    total = full["base_value"] + sum(c["contribution"] for c in full["contributions"])
    assert total == pytest.approx(full["margin"], abs=1e-6)
    assert Calibration(0.9, -0.1).apply_one(full["margin"]) == pytest.approx(predicted, abs=1e-6)
    fields = [c["field"] for c in full["contributions"]]
    assert "diag_1" in fields and not any("=" in f for f in fields)  # no one-hot columns
    top = served.client.post("/explain?top=5", json=EXAMPLE).json()["contributions"]
    assert len(top) == 5
    sizes = [abs(c["contribution"]) for c in top]
    assert sizes == sorted(sizes, reverse=True)


def test_model_info(served):
    body = served.client.get("/model-info").json()
    assert body["version"] == "1" and body["alias"] == "production"
    assert body["run_id"] == "r1" and body["estimator"] == "lightgbm"
    assert body["test_metrics"]["roc_auc"] == 0.66 and body["threshold"] == 0.12
    assert "prior_encounters" in body["features"] and "a1cresult" in body["features"]
    assert body["model_card"] == "/model-card"
    assert body["model_card_artifact"] == "runs:/r1/model_card/model_card.md"


def test_a_model_card_that_cannot_be_read_is_a_503_naming_the_run(served):
    # The served model names run "r1", which the tracking store does not have.
    for params in ({}, {"format": "html"}):
        response = served.client.get("/model-card", params=params)
        assert response.status_code == 503
        assert "model card: model_card/model_card." in response.json()["detail"]
        assert "of run r1 could not be read" in response.json()["detail"]
    assert served.client.get("/model-card", params={"format": "pdf"}).status_code == 422


def test_metrics_count_requests_predictions_and_the_model(served):
    before = samples(served.client.get("/metrics").text)
    served.client.post("/predict", json=EXAMPLE)
    served.client.post("/predict", json={**EXAMPLE, "age": "old"})
    after = samples(served.client.get("/metrics").text)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        grew("readmit_http_requests_total", endpoint="/predict", method="POST", status="200") == 1
    )
    assert (
        grew("readmit_http_requests_total", endpoint="/predict", method="POST", status="422") == 1
    )
    assert grew("readmit_http_errors_total", endpoint="/predict", status="422") == 1
    assert grew("readmit_http_errors_total", endpoint="/predict", status="200") == 0
    assert grew("readmit_http_request_duration_seconds_count", endpoint="/predict") == 2
    assert (
        total(after, "readmit_predictions_total") - total(before, "readmit_predictions_total") == 1
    )
    assert grew("readmit_prediction_probability_count", variant="champion") == 1
    assert value(after, "readmit_model_info", name="readmission", version="1") == 1.0
    assert value(after, "readmit_model_loaded") == 1.0
    assert value(after, "readmit_model_test_roc_auc") == 0.66


def test_reload_needs_the_api_key(served):
    assert served.client.post("/reload-model").status_code == 401
    assert served.client.post("/reload-model", headers={"X-API-Key": "wrong"}).status_code == 401
    ok = served.client.post("/reload-model", headers={"X-API-Key": API_KEY})
    assert ok.status_code == 200 and ok.json()["changed"] is False


@pytest.fixture
def own_served(small_data, lightgbm_model, tmp_path):
    """An API of its own, for a test that promotes another version (the shared one stays at
    version 1)."""
    settings = Settings(
        data_dir=tmp_path,
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        api_key=API_KEY,
        model_poll_seconds=3600,
    )
    inputs = small_data.test_inputs[MODEL_INPUTS]
    registry.promote(settings, log_and_register(settings, lightgbm_model, inputs))
    with TestClient(create_app(settings)) as client:
        yield Served(settings, client, lightgbm_model, inputs)


def test_a_failed_load_keeps_the_old_model_serving_and_is_counted(
    own_served, lightgbm_model, monkeypatch
):
    served = own_served
    new_version = log_and_register(served.settings, lightgbm_model, served.inputs)
    registry.promote(served.settings, new_version)

    def broken(settings, version):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(model_store, "load_version", broken)
    result = served.client.post("/reload-model", headers={"X-API-Key": API_KEY}).json()
    assert result["changed"] is False and "disk full" in result["detail"]
    assert served.client.post("/predict", json=EXAMPLE).json()["model"]["version"] == "1"
    scraped = samples(served.client.get("/metrics").text)
    assert value(scraped, "readmit_model_reload_failures_total", step="load") == 1
    monkeypatch.undo()
    result = served.client.post("/reload-model", headers={"X-API-Key": API_KEY}).json()
    assert result["changed"] is True and result["model"]["version"] == new_version
    assert served.client.post("/predict", json=EXAMPLE).json()["model"]["version"] == new_version


def test_unreachable_registry_keeps_the_model_serving(served, monkeypatch):
    store = served.client.app.state.store
    before = store.current.version

    def down(self):
        raise ConnectionError("mlflow is down (simulated)")

    monkeypatch.setattr(model_store.ServedAlias, "holder", down)
    assert store.refresh() is False
    response = served.client.post("/predict", json=EXAMPLE)
    assert response.status_code == 200 and response.json()["model"]["version"] == before
    assert "mlflow is down" in served.client.get("/health").json()["detail"]


def test_without_a_production_model_the_service_runs_but_is_not_ready(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        model_poll_seconds=3600,
    )
    with TestClient(create_app(settings)) as client:
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "not_ready"
        response = client.post("/predict", json=EXAMPLE)
        assert response.status_code == 503
        assert "no model is loaded" in response.json()["detail"]
        assert client.get("/model-info").status_code == 503
        assert client.get("/metrics").status_code == 200


def test_under_two_workers_health_is_ready_only_once_both_serve_and_counts_their_versions(
    registered, tmp_path
):
    shared = tmp_path / "run"
    reload.use_folder(shared)  # as the supervisor does before it forks the workers
    try:
        settings = registered.model_copy(
            update={"data_dir": tmp_path, "api_workers": 2, "prediction_log_enabled": False}
        )
        with TestClient(create_app(settings)) as client:
            waiting = client.get("/health")
            assert waiting.status_code == 503
            body = waiting.json()
            assert body["ready"] is False and body["live"] is True
            assert body["model"]["version"] == "1"  # this worker serves; its sibling does not
            assert body["workers"] == {"1": 1, "none": 1}
            assert body["detail"] == "1 of 2 workers have no model yet"

            (shared / reload.SERVING / "4242").write_text("1")  # the sibling has loaded v1
            ready = client.get("/health")
            assert ready.status_code == 200 and ready.json()["workers"] == {"1": 2}

            (shared / reload.SERVING / "4242").write_text("2")  # it took a promotion first
            assert client.get("/health").json()["workers"] == {"1": 1, "2": 1}
    finally:
        reload.use_folder(None)


def test_handlers_run_in_as_many_pool_threads_as_set(registered, tmp_path):
    settings = registered.model_copy(
        update={"data_dir": tmp_path, "api_threads": 3, "prediction_log_enabled": False}
    )
    with TestClient(create_app(settings)) as client:
        limiter = client.portal.call(to_thread.current_default_thread_limiter)
        assert limiter.total_tokens == 3
        assert client.post("/predict", json=EXAMPLE).status_code == 200
        assert limiter.borrowed_tokens == 0
