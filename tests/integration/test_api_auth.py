"""API keys: named keys with scopes from a file of digests, revoked by editing the file, never
logged; /health and /metrics stay open."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from readmit.logs import JsonFormatter
from readmit.serving import auth
from readmit.serving.app import create_app
from readmit.serving.auth import KeyFileError, key_line, parse_keys
from readmit.serving.schemas import EXAMPLE
from tests.models import API_KEY

WARD = "ward-7-key-0123456789"
LAB = "lab-outcomes-key-0123456789"


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "api-keys"
    path.write_text(
        "# readmit API keys\n"
        f"{key_line('ward-7', ['predict'], WARD)}\n"
        f"{key_line('lab', ['outcomes'], LAB)}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def keyed(registered, key_file, tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "RELOAD_CHECK_SECONDS", 0.0)  # every request looks at the file
    settings = registered.model_copy(
        update={
            "data_dir": tmp_path,
            "auth": "keys",
            "api_keys_file": key_file,
            "prediction_log_enabled": False,
        }
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_predictions_need_a_key_with_the_predict_scope(keyed):
    for path, body in (
        ("/predict", EXAMPLE),
        ("/explain", EXAMPLE),
        ("/predict-batch", {"records": [EXAMPLE]}),
    ):
        missing = keyed.post(path, json=body)
        assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "X-API-Key"
        wrong = keyed.post(path, json=body, headers={"X-API-Key": WARD + "x"})
        assert wrong.status_code == 401 and "not a valid key" in wrong.json()["detail"]
        out_of_scope = keyed.post(path, json=body, headers={"X-API-Key": LAB})
        assert out_of_scope.status_code == 403
        assert "lab lacks the scope predict" in out_of_scope.json()["detail"]
        assert keyed.post(path, json=body, headers={"X-API-Key": WARD}).status_code == 200


def test_the_settings_key_has_every_scope_and_file_keys_only_theirs(keyed):
    assert keyed.post("/predict", json=EXAMPLE, headers={"X-API-Key": API_KEY}).status_code == 200
    assert keyed.post("/reload-model", headers={"X-API-Key": API_KEY}).status_code == 200
    assert keyed.post("/reload-model", headers={"X-API-Key": WARD}).status_code == 403
    assert keyed.post("/reload-model", headers={"X-API-Key": LAB}).status_code == 403
    outcomes = {"outcomes": [{"encounter_id": 1, "readmitted": "NO"}]}
    assert keyed.post("/outcomes", json=outcomes, headers={"X-API-Key": WARD}).status_code == 403


def test_health_and_metrics_stay_open(keyed):
    assert keyed.get("/health").status_code == 200
    metrics = keyed.get("/metrics")
    assert metrics.status_code == 200 and "readmit_http_requests_total" in metrics.text


def test_a_key_removed_from_the_file_is_refused_without_a_restart(keyed, key_file):
    assert keyed.post("/predict", json=EXAMPLE, headers={"X-API-Key": WARD}).status_code == 200
    key_file.write_text(key_line("lab", ["outcomes"], LAB) + "\n", encoding="utf-8")
    revoked = keyed.post("/predict", json=EXAMPLE, headers={"X-API-Key": WARD})
    assert revoked.status_code == 401
    nurse = "nurse-station-key-0123456789"
    key_file.write_text(key_line("nurse", ["predict", "outcomes"], nurse) + "\n", encoding="utf-8")
    assert keyed.post("/predict", json=EXAMPLE, headers={"X-API-Key": nurse}).status_code == 200


def test_a_broken_key_file_keeps_the_keys_read_before(keyed, key_file):
    key_file.write_text("ward-7 predict not-a-digest\n", encoding="utf-8")
    assert keyed.post("/predict", json=EXAMPLE, headers={"X-API-Key": WARD}).status_code == 200


def test_the_log_names_the_caller_and_never_holds_the_key(keyed):
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(record))

    handler = Collect()
    logger = logging.getLogger("readmit")
    logger.addHandler(handler)
    try:
        keyed.post("/predict", json=EXAMPLE, headers={"X-API-Key": WARD})
        keyed.post("/predict", json=EXAMPLE, headers={"X-API-Key": WARD + "x"})
    finally:
        logger.removeHandler(handler)
    requests = [line for line in lines if '"msg": "request"' in line]
    assert len(requests) == 2 and '"caller": "ward-7"' in requests[0]
    assert not any(WARD in line for line in lines)


def test_without_key_auth_predictions_are_open_and_outcomes_still_need_a_key(registered):
    settings = registered.model_copy(update={"prediction_log_enabled": False})
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", json=EXAMPLE).status_code == 200
        outcomes = {"outcomes": [{"encounter_id": 1, "readmitted": "NO"}]}
        assert client.post("/outcomes", json=outcomes).status_code == 401


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ward predict", r"line 1: expected 'NAME SCOPE\[,SCOPE\] sha256:HEX'"),
        ("# keys\nward read sha256:" + "0" * 64, r"line 2: scopes are a comma-separated list"),
        ("ward predict sha256:ABC", r"line 1: the digest is 'sha256:' and 64 lowercase hex"),
        ("w!rd predict sha256:" + "0" * 64, r"line 1: a key name is 1-64 letters"),
        (f"a predict sha256:{'0' * 64}\na admin sha256:{'1' * 64}", r"line 2: .* used twice"),
    ],
)
def test_a_bad_key_file_line_is_named_with_the_reason(text, reason):
    with pytest.raises(KeyFileError, match=reason):
        parse_keys(text)


def test_the_key_file_holds_digests_not_keys():
    line = key_line("ward-7", ["predict"], WARD)
    assert WARD not in line
    (key,) = parse_keys(line)
    assert key.name == "ward-7" and key.scopes == {"predict"}


def test_a_key_over_its_rate_gets_a_429_and_others_are_not_slowed(registered, key_file, tmp_path):
    settings = registered.model_copy(
        update={
            "data_dir": tmp_path,
            "auth": "keys",
            "api_keys_file": key_file,
            "api_key_rate": 2.0,
            "prediction_log_enabled": False,
        }
    )
    with TestClient(create_app(settings)) as client:
        now = [100.0]
        client.app.state.keys.limit.clock = lambda: now[0]  # time moves only when told

        def predict(key: str):
            return client.post("/predict", json=EXAMPLE, headers={"X-API-Key": key})

        assert [predict(WARD).status_code for _ in range(2)] == [200, 200]
        over = predict(WARD)
        assert over.status_code == 429 and over.headers["retry-after"] == "1"
        assert "ward-7 is over its 2 requests a second" in over.json()["detail"]
        assert predict(API_KEY).status_code == 200  # another key has its own budget
        now[0] += 0.5  # one request's worth comes back
        assert [predict(WARD).status_code for _ in range(2)] == [200, 429]
