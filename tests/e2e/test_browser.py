"""A real browser loads the UI, scores the example patient, and visits every page; the
screenshots are kept (READMIT_TEST_ARTIFACTS, else the test's temporary folder)."""

from __future__ import annotations

import re

import httpx
import pytest

from readmit.serving.schemas import EXAMPLE
from readmit.ui.display import exact, percent
from readmit.ui.views.predict import PROBABILITY
from tests.ui.stack import artifacts_dir

TIMEOUT = 60_000  # ms: the first load of the app on a busy machine takes a while


@pytest.fixture
def page(browser, ui_url):
    context = browser.new_context(viewport={"width": 1400, "height": 2300})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(ui_url)
    yield page
    context.close()


def _metric(page, label: str) -> str:
    metric = page.get_by_test_id("stMetric").filter(has_text=label)
    return metric.get_by_test_id("stMetricValue").inner_text().strip()


def _go(page, name: str) -> None:
    page.get_by_test_id("stSidebar").get_by_text(name, exact=True).click()


def _settle(page) -> None:
    """Wait until Streamlit has finished the current run."""
    page.wait_for_timeout(300)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden")


def test_a_browser_scores_the_example_patient_and_shows_every_page(
    page, stack, tmp_path, full_dataset
):
    shots = artifacts_dir(tmp_path)
    expected = httpx.post(f"{stack.api_url}/predict", json=EXAMPLE, timeout=30).json()

    page.get_by_role("button", name="Load an example patient").click()
    _settle(page)
    page.get_by_role("button", name="Predict", exact=True).click()
    page.get_by_test_id("stMetric").filter(has_text=PROBABILITY).wait_for()
    _settle(page)
    assert _metric(page, PROBABILITY) == percent(expected["probability"])
    assert _metric(page, "Model version") == expected["model"]["version"]
    page.get_by_text(f"Probability {exact(expected['probability'])};").wait_for()
    page.get_by_role("heading", name="Single prediction").scroll_into_view_if_needed()
    page.screenshot(path=shots / "1-single-prediction.png", full_page=True)

    _go(page, "Explanation")
    page.get_by_test_id("stMetric").filter(has_text="Base value").wait_for()
    page.locator(
        "[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg"
    ).first.wait_for()
    _settle(page)
    page.screenshot(path=shots / "2-explanation.png", full_page=True)

    _go(page, "Batch")
    sample = full_dataset.frame.head(700).to_csv(index=False)
    (tmp_path / "ward.csv").write_text(sample)
    page.locator("input[type='file']").set_input_files(str(tmp_path / "ward.csv"))
    page.get_by_role("button", name="Score the file").click()
    page.get_by_test_id("stMetric").filter(has_text="Scored").wait_for()
    _settle(page)
    assert _metric(page, "Scored") == "700" and _metric(page, "Rejected") == "0"
    page.screenshot(path=shots / "3-batch.png", full_page=True)

    _go(page, "Model")
    page.get_by_text("Evaluation plots").wait_for()
    images = page.get_by_test_id("stImage").locator("img")
    images.nth(5).wait_for()
    page.wait_for_function("[...document.images].every(i => i.complete)")
    _settle(page)
    assert images.count() == 6  # the decision curve, then roc, pr, calibration, confusion, shap
    page.screenshot(path=shots / "4-model.png", full_page=True)

    _go(page, "Service")
    page.get_by_test_id("stMetric").filter(has_text="Latency p95").wait_for()
    _settle(page)
    assert re.fullmatch(r"[\d,.]+ ms", _metric(page, "Latency p95"))
    page.screenshot(path=shots / "5-service.png", full_page=True)

    assert sorted(p.name for p in shots.glob("*.png"))[:5] == [
        "1-single-prediction.png",
        "2-explanation.png",
        "3-batch.png",
        "4-model.png",
        "5-service.png",
    ]
