"""`readmit compare --apply` on a real registry (MLflow on SQLite) and a real monitor-db: a clear
live gain moves @production to the challenger and archives the champion, as `readmit promote`
does; no clear gain only tags both versions; the figures on the tags are the comparison's."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from readmit import registry
from readmit.cli import app
from readmit.exporter import MonitorCollector
from readmit.monitoring.compare import KEEP, PROMOTE, WAIT, run_compare
from readmit.monitoring.outcomes import record_outcomes
from readmit.monitoring.prediction_log import Scored
from readmit.orchestration import challenger_version, compare
from readmit.settings import Settings
from readmit.storage import monitor
from readmit.storage.monitor import Variant
from tests.models import MODEL_INPUTS, log_and_register

KEY = b"compare-test-key"
FEATURES = {"age": "[70-80)", "prior_encounters": 0}
ENCOUNTERS = 800


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('compare-mlflow')}/mlflow.db"


@pytest.fixture
def two_versions(tracking, tmp_path, small_data, lightgbm_model):
    """A model name of its own: v1 at @production, v2 at @challenger (the same small model:
    the live scores below are what differ)."""
    settings = Settings(
        data_dir=tmp_path,
        mlflow_tracking_uri=tracking,
        model_name=f"readmission_{secrets.token_hex(4)}",
        compare_min_labels=300,
    )
    inputs = small_data.test_inputs[MODEL_INPUTS]
    champion = log_and_register(settings, lightgbm_model, inputs)
    registry.promote(settings, champion)
    challenger = log_and_register(settings, lightgbm_model, inputs)
    MlflowClient(tracking).set_registered_model_alias(
        settings.model_name, registry.CHALLENGER, challenger
    )
    return settings, champion, challenger


def _log_shadow_traffic(settings: Settings, champion: str, challenger: str, skill: float) -> None:
    """ENCOUNTERS encounters scored by both (champion answers, challenger in shadow), with their
    outcomes: the champion's scores carry signal 1.0, the challenger's `skill`."""
    rng = np.random.default_rng(11)
    label = rng.random(ENCOUNTERS) < 0.15
    engine = sa.create_engine(settings.resolved_monitor_db_url)
    monitor.ensure_tables(engine)
    now = datetime.now(UTC) - timedelta(days=1)
    for version, variant, signal in (
        (champion, Variant.CHAMPION, 1.0),
        (challenger, Variant.SHADOW, skill),
    ):
        margin = label * signal + rng.normal(0, 1, ENCOUNTERS) - 2
        scored = Scored(
            batch_id=uuid.uuid4().hex,
            scored_at=now,
            request_id=uuid.uuid4().hex,
            model_name=settings.model_name,
            model_version=version,
            model_alias="production" if variant == Variant.CHAMPION else "challenger",
            threshold=0.12,
            records=[
                {**FEATURES, "encounter_id": 700_000 + i, "patient_nbr": 5_000 + i // 2}
                for i in range(ENCOUNTERS)
            ],
            probabilities=list(1 / (1 + np.exp(-margin))),
            variant=variant,
        )
        with engine.begin() as conn:
            monitor.insert_predictions(conn, scored.rows(KEY))
    record_outcomes(engine, [(700_000 + i, "<30" if y else "NO") for i, y in enumerate(label)])
    engine.dispose()


def _state(settings: Settings) -> dict[str, tuple[str, list[str], dict[str, str]]]:
    client = MlflowClient(settings.resolved_tracking_uri)
    found = client.search_model_versions(f"name='{settings.model_name}'")
    full = [client.get_model_version(settings.model_name, str(v.version)) for v in found]
    return {str(v.version): (v.current_stage, sorted(v.aliases), v.tags) for v in full}


def test_apply_promotes_a_clearly_better_challenger_and_archives_the_champion(two_versions):
    settings, champion, challenger = two_versions
    _log_shadow_traffic(settings, champion, challenger, skill=2.5)
    env = {
        "READMIT_DATA_DIR": str(settings.data_dir),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_MODEL_NAME": settings.model_name,
        "READMIT_COMPARE_MIN_LABELS": "300",
    }
    result = CliRunner().invoke(app, ["compare", "--apply", "--json"], env=env)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["decision"] == PROMOTE and figures["applied"], figures
    assert figures["mode"] == "shadow" and figures["labelled"] == ENCOUNTERS
    assert figures["ci_low"] > 0 and figures["archived_version"] == champion

    state = _state(settings)
    assert state[challenger][:2] == ("Production", ["production"])
    assert state[champion][:2] == ("Archived", [])
    for version, arm in ((champion, "champion"), (challenger, "challenger")):
        tags = state[version][2]
        assert tags["readmit.live_decision"] == PROMOTE
        assert tags["readmit.live_role"] == arm
        assert float(tags["readmit.live_roc_auc"]) == pytest.approx(
            figures[arm]["roc_auc"], abs=1e-6
        )
        assert float(tags["readmit.live_brier"]) == pytest.approx(figures[arm]["brier"], abs=1e-6)
        assert float(tags["readmit.live_auc_difference_ci_low"]) == pytest.approx(
            figures["ci_low"], abs=1e-6
        )
        assert tags["readmit.live_labelled"] == str(ENCOUNTERS)
    assert "live comparison" in state[challenger][2]["readmit.promotion_reason"]

    # The challenger is the champion now: there is nothing left to compare.
    again = run_compare(settings, days=None)
    assert again.decision == WAIT and again.reasons == [
        f"no @challenger version of {settings.model_name} in the registry"
    ]
    engine = sa.create_engine(settings.resolved_monitor_db_url)
    with engine.connect() as conn:
        stored = monitor.latest_comparisons(conn, 2)
    engine.dispose()
    assert [c["decision"] for c in stored] == [WAIT, PROMOTE]
    assert stored[1]["applied"] and stored[1]["challenger_version"] == challenger


def test_the_exporter_shows_the_latest_comparison(two_versions):
    settings, champion, challenger = two_versions
    _log_shadow_traffic(settings, champion, challenger, skill=2.5)
    result = run_compare(settings, days=None)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in MonitorCollector(settings).collect()
        for s in family.samples
    }
    assert samples[("readmit_compare_labelled_encounters", ())] == ENCOUNTERS
    assert samples[("readmit_compare_decision", (("decision", "promote"),))] == 1.0
    assert samples[("readmit_compare_decision", (("decision", "keep"),))] == 0.0
    for arm in (result.champion, result.challenger):
        labels = (("variant", arm.variant), ("version", arm.model_version))
        assert samples[("readmit_compare_live_roc_auc", labels)] == pytest.approx(arm.roc_auc)
        assert samples[("readmit_compare_live_brier", labels)] == pytest.approx(arm.brier)
    assert samples[("readmit_compare_auc_difference_ci_low", ())] == pytest.approx(result.ci_low)
    assert not result.applied and _state(settings)[champion][1] == ["production"]


def test_apply_without_a_clear_gain_tags_both_versions_and_moves_nothing(two_versions):
    settings, champion, challenger = two_versions
    _log_shadow_traffic(settings, champion, challenger, skill=1.0)
    lines: list[str] = []
    assert challenger_version(settings, lines.append) == challenger
    summary = compare(settings.model_copy(update={"compare_apply": True}), lines.append)
    assert summary["decision"] == KEEP and not summary["applied"], summary
    assert summary["ci_low"] < 0 < summary["ci_high"]
    assert lines[-1].startswith("compare summary: keep (shadow, ")
    state = _state(settings)
    assert state[champion][:2] == ("Production", ["production"])
    assert "challenger" in state[challenger][1]
    assert state[challenger][2]["readmit.live_decision"] == KEEP
    assert state[champion][2]["readmit.live_compared_with_version"] == challenger
