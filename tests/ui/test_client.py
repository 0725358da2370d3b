"""The UI reads the API's answers with the API's own response models."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from readmit.serving.schemas import ModelInfo
from readmit.ui.client import ApiClient, ApiError

ANSWERS = {
    "/model-info": {
        "name": "readmission",
        "version": "3",
        "alias": "production",
        "run_id": "r1",
        "estimator": "lightgbm",
        "trained_at": None,
        "clean_build": "b1",
        "test_metrics": {"roc_auc": 0.68},
        "threshold": 0.12,
        "features": ["race"],
        "loaded_at": "2026-01-01T00:00:00+00:00",
    },
    # An API that renamed a field and changed a type: the UI must say so, naming both.
    "/predict": {"probability": "high", "readmitted": True, "threshold": 0.1},
}


class Answers(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps(ANSWERS[self.path.split("?")[0]]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def api() -> Iterator[ApiClient]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ApiClient(f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


def test_an_answer_is_read_into_the_apis_response_model(api):
    info = api.model_info()
    assert isinstance(info, ModelInfo)
    assert (info.version, info.test_metrics["roc_auc"], info.features) == ("3", 0.68, ["race"])


def test_an_answer_the_model_does_not_describe_names_the_fields(api):
    with pytest.raises(ApiError, match=r"POST /predict is not a Prediction: probability") as e:
        api.predict({"race": "Caucasian"})
    assert "readmitted_30d: Field required" in e.value.message
    assert "model: Field required" in e.value.message
