"""The Monitoring page under AppTest, over the monitoring runs of real traffic: records
replayed through the stack's API with a unit error in `time_in_hospital`, their true outcomes
loaded, and a real monitoring run over them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from readmit.monitoring.monitor import run_monitor
from readmit.monitoring.outcomes import record_outcomes
from readmit.monitoring.simulate import simulate, split_encounters
from readmit.settings import Settings
from readmit.storage import monitor
from tests.monitoring import record_a_monitoring_run, wait_until
from tests.ui.pages import assert_clean, errors, metrics, open_page


@pytest.fixture(scope="module")
def monitored(stack, dataset_uri):
    """A monitoring run over 1,200 shifted predictions of the stack's API, all labelled."""
    settings = stack.settings.model_copy(update={"dataset_uri": dataset_uri})
    pool = split_encounters(settings)
    start = datetime.now(UTC)
    result = simulate(
        settings, stack.api_url, "hours-for-days", 1_200, outcomes=False, encounters=pool
    )
    assert result.scored == 1_200
    engine = monitor.monitor_engine(settings)
    wait_until(lambda: len(monitor.read_window(engine, since=start)) >= 1_200, "the log")
    logged = set(monitor.read_window(engine)["encounter_id"].dropna().astype(int))
    labels = pool.drop_duplicates("encounter_id").set_index("encounter_id")["readmitted"]
    record_outcomes(engine, [(e, labels[e]) for e in sorted(logged) if e in labels.index])
    engine.dispose()
    return run_monitor(settings)


@pytest.fixture
def page_env(ui_env, monkeypatch):
    monkeypatch.setenv("READMIT_DATA_DIR", str(ui_env.folder))
    monkeypatch.delenv("READMIT_MONITOR_DB_URL", raising=False)
    return ui_env


def test_the_page_shows_the_latest_verdict_the_shifted_field_and_the_live_auc(page_env, monitored):
    app = open_page("Monitoring")
    assert_clean(app)
    assert not errors(app)
    shown = metrics(app)
    assert shown["Verdict"] == monitored.verdict
    assert shown["Rows"] == f"{monitored.rows:,}"
    assert shown["Labelled rows"] == f"{monitored.labelled_rows:,}"
    assert shown["Live ROC-AUC"] == f"{monitored.live_auc:.3f}"
    drift = app.dataframe[0].value
    drifted = drift[drift["Drifted"]]["Field"].tolist()
    assert "time_in_hospital" in drifted and sorted(drifted) == sorted(monitored.drifted_features)
    history = app.dataframe[1].value
    assert history["Live ROC-AUC"].iloc[-1] == pytest.approx(monitored.live_auc)
    assert any(monitored.mlflow_run_id in c.value for c in app.caption)


def test_without_any_run_the_page_says_how_to_make_one(ui_env, monkeypatch, tmp_path):
    monkeypatch.setenv("READMIT_DATA_DIR", str(tmp_path))
    app = open_page("Monitoring")
    assert_clean(app)
    assert any("No monitoring run yet" in i.value for i in app.info)


def test_an_unreachable_monitor_db_is_one_error_without_its_password(ui_env, monkeypatch):
    url = "postgresql+psycopg://monitor:s3cret-pw@127.0.0.1:1/monitor"
    monkeypatch.setenv("READMIT_MONITOR_DB_URL", url)
    app = open_page("Monitoring")
    assert_clean(app)
    (message,) = errors(app)
    assert "monitor-db at" in message and "cannot be read" in message
    assert "s3cret-pw" not in message


def test_the_model_page_shows_the_latest_champion_challenger_comparison(
    ui_env, monkeypatch, tmp_path
):
    settings = Settings(data_dir=tmp_path)
    record_a_monitoring_run(settings)  # with a comparison: keep, +0.010 [-0.004, +0.024]
    engine = monitor.monitor_engine(settings)
    with engine.connect() as conn:
        (stored,) = monitor.latest_comparisons(conn, 1)
    engine.dispose()
    monkeypatch.setenv("READMIT_DATA_DIR", str(tmp_path))
    app = open_page("Model")
    assert_clean(app)
    assert not errors(app)
    shown = metrics(app)
    figures = stored["figures"]
    assert shown["Decision"] == stored["decision"]
    assert shown["ROC-AUC difference"] == f"{figures['auc_difference']:+.3f}"
    assert shown["95% interval"] == f"[{figures['ci_low']:+.3f}, {figures['ci_high']:+.3f}]"
    table = next(d.value for d in app.dataframe if "Live ROC-AUC" in d.value.columns)
    assert table["Version"].tolist() == [stored["champion_version"], stored["challenger_version"]]
    assert table["Live ROC-AUC"].tolist() == [
        figures["champion"]["roc_auc"],
        figures["challenger"]["roc_auc"],
    ]
