"""Locust load test of the prediction API: /predict, /predict-batch and /explain.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000

Users are mixed 10 : 1 : 2 (single predictions, batches of 100, explanations), each waiting
0.5-1.5 s between requests. Payloads come from $READMIT_LOADTEST_PAYLOADS or
loadtest/payloads.jsonl (JSON lines, one encounter each), else from the API's example with
varied counts; see payloads.py. A response counts as failed unless it is a 200 with the
expected body, so a 503 while no model is loaded shows up as failures, not as fast successes.
Every request carries $READMIT_API_KEY in X-API-Key when it is set.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from locust import HttpUser, between, events, task
from locust.env import Environment
from payloads import PayloadSource

BATCH_SIZE = 100
EXPLAIN_TOP = 10

log = logging.getLogger(__name__)
_source: PayloadSource | None = None


def source() -> PayloadSource:
    """The payloads of this process, read once (test_start reads them before users start)."""
    global _source
    if _source is None:
        _source = PayloadSource.from_environment()
    return _source


@events.test_start.add_listener
def _read_payloads(environment: Environment, **_kwargs: Any) -> None:
    """Read the payloads up front, so a bad file stops the run before any request is sent."""
    payloads = source()
    log.info("readmit load test payloads: %d from %s", len(payloads.records), payloads.origin)


class ReadmitUser(HttpUser):
    """Common settings; Locust does not run abstract users itself."""

    abstract = True
    host = "http://127.0.0.1:8000"
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        """Send $READMIT_API_KEY when set: the API may require keys (READMIT_AUTH=keys)."""
        key = os.environ.get("READMIT_API_KEY")
        if key:
            self.client.headers["X-API-Key"] = key

    def post_json(
        self, path: str, body: dict[str, Any], expect: str, name: str | None = None
    ) -> dict[str, Any] | None:
        """POST, and fail the request unless it is a 200 whose JSON has the `expect` field."""
        with self.client.post(path, json=body, name=name or path, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return None
            try:
                payload: dict[str, Any] = response.json()
            except ValueError:
                response.failure("the body is not JSON")
                return None
            if expect not in payload:
                response.failure(f"no {expect!r} in the response")
                return None
            response.success()
            return payload


class PredictUser(ReadmitUser):
    """A caller scoring one encounter at a time, the bulk of the traffic."""

    weight = 10

    @task
    def predict(self) -> None:
        self.post_json("/predict", source().encounter(), expect="probability")


class BatchUser(ReadmitUser):
    """A caller scoring encounters in batches of 100."""

    weight = 1

    @task
    def predict_batch(self) -> None:
        with self.client.post(
            "/predict-batch",
            json=source().batch(BATCH_SIZE),
            name="/predict-batch",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            try:
                body: dict[str, Any] = response.json()
            except ValueError:
                response.failure("the body is not JSON")
                return
            if body.get("scored") != BATCH_SIZE:
                # The payloads are valid encounters: a rejected record is a regression.
                response.failure(f"scored {body.get('scored')} of {BATCH_SIZE}")
                return
            response.success()


class ExplainUser(ReadmitUser):
    """A clinician asking why an encounter scored as it did."""

    weight = 2

    @task
    def explain(self) -> None:
        self.post_json(
            f"/explain?top={EXPLAIN_TOP}",
            source().encounter(),
            expect="contributions",
            name="/explain",
        )
