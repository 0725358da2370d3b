"""Champion and challenger through the real API and registry (small real models in MLflow, the
prediction log on SQLite): shadow never changes the caller's answer and a challenger that
raises never fails a request; canary answers a sticky share of patients and says which
variant answered; both aliases hot-swap independently; every score is logged with its
variant; `readmit challenge` sets and clears the alias, a bad --version in one line; a
near-miss version becomes the challenger when a margin is set."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from readmit import registry
from readmit.cli import app
from readmit.model import Calibration, ReadmissionModel
from readmit.serving.challenger import in_canary
from readmit.serving.schemas import Encounter
from readmit.settings import Settings
from tests.models import API_KEY, MODEL_INPUTS, log_and_register
from tests.monitoring import api_settings, serving, wait_until, window
from tests.scraped import samples, value

ADMIN = {"X-API-Key": API_KEY}


@dataclass
class Versions:
    """v1 the champion, v2 the challenger (another calibration: other probabilities), v3."""

    settings: Settings
    models: dict[str, ReadmissionModel]
    inputs: pd.DataFrame
    labels: np.ndarray


@pytest.fixture(scope="module")
def versions(registered, lightgbm_model, small_data) -> Versions:
    inputs = small_data.test_inputs[MODEL_INPUTS]
    models = {"1": lightgbm_model}
    for slope, intercept in ((1.4, 0.5), (0.7, -0.3)):
        model = replace(lightgbm_model, calibration=Calibration(slope, intercept))
        models[log_and_register(registered, model, inputs)] = model
    assert sorted(models) == ["1", "2", "3"]
    return Versions(registered, models, inputs, small_data.labels("test"))


@pytest.fixture
def aliases(versions) -> Versions:
    """@production on v1 and @challenger on v2, whatever an earlier test moved."""
    settings = versions.settings
    if _holder(settings, registry.PRODUCTION) != "1":
        registry.promote(settings, "1", reason="test set-up")
    registry.set_challenger(settings, "2", reason="test set-up")
    return versions


def _holder(settings: Settings, alias: str) -> str | None:
    found = registry.by_alias(registry.client_for(settings), settings.model_name, alias)
    return None if found is None else str(found.version)


def _expected(model: ReadmissionModel, payload: dict) -> float:
    """The model's probability for a payload, scored here, outside the API."""
    return model.predict_record(Encounter.model_validate(payload).model_input())


def _metrics(client) -> dict:
    return samples(client.get("/metrics").text)


def test_shadow_never_changes_the_answer_and_both_scores_are_logged(aliases, payloads, tmp_path):
    models = aliases.models
    off_url, shadow_url = f"sqlite:///{tmp_path}/off.db", f"sqlite:///{tmp_path}/shadow.db"
    singles, batch = payloads[:6], payloads[6:12]
    with serving(api_settings(aliases.settings, tmp_path, off_url)) as client:
        off = [client.post("/predict", json=p).json() for p in singles]
    settings = api_settings(aliases.settings, tmp_path, shadow_url, challenger_mode="shadow")
    with serving(settings) as client:
        shadow = [client.post("/predict", json=p).json() for p in singles]
        batched = client.post("/predict-batch", json={"records": batch}).json()
        health, info = client.get("/health").json(), client.get("/model-info").json()
        wait_until(
            lambda: (
                value(_metrics(client), "readmit_scoring_duration_seconds_count", variant="shadow")
                == 7
            ),
            "the shadow scores",
        )
        scraped = _metrics(client)

    def answer(found: dict) -> tuple:
        return found["probability"], found["model"], found["variant"], found["readmitted_30d"]

    assert [answer(a) for a in shadow] == [answer(a) for a in off]
    assert all(a["model"]["version"] == "1" and a["variant"] == "champion" for a in shadow)
    assert [r["probability"] for r in batched["results"]] == pytest.approx(
        [_expected(models["1"], p) for p in batch], abs=1e-12
    )
    assert batched["challenger"] is None
    assert health["challenger_mode"] == "shadow" and health["challenger"]["version"] == "2"
    assert info["version"] == "1" and info["challenger"]["version"] == "2"
    assert info["challenger"]["alias"] == "challenger"
    assert value(scraped, "readmit_prediction_probability_count", variant="shadow") == 12
    assert value(scraped, "readmit_prediction_probability_count", variant="champion") == 12
    assert value(scraped, "readmit_challenger_info", name="readmission", version="2") == 1

    rows = window(shadow_url)
    by_variant = {"champion": {}, "shadow": {}}
    for row in rows:
        by_variant[row["variant"]][(row["request_id"], row["encounter_id"])] = row
    assert len(rows) == 24 and all(len(v) == 12 for v in by_variant.values())
    for payload, found in [
        *zip(singles, shadow, strict=True),
        *((p, batched) for p in batch),
    ]:
        key = (found["request_id"], payload["encounter_id"])
        champion, shadowed = by_variant["champion"][key], by_variant["shadow"][key]
        assert (champion["model_version"], champion["model_alias"]) == ("1", "production")
        assert (shadowed["model_version"], shadowed["model_alias"]) == ("2", "challenger")
        assert champion["probability"] == pytest.approx(_expected(models["1"], payload), abs=1e-12)
        assert shadowed["probability"] == pytest.approx(_expected(models["2"], payload), abs=1e-12)
        assert shadowed["probability"] != champion["probability"]


def test_a_challenger_that_raises_never_fails_a_request(aliases, payloads, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/monitor.db"
    settings = api_settings(aliases.settings, tmp_path, url, challenger_mode="shadow")
    with serving(settings) as client:
        challenger = client.app.state.store.challenger.current.model

        def broken(*_args: object) -> None:  # stands in for a challenger that fails at scoring
            raise RuntimeError("the challenger broke")

        monkeypatch.setattr(challenger, "predict_record", broken)
        monkeypatch.setattr(challenger, "predict_frame", broken)
        singles = [client.post("/predict", json=p) for p in payloads[:4]]
        batched = client.post("/predict-batch", json={"records": payloads[4:10]})
        wait_until(
            lambda: value(_metrics(client), "readmit_shadow_failures_total") == 10,
            "the shadow failures",
        )
        health = client.get("/health")
    assert [r.status_code for r in [*singles, batched, health]] == [200] * 6
    assert [r.json()["probability"] for r in singles] == pytest.approx(
        [_expected(aliases.models["1"], p) for p in payloads[:4]], abs=1e-12
    )
    assert batched.json()["scored"] == 6
    rows = window(url)
    assert len(rows) == 10 and {r["variant"] for r in rows} == {"champion"}


def test_canary_answers_a_sticky_share_of_patients_and_says_which(aliases, payloads, tmp_path):
    url = f"sqlite:///{tmp_path}/monitor.db"
    settings = api_settings(
        aliases.settings, tmp_path, url, challenger_mode="canary", canary_percent=50.0
    )
    with serving(settings) as client:
        key = client.app.state.canary_key
        singles = [client.post("/predict", json=p).json() for p in payloads]
        batched = client.post("/predict-batch", json={"records": payloads}).json()
        info = client.get("/model-info").json()
    expected = ["challenger" if in_canary(key, p, 50.0) else "champion" for p in payloads]
    assert set(expected) == {"champion", "challenger"}  # both arms among these 10 patients
    variant_of = {"champion": "1", "challenger": "2"}
    for payload, answer, variant in zip(payloads, singles, expected, strict=True):
        assert answer["variant"] == variant and answer["model"]["version"] == variant_of[variant]
        model = aliases.models[variant_of[variant]]
        assert answer["probability"] == pytest.approx(_expected(model, payload), abs=1e-12)
    per_patient: dict[int, set[str]] = {}
    for payload, answer in zip(payloads, singles, strict=True):
        per_patient.setdefault(payload["patient_nbr"], set()).add(answer["variant"])
    assert all(len(v) == 1 for v in per_patient.values())  # sticky: 3 encounters each
    assert [r["variant"] for r in batched["results"]] == expected
    assert [r["probability"] for r in batched["results"]] == pytest.approx(
        [a["probability"] for a in singles], abs=1e-12
    )
    assert batched["challenger"] == {"name": "readmission", "version": "2"}
    assert info["challenger_mode"] == "canary" and info["canary_percent"] == 50.0

    rows = window(url)
    assert len(rows) == 2 * len(payloads)
    answers = {a["request_id"]: a for a in singles}
    for row in rows:
        if row["request_id"] in answers:
            variant = answers[row["request_id"]]["variant"]
        else:
            variant = expected[[p["encounter_id"] for p in payloads].index(row["encounter_id"])]
        assert row["variant"] == variant and row["model_version"] == variant_of[variant]
        assert row["model_alias"] == ("production" if variant == "champion" else "challenger")


def test_both_aliases_hot_swap_independently(aliases, tmp_path):
    settings = api_settings(
        aliases.settings, tmp_path, f"sqlite:///{tmp_path}/m.db", challenger_mode="shadow"
    )
    with serving(settings) as client:
        store = client.app.state.store
        champion = store.current
        assert (champion.version, store.challenger.current.version) == ("1", "2")

        registry.set_challenger(aliases.settings, "3")
        swapped = client.post("/reload-model", headers=ADMIN).json()
        assert (swapped["changed"], swapped["challenger_changed"]) == (False, True)
        assert swapped["challenger"]["version"] == "3" and store.current is champion
        third = store.challenger.current

        registry.promote(aliases.settings, "2")
        swapped = client.post("/reload-model", headers=ADMIN).json()
        assert (swapped["changed"], swapped["challenger_changed"]) == (True, False)
        assert store.current.version == "2" and store.challenger.current is third
        champion = store.current

        assert registry.clear_challenger(aliases.settings) == "3"
        swapped = client.post("/reload-model", headers=ADMIN).json()
        assert (swapped["changed"], swapped["challenger_changed"]) == (False, True)
        assert store.challenger.current is None and store.current is champion
        health, info = client.get("/health").json(), client.get("/model-info").json()
        answer = client.post("/predict", json=_payload(aliases)).json()
        scraped = _metrics(client)
    assert health["status"] == "ok" and health["model"]["version"] == "2"
    assert (
        health["challenger"] is None and "no version is @challenger" in health["challenger_detail"]
    )
    assert info["challenger"] is None and answer["model"]["version"] == "2"
    assert value(scraped, "readmit_challenger_loaded") == 0


def _payload(versions: Versions) -> dict:
    from tests.models import records

    return records(versions.inputs.head(1))[0]


def test_readmit_challenge_sets_and_clears_and_names_a_bad_version(aliases):
    settings = aliases.settings
    env = {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri or "",
        "READMIT_MODEL_NAME": settings.model_name,
        "READMIT_DATA_DIR": str(settings.data_dir),
    }
    runner = CliRunner()
    result = runner.invoke(app, ["challenge", "--version", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert "v3 is @challenger (replacing v2)" in result.output
    assert _holder(settings, registry.CHALLENGER) == "3"
    for args, reason in [
        (["--version", "abc"], "challenger version 'abc': not a version number"),
        (["--version", "99"], "challenger version 99: readmission has no such version"),
        (["--version", "1"], "challenger version 1: readmission v1 is @production already"),
        ([], "give --version N or --clear"),
        (["--version", "2", "--clear"], "give --version N or --clear"),
    ]:
        result = runner.invoke(app, ["challenge", *args], env=env)
        assert result.exit_code == 1, result.output
        assert result.output.strip() == f"error: {reason}" or (
            reason in result.output and len(result.output.strip().splitlines()) == 1
        ), result.output
    assert _holder(settings, registry.CHALLENGER) == "3"
    result = runner.invoke(app, ["challenge", "--clear"], env=env)
    assert result.exit_code == 0 and "v3 is no longer @challenger" in result.output
    assert _holder(settings, registry.CHALLENGER) is None


def test_a_near_miss_becomes_the_challenger_only_with_a_margin(aliases):
    """As training decides a new version (DAG 3): v3 scored just below the champion."""
    settings = aliases.settings
    champion_auc, problem = registry.champion_auc(settings, "1", aliases.inputs, aliases.labels)
    assert champion_auc is not None, problem
    close = champion_auc - 0.004
    kept = registry.compare_and_promote(settings, "3", close, aliases.inputs, aliases.labels)
    assert not kept.promoted and not kept.challenger
    assert _holder(settings, registry.CHALLENGER) == "2"

    with_margin = settings.model_copy(update={"challenger_margin": 0.005})
    decided = registry.compare_and_promote(with_margin, "3", close, aliases.inputs, aliases.labels)
    assert not decided.promoted and decided.challenger
    assert _holder(settings, registry.CHALLENGER) == "3"
    tags = registry.client_for(settings).get_model_version(settings.model_name, "3").tags
    assert "within 0.005 of production" in tags[registry.Tag.CHALLENGER_REASON]
    far = registry.compare_and_promote(
        with_margin, "2", champion_auc - 0.02, aliases.inputs, aliases.labels
    )
    assert not far.challenger
    assert _holder(settings, registry.CHALLENGER) == "3"
