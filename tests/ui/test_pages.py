"""Each page, run by Streamlit's AppTest against the real API process of the stack."""

from __future__ import annotations

import httpx
import pytest

from readmit.serving.schemas import EXAMPLE
from readmit.settings import Settings
from readmit.stack.foreground import free_port, start_api
from readmit.ui import forms
from readmit.ui.client import ApiClient, ApiError
from readmit.ui.display import exact, percent, risk_band
from readmit.ui.views.explain import UP
from readmit.ui.views.predict import PROBABILITY
from tests.scraped import samples
from tests.ui.pages import assert_clean, captions, click, errors, metrics, open_page

PAGES = ["Single prediction", "Batch", "Explanation", "Model", "Monitoring", "Service"]


def _predicted_example(ui_env):
    app = open_page()
    click(app, "Load an example patient")
    assert app.selectbox(key="patient.a1cresult").value == ">7"
    assert app.selectbox(key="patient.weight").value == "?"
    return click(app, "Predict")


def test_the_example_patient_shows_the_api_probability_band_threshold_and_version(ui_env):
    expected = httpx.post(f"{ui_env.api_url}/predict", json=EXAMPLE, timeout=30).json()
    app = _predicted_example(ui_env)
    assert_clean(app)
    assert not errors(app)
    shown = metrics(app)
    probability, threshold = expected["probability"], expected["threshold"]
    assert shown[PROBABILITY] == percent(probability)
    assert shown["Risk band"] == risk_band(probability, threshold).name.capitalize()
    assert shown["Model threshold"] == percent(threshold)
    assert shown["Model version"] == expected["model"]["version"]
    assert any(f"Probability {exact(probability)}" in c for c in captions(app))
    assert app.session_state["patient"] == forms.to_record(forms.example_values())


def _api_calls(api_url: str, endpoint: str) -> float:
    """Requests the API has answered on one endpoint, by its own /metrics."""
    scraped = samples(httpx.get(f"{api_url}/metrics", timeout=30).text)
    return sum(
        v
        for (name, labels), v in scraped.items()
        if name == "readmit_http_requests_total" and ("endpoint", endpoint) in labels
    )


def test_a_typed_code_is_sent_and_a_bad_one_is_refused_before_sending(ui_env):
    # AppTest cannot type into a selectbox; a typed value arrives in session state the same way.
    app = open_page(**{"patient.diag_1": "V58.1"})
    assert app.selectbox(key="patient.diag_1").value == "V58.1"
    sent = _api_calls(ui_env.api_url, "/predict")
    click(app, "Predict")
    assert not errors(app) and PROBABILITY in metrics(app)
    assert app.session_state["patient"]["diag_1"] == "V58.1"
    assert _api_calls(ui_env.api_url, "/predict") == sent + 1
    app = open_page(**{"patient.diag_1": "not-a-code"})
    sent = _api_calls(ui_env.api_url, "/predict")
    click(app, "Predict")
    assert any("Primary diagnosis (ICD-9)" in e for e in errors(app))
    assert_clean(app)
    assert _api_calls(ui_env.api_url, "/predict") == sent  # the API received nothing


def _explained(api_url: str, record: dict, top: int) -> dict:
    response = httpx.post(f"{api_url}/explain", params={"top": top}, json=record, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _assert_table_is(app, expected: dict) -> None:
    """The page's table row by row: the API's fields in its order, their labels, their values."""
    table = app.dataframe[0].value
    fields = [c["field"] for c in expected["contributions"]]
    assert list(table["API name"]) == fields
    assert list(table["Field"]) == [forms.label(f) for f in fields]
    assert list(table["Contribution"]) == [c["contribution"] for c in expected["contributions"]]


def test_the_explanation_plots_the_signed_contributions_of_the_current_patient(ui_env):
    app = _predicted_example(ui_env)
    app.sidebar.radio(key="page").set_value("Explanation").run()
    assert_clean(app)
    assert not errors(app)
    # The record the page explains is the one predicted; the API explains it independently.
    expected = _explained(ui_env.api_url, app.session_state["patient"], top=10)
    shown = metrics(app)
    assert shown["Base value (log-odds)"] == f"{expected['base_value']:+.3f}"
    assert shown["This patient (log-odds)"] == f"{expected['margin']:+.3f}"
    assert shown[PROBABILITY] == percent(expected["probability"])
    assert len(app.get("vega_lite_chart")) == 1
    _assert_table_is(app, expected)
    assert "HbA1c result" in forms.label("a1cresult")
    assert any("Red bars push towards a readmission" in c for c in captions(app))
    assert UP == "raises the risk"


def test_the_explanation_without_a_prediction_explains_the_form_values(ui_env):
    app = open_page("Explanation")
    assert_clean(app)
    assert any("No prediction yet" in i.value for i in app.info)
    app.slider(key="explain_top").set_value(5).run()
    expected = _explained(ui_env.api_url, forms.to_record(forms.default_values()), top=5)
    assert len(expected["contributions"]) == 5
    _assert_table_is(app, expected)


def test_the_model_page_shows_model_info_metrics_and_the_run_plots(ui_env):
    info = httpx.get(f"{ui_env.api_url}/model-info", timeout=30).json()
    app = open_page("Model")
    assert_clean(app)
    assert not errors(app)
    shown = metrics(app)
    assert shown["Model version"] == info["version"]
    assert shown["Test ROC-AUC"] == f"{info['test_metrics']['roc_auc']:.3f}"
    assert shown["Threshold"] == exact(info["threshold"])
    table = app.dataframe[0].value
    assert "ROC-AUC" in set(table["Metric"]) and "Brier score" in set(table["Metric"])
    assert len(app.image) == 6  # roc, pr, calibration, confusion, shap; the decision curve
    assert any(info["run_id"] in c for c in captions(app))


def test_the_model_page_shows_the_card_the_subgroup_table_and_the_decision_curve(ui_env):
    info = httpx.get(f"{ui_env.api_url}/model-info", timeout=30).json()
    assert info["model_card"] == "/model-card"
    assert info["model_card_artifact"] == f"runs:/{info['run_id']}/model_card/model_card.md"
    card = httpx.get(f"{ui_env.api_url}/model-card", timeout=30)
    assert card.headers["content-type"].startswith("text/markdown")
    assert info["clean_build"] in card.text
    assert f"{info['test_metrics']['roc_auc']:.4f} [" in card.text
    page = httpx.get(f"{ui_env.api_url}/model-card", params={"format": "html"}, timeout=30)
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<!doctype html>") and info["clean_build"] in page.text
    app = open_page("Model")
    assert_clean(app)
    assert not errors(app)
    shown = [m.value for m in app.markdown]
    assert card.text.strip() in shown  # the card as the API serves it
    table = next(d.value for d in app.dataframe if "Attribute" in d.value.columns)
    assert set(table["Attribute"]) == {"race", "gender", "age_band", "payer", "admission_type"}
    assert {"ROC-AUC", "ROC-AUC 95% CI", "Positives", "Small"} <= set(table.columns)
    assert "small" in set(table["Small"])  # small groups are shown, marked


def test_the_model_page_says_so_when_mlflow_is_unreachable(ui_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    app = open_page("Model")
    assert_clean(app)
    assert "Model version" in metrics(app)  # the API part still shows
    assert any("could not be fetched from MLflow" in e for e in errors(app))
    assert not app.image


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_service_page_shows_totals_then_rates_after_a_refresh(ui_env):
    for _ in range(3):
        httpx.post(f"{ui_env.api_url}/predict", json=EXAMPLE, timeout=30)
    httpx.post(f"{ui_env.api_url}/predict", json={**EXAMPLE, "gender": "Robot"}, timeout=30)
    app = open_page("Service")
    assert_clean(app)
    shown = metrics(app)
    assert _number(shown["Requests"]) >= 4
    assert shown["Error rate"] != "n/a" and float(shown["Error rate"].rstrip("%")) > 0
    assert shown["Latency p50"].endswith(" ms") and shown["Latency p95"].endswith(" ms")
    assert _number(shown["readmitted_30d"]) + _number(shown["not_readmitted"]) >= 3
    assert any("totals since the API started" in c for c in captions(app))
    table = app.dataframe[0].value
    assert {"/predict", "/health"} <= set(table["Endpoint"])
    httpx.post(f"{ui_env.api_url}/predict", json=EXAMPLE, timeout=30)
    click(app, "Refresh")
    shown = metrics(app)
    assert shown["Request rate"].endswith("/s")
    assert any("rates over the" in c for c in captions(app))


@pytest.mark.parametrize("page", PAGES)
def test_an_unreachable_api_gives_a_clear_message_on_every_page(page, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("READMIT_API_URL", url)
    app = open_page(page)
    assert_clean(app)
    assert any("unreachable" in e and url in e for e in errors(app))
    assert "Try again" in [b.label for b in app.button]


@pytest.fixture(scope="module")
def api_without_model(tmp_path_factory):
    """A live API whose registry has no @production model: every model call answers 503."""
    folder = tmp_path_factory.mktemp("empty-api")
    port = free_port()
    env = {
        "READMIT_DATA_DIR": str(folder),
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db",
        "READMIT_API_PORT": str(port),
        "READMIT_MODEL_POLL_SECONDS": "3600",
    }
    api = start_api(Settings(data_dir=folder, api_port=port), folder / "api.log", env)
    try:
        yield api.url
    finally:
        api.stop()


def test_api_errors_are_shown_as_messages(api_without_model, monkeypatch):
    monkeypatch.setenv("READMIT_API_URL", api_without_model)
    app = open_page()
    assert any("No model loaded" in w.value for w in app.sidebar.warning)
    click(app, "Predict")
    assert_clean(app)
    assert any(
        e.startswith("The API has no model to serve: no model is loaded") for e in errors(app)
    )
    for page in ("Explanation", "Model"):
        app.sidebar.radio(key="page").set_value(page).run()
        assert_clean(app)
        assert any("The API has no model to serve" in e for e in errors(app))


def test_the_client_names_the_refused_field(stack):
    client = ApiClient(stack.api_url)
    with pytest.raises(ApiError, match=r"rejected the input: gender: Input should be") as caught:
        client.predict({**forms.to_record(forms.default_values()), "gender": "Robot"})
    assert caught.value.status == 422
    with pytest.raises(ApiError, match="top"):
        client.explain(forms.to_record(forms.default_values()), top=0)
