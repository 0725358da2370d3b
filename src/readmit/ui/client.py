"""Every HTTP call the UI makes: to the prediction API and, when configured, to Prometheus.

Each call has a timeout and turns every failure (unreachable, timeout, an error status, a body
that is not JSON) into one `ApiError` whose message a person can act on, so the pages show a
sentence instead of a traceback.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from readmit.serving.schemas import BatchPrediction, Explanation, Health, ModelInfo, Prediction
from readmit.settings import Settings

Reply = TypeVar("Reply", bound=BaseModel)

FAST = 5.0  # health, metrics, model info
PREDICT = 15.0
BATCH = 120.0  # one chunk of /predict-batch


def api_url() -> str:
    """READMIT_API_URL, or the address `readmit serve` binds to by default."""
    return Settings().api_url


def prometheus_url() -> str | None:
    """READMIT_PROMETHEUS_URL when set; without it the dashboard reads the API's /metrics."""
    return Settings().prometheus_url


class ApiError(Exception):
    """A call failed; `message` says what happened and, where it can, what to do."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _detail(response: httpx.Response) -> str:
    """The API's own explanation: FastAPI's `detail`, flattened to `field: reason` lines."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query")]
                field = ".".join(loc)
                parts.append(f"{field}: {item.get('msg', '')}" if field else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _problems(exc: ValidationError) -> str:
    """`field: reason` per problem, the first five."""
    lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(lines)


class ApiClient:
    """The prediction API at `base_url` (READMIT_API_URL by default)."""

    def __init__(self, base_url: str | None = None) -> None:
        self.base_url = (base_url or api_url()).rstrip("/")
        key = Settings().api_key  # sent when set: the API may require keys (READMIT_AUTH)
        self.headers = {"X-API-Key": key} if key else {}

    def _call(
        self,
        method: str,
        path: str,
        timeout: float,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            response = httpx.request(
                method, url, json=body, params=params, headers=self.headers, timeout=timeout
            )
        except httpx.ConnectError as exc:
            raise ApiError(
                f"The prediction API at {self.base_url} is unreachable ({exc}). Start it with "
                "`readmit serve`, or point READMIT_API_URL at it."
            ) from exc
        except httpx.TimeoutException as exc:
            raise ApiError(
                f"The prediction API at {self.base_url} did not answer {method} {path} "
                f"within {timeout:g} s."
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"{method} {url} failed: {exc}") from exc
        if response.status_code == 503:
            raise ApiError(
                f"The API has no model to serve: {_detail(response)}", response.status_code
            )
        if response.status_code == 422:
            raise ApiError(f"The API rejected the input: {_detail(response)}", response.status_code)
        if response.status_code >= 400:
            raise ApiError(
                f"The API answered {method} {path} with {response.status_code}: "
                f"{_detail(response)}",
                response.status_code,
            )
        return response

    def _json(self, method: str, path: str, timeout: float, **kwargs: Any) -> dict[str, Any]:
        response = self._call(method, path, timeout, **kwargs)
        try:
            data = response.json()
        except ValueError as exc:
            raise ApiError(f"The API's answer to {method} {path} is not JSON.") from exc
        if not isinstance(data, dict):
            raise ApiError(f"The API's answer to {method} {path} is not a JSON object.")
        return data

    def _reply(
        self, reply: type[Reply], method: str, path: str, timeout: float, **kwargs: Any
    ) -> Reply:
        """The answer read with the API's own response model, so a field the API renamed or
        dropped is named here, not found missing deep in a page."""
        data = self._json(method, path, timeout, **kwargs)
        try:
            return reply.model_validate(data)
        except ValidationError as exc:
            raise ApiError(
                f"The API's answer to {method} {path} is not a {reply.__name__}: {_problems(exc)}"
            ) from exc

    def health(self) -> Health:
        """GET /health; a 503 (live, no model yet) is an answer here, not an error."""
        try:
            response = httpx.get(f"{self.base_url}/health", timeout=FAST)
            data = response.json()
        except httpx.HTTPError as exc:
            raise ApiError(
                f"The prediction API at {self.base_url} is unreachable ({exc})."
            ) from exc
        except ValueError as exc:
            raise ApiError(f"{self.base_url}/health did not answer JSON.") from exc
        try:
            return Health.model_validate(data)
        except ValidationError as exc:
            raise ApiError(f"{self.base_url}/health answered {response.status_code}.") from exc

    def predict(self, record: dict[str, Any]) -> Prediction:
        """POST /predict: probability, class, threshold and model of one encounter."""
        return self._reply(Prediction, "POST", "/predict", PREDICT, body=record)

    def predict_batch(self, records: list[dict[str, Any]]) -> BatchPrediction:
        """POST /predict-batch: one result per record, in order; bad records carry `error`."""
        body = {"records": records}
        return self._reply(BatchPrediction, "POST", "/predict-batch", BATCH, body=body)

    def explain(self, record: dict[str, Any], top: int = 10) -> Explanation:
        """POST /explain?top=N: the N largest SHAP contributions in log-odds."""
        params = {"top": top}
        return self._reply(Explanation, "POST", "/explain", PREDICT, body=record, params=params)

    def model_info(self) -> ModelInfo:
        """GET /model-info: version, run id, test metrics and threshold of the served model."""
        return self._reply(ModelInfo, "GET", "/model-info", FAST)

    def model_card(self, path: str) -> str:
        """GET the card /model-info links to, as Markdown."""
        return self._call("GET", path, FAST, params={"format": "markdown"}).text

    def metrics_text(self) -> str:
        """GET /metrics in the Prometheus text format."""
        return self._call("GET", "/metrics", FAST).text


class PrometheusClient:
    """Instant PromQL queries against a Prometheus server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of `promql`: items with `metric` (labels) and `value`."""
        url = f"{self.base_url}/api/v1/query"
        try:
            response = httpx.get(url, params={"query": promql}, timeout=FAST)
            body = response.json()
        except httpx.HTTPError as exc:
            raise ApiError(f"Prometheus at {self.base_url} is unreachable ({exc}).") from exc
        except ValueError as exc:
            raise ApiError(f"Prometheus at {self.base_url} did not answer JSON.") from exc
        if response.status_code >= 400 or body.get("status") != "success":
            reason = body.get("error") or f"status {response.status_code}"
            raise ApiError(f"Prometheus rejected the query {promql!r}: {reason}")
        result = body.get("data", {}).get("result", [])
        return result if isinstance(result, list) else []
