"""Routes of the prediction API: thin wrappers over the loaded model.

Endpoints that do CPU work are plain `def`, so FastAPI runs them in its thread pool and the
event loop stays free; their JSON bodies are parsed and size-checked in that pool too
(`body.CheckedRoute`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import TypeAdapter, ValidationError

from readmit.errors import StorageError, first_line
from readmit.explain import field_contributions
from readmit.feature_store.lookup import HistoryLookup
from readmit.model_card import CARD_MARKDOWN, MODEL_CARD_PATH, fetch_card
from readmit.monitoring.outcomes import record_outcomes
from readmit.monitoring.prediction_log import PredictionLog
from readmit.registry import CHALLENGER, PRODUCTION
from readmit.schema import COLUMNS, HISTORY_FIELDS, MISSING, MODEL_FIELDS
from readmit.serving.auth import require
from readmit.serving.body import CheckedRoute, public_errors
from readmit.serving.challenger import Plan, ShadowJob, ShadowScorer, make_plan
from readmit.serving.metrics import Metrics
from readmit.serving.model_store import LoadedModel, ModelStore
from readmit.serving.reload import NONE as NO_MODEL
from readmit.serving.schemas import (
    BatchPrediction,
    BatchRequest,
    Contribution,
    Encounter,
    Explanation,
    Health,
    ModelInfo,
    ModelRef,
    OutcomesRequest,
    OutcomesResult,
    Prediction,
    ReloadResult,
    VariantInfo,
    as_fields,
)
from readmit.settings import Settings

router = APIRouter(route_class=CheckedRoute)
MODEL_COLUMNS = list(MODEL_FIELDS)
NULLABLE_FIELDS = [c.field for c in COLUMNS if c.feature and c.nullable]
PREDICT = Depends(require("predict"))
KEYS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No X-API-Key, or not a valid key"},
    403: {"description": "The key lacks this endpoint's scope"},
    429: {"description": "The key is over READMIT_API_KEY_RATE; see Retry-After"},
}


# Dependencies are `async def`: they only read app state, and a plain `def` would cost a
# thread-pool hop each.
async def get_store(request: Request) -> ModelStore:
    store: ModelStore = request.app.state.store
    return store


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_prediction_log(request: Request) -> PredictionLog | None:
    prediction_log: PredictionLog | None = request.app.state.prediction_log
    return prediction_log


async def loaded_model(store: Annotated[ModelStore, Depends(get_store)]) -> LoadedModel:
    """The model for this request; 503 with the reason while none is loaded."""
    current = store.current
    if current is None:
        reason = store.last_error or "the model has not been loaded yet"
        raise HTTPException(status_code=503, detail=f"no model is loaded: {reason}")
    return current


StoreDep = Annotated[ModelStore, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelDep = Annotated[LoadedModel, Depends(loaded_model)]
LogDep = Annotated[PredictionLog | None, Depends(get_prediction_log)]


async def get_history(request: Request) -> HistoryLookup:
    history: HistoryLookup = request.app.state.history
    return history


HistoryDep = Annotated[HistoryLookup, Depends(get_history)]


def with_history(
    encounter: Encounter, history: HistoryLookup, metrics: Metrics
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The encounter's fields with its patient history (sent, looked up or zeros), its
    model input, and where the history came from."""
    fields = dict(encounter.__dict__)
    (source,) = history.resolve([fields])
    metrics.observe_history([source])
    model_input = encounter.model_input() | {name: fields[name] for name in HISTORY_FIELDS}
    return fields, model_input, source


async def get_plan(request: Request, store: StoreDep, champion: ModelDep) -> Plan:
    """Who answers this request's records: the champion, or in canary mode a share of
    patients the challenger (`serving/challenger.py`)."""
    state = request.app.state
    settings: Settings = state.settings
    challenger = store.challenger.current
    return make_plan(
        champion, challenger, settings.challenger_mode, settings.canary_percent, state.canary_key
    )


PlanDep = Annotated[Plan, Depends(get_plan)]


def _ref(current: LoadedModel) -> ModelRef:
    return ModelRef(name=current.name, version=current.version)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def _log_scored(
    prediction_log: PredictionLog | None,
    request: Request,
    current: LoadedModel,
    records: list[dict[str, Any]],
    probabilities: list[float],
    variant: str,
) -> None:
    """Hand the scored records to the prediction log (queued; written off the request path)."""
    if prediction_log is not None and records:
        alias = PRODUCTION if variant == "champion" else CHALLENGER
        model = (current.name, current.version, alias)
        prediction_log.record(
            _request_id(request), model, current.model.threshold, records, probabilities, variant
        )


def _shadow(
    request: Request,
    background: BackgroundTasks,
    plan: Plan,
    records: list[dict[str, Any]],
    score: Callable[[LoadedModel], list[float]],
) -> None:
    """In shadow mode, the challenger scores the same records once the response is sent."""
    shadow: ShadowScorer | None = request.app.state.shadow
    if plan.shadowed and shadow is not None and records:
        assert plan.challenger is not None
        job = ShadowJob(_request_id(request), plan.challenger, records, score)
        background.add_task(shadow.submit, job)


@router.post(
    "/predict",
    response_model=Prediction,
    tags=["predictions"],
    dependencies=[PREDICT],
    responses=KEYS,
)
def predict(
    encounter: Encounter,
    request: Request,
    plan: PlanDep,
    metrics: MetricsDep,
    prediction_log: LogDep,
    history: HistoryDep,
    background: BackgroundTasks,
) -> Response:
    """The probability that this encounter is followed by a readmission within 30 days.

    Without history fields, the patient's history is looked up by `patient_nbr`."""
    # In a pool thread, not on the event loop: on the loop a flood of /predict made /health
    # wait seconds behind it and shed requests of an ordinary mixed load (bench/api.py); here
    # the loop stays free for probes and READMIT_MAX_IN_FLIGHT bounds the work in progress.
    fields, model_input, source = with_history(encounter, history, metrics)
    current, variant = plan.answering(fields)
    model = current.model
    clock = time.perf_counter()
    probability = model.predict_record(model_input)
    metrics.observe_predictions(
        [probability], model.threshold, variant, time.perf_counter() - clock
    )
    _log_scored(prediction_log, request, current, [fields], [probability], variant)
    _shadow(request, background, plan, [fields], lambda m: [m.model.predict_record(model_input)])
    answer = Prediction(
        probability=probability,
        readmitted_30d=probability >= model.threshold,
        threshold=model.threshold,
        model=_ref(current),
        request_id=_request_id(request),
        history=source,  # type: ignore[arg-type]
        history_used={name: int(fields[name]) for name in HISTORY_FIELDS},
        variant=variant,
    )
    # Built and checked here, written by pydantic: FastAPI would validate it again, in one
    # more hop to a pool thread.
    return Response(answer.model_dump_json(), media_type="application/json")


@router.post(
    "/predict-batch",
    response_model=BatchPrediction,
    tags=["predictions"],
    dependencies=[PREDICT],
    responses={
        **KEYS,
        413: {"description": "Body larger than READMIT_MAX_BODY_BYTES"},
        422: {"description": "No records, more than READMIT_MAX_BATCH, or a bad body"},
    },
)
def predict_batch(
    body: BatchRequest,
    request: Request,
    plan: PlanDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    prediction_log: LogDep,
    history: HistoryDep,
    background: BackgroundTasks,
) -> Any:
    """Score up to READMIT_MAX_BATCH encounters, results in request order.

    A record that fails validation does not fail the batch: its result carries `error`, naming
    the field and the reason, and no probability. The other records are scored.
    """
    records = body.records
    if not isinstance(records, list):
        return _batch_error("Input should be a valid list", "list_type")
    count = len(records)
    if count == 0 or count > settings.max_batch:
        reason = "no records" if count == 0 else f"{count} records; at most {settings.max_batch}"
        return _batch_error(reason, "batch_size")
    records = [as_fields(r) for r in records]  # the data set's names, as /predict takes them
    errors = record_errors(records)
    valid = [i for i in range(count) if i not in errors]
    scored = [records[i] for i in valid]
    sources: list[str] = []
    if scored:
        sources = list(history.resolve(scored))  # one pass over the snapshot for the batch
        metrics.observe_history(sources)
    results: list[dict[str, Any]] = [
        {"index": i, "probability": None, "readmitted_30d": None, "error": errors.get(i)}
        for i in range(count)
    ]
    challenger = None
    for current, variant, indexes in plan.arms(scored) if scored else []:
        arm = [scored[i] for i in indexes]
        model = current.model
        clock = time.perf_counter()
        probabilities = model.predict_frame(model_frame(arm)).tolist()
        metrics.observe_predictions(
            probabilities, model.threshold, variant, time.perf_counter() - clock
        )
        _log_scored(prediction_log, request, current, arm, probabilities, variant)
        for index, probability in zip(indexes, probabilities, strict=True):
            results[valid[index]] = {
                "index": valid[index],
                "probability": probability,
                "readmitted_30d": probability >= model.threshold,
                "error": None,
                "variant": variant,
                "history": sources[index],
            }
        if current is not plan.champion:
            challenger = {"name": current.name, "version": current.version}
    _shadow(
        request,
        background,
        plan,
        scored,
        lambda m: m.model.predict_frame(model_frame(scored)).tolist(),
    )
    # Built by hand and returned as is: re-validating 10,000 results would double the time.
    return JSONResponse(
        {
            "results": results,
            "threshold": plan.champion.model.threshold,
            "model": {"name": plan.champion.name, "version": plan.champion.version},
            "request_id": _request_id(request),
            "scored": len(valid),
            "rejected": count - len(valid),
            "challenger": challenger,
        }
    )


def _batch_error(msg: str, kind: str) -> JSONResponse:
    detail = [{"loc": ["body", "records"], "msg": msg, "type": kind}]
    return JSONResponse(status_code=422, content={"detail": detail})


BATCH = TypeAdapter(list[Encounter])
CHUNK = 100  # records per validation call: the GIL is released between calls
RECORD_ERRORS = 10  # field errors reported per record, then a count of the rest


def record_errors(records: list[Any]) -> dict[int, str]:
    """Per record index, its bad fields and why (unknown fields counted, not named)."""
    found: dict[int, list[Any]] = {}
    for start in range(0, len(records), CHUNK):
        try:
            BATCH.validate_python(records[start : start + CHUNK])
        except ValidationError as error:
            for e in error.errors(include_url=False, include_input=False, include_context=False):
                index, *path = e["loc"]
                found.setdefault(start + int(index), []).append({**e, "loc": path})
    return {i: _record_message(errors) for i, errors in found.items()}


def _record_message(errors: list[Any]) -> str:
    messages = public_errors(errors, limit=RECORD_ERRORS, where=())
    return "; ".join(
        f"{'.'.join(str(p) for p in m['loc']) or 'record'}: {m['msg']}" for m in messages
    )


def model_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Validated records as the model's input frame, as `Encounter.model_input` gives them."""
    frame = pd.DataFrame.from_records(records, columns=MODEL_COLUMNS)
    for name in NULLABLE_FIELDS:
        frame[name] = frame[name].fillna(MISSING)
    for name in HISTORY_FIELDS:
        frame[name] = frame[name].fillna(0).astype("int64")
    return frame


@router.post(
    "/explain",
    response_model=Explanation,
    tags=["predictions"],
    dependencies=[PREDICT],
    responses=KEYS,
)
def explain(
    encounter: Encounter,
    request: Request,
    current: ModelDep,
    metrics: MetricsDep,
    history: HistoryDep,
    top: Annotated[int, Query(ge=1, le=100, description="How many fields to return")] = 10,
) -> Explanation:
    """SHAP contributions of each input field (one-hot columns summed back), largest first."""
    model = current.model
    _, model_input, _ = with_history(encounter, history, metrics)
    encoded = model.encode_record(model_input)[np.newaxis, :]
    result = field_contributions(model, encoded)
    values = result.values[0]
    order = np.argsort(-np.abs(values))[:top]
    margin = float(result.base[0] + values.sum())
    return Explanation(
        probability=model.calibration.apply_one(float(model.estimator.margin(encoded)[0])),
        base_value=float(result.base[0]),
        margin=margin,
        contributions=[
            Contribution(field=result.fields[i], contribution=float(values[i])) for i in order
        ],
        model=_ref(current),
        request_id=_request_id(request),
    )


NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Health, "description": "Live, but no model is loaded"}
}


@router.get("/health", response_model=Health, tags=["service"], responses=NOT_READY)
async def health(store: StoreDep, response: Response) -> Health:
    """Liveness (the process answers) and readiness (every worker has a model loaded: a
    caller's request may reach any of them). `async`: it only reads a reference and a few
    small files, and must not queue behind CPU work in the thread pool."""
    current = store.current
    workers = store.workers_serving()
    waiting = 0 if workers is None else workers.get(NO_MODEL, 0)
    ready = current is not None and waiting == 0
    if current is None:
        detail = store.last_error or "loading the model"
    elif waiting:
        detail = f"{waiting} of {store.settings.api_workers} workers have no model yet"
    elif store.last_error is None:
        detail = "serving"
    else:
        detail = f"serving; last check: {store.last_error}"
    if not ready:
        response.status_code = 503
    return Health(
        status="ok" if ready else "not_ready",
        live=True,
        ready=ready,
        model=_ref(current) if current else None,
        detail=detail,
        workers=workers,
        **_challenger_health(store),
    )


def _challenger_health(store: ModelStore) -> dict[str, Any]:
    """The challenger's part of /health: its mode, version, and why it is not served."""
    mode = store.settings.challenger_mode
    slot = store.challenger
    if mode == "off":
        return {"challenger_mode": mode, "challenger": None, "challenger_detail": None}
    current = slot.current
    if current is not None:
        detail = slot.last_error and f"last check: {slot.last_error}"
    else:
        detail = slot.last_error or f"no version is @{CHALLENGER}"
    return {
        "challenger_mode": mode,
        "challenger": _ref(current) if current else None,
        "challenger_detail": detail,
    }


@router.get("/metrics", tags=["service"], response_class=Response)
def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/model-info", response_model=ModelInfo, tags=["service"])
def model_info(current: ModelDep, store: StoreDep, settings: SettingsDep) -> ModelInfo:
    """What is being served, where it came from, and how it scored on its test split; the
    challenger's facts beside the champion's."""
    challenger = store.challenger.current if store.challenger_enabled else None
    mode = settings.challenger_mode
    return ModelInfo(
        **_variant_info(current, PRODUCTION).model_dump(),
        challenger_mode=mode,
        canary_percent=settings.canary_percent if mode == "canary" else None,
        challenger=_variant_info(challenger, CHALLENGER) if challenger else None,
    )


def _variant_info(current: LoadedModel, alias: str) -> VariantInfo:
    info = current.info
    return VariantInfo(
        name=current.name,
        version=current.version,
        alias=alias,
        run_id=info.run_id,
        estimator=info.estimator,
        trained_at=info.trained_at,
        clean_build=info.clean_build,
        test_metrics=info.test_metrics,
        threshold=current.model.threshold,
        features=MODEL_COLUMNS,
        loaded_at=current.loaded_at,
        # GET /model-card serves the champion's card; the challenger's is in MLflow.
        model_card=MODEL_CARD_PATH if info.run_id and alias == PRODUCTION else None,
        model_card_artifact=f"runs:/{info.run_id}/{CARD_MARKDOWN}" if info.run_id else None,
    )


@router.get(
    MODEL_CARD_PATH,
    tags=["service"],
    response_class=Response,
    responses={
        200: {"content": {"text/markdown": {}, "text/html": {}}},
        503: {"description": "No model, or its card cannot be read from MLflow"},
    },
)
def model_card(
    current: ModelDep,
    settings: SettingsDep,
    format: Annotated[Literal["markdown", "html"], Query(description="Markdown or HTML")] = (
        "markdown"
    ),
) -> Response:
    """The model card of the served version, as its training run logged it."""
    run_id = current.info.run_id
    if not run_id:
        raise HTTPException(503, f"v{current.version} names no training run, so it has no card")
    try:
        text = fetch_card(settings, run_id, format)
    except Exception as exc:  # MLflow down or the run without a card: the answer degrades
        raise HTTPException(503, first_line(exc)[:300]) from None
    media = "text/html" if format == "html" else "text/markdown"
    return Response(text, media_type=f"{media}; charset=utf-8")


@router.post(
    "/reload-model",
    response_model=ReloadResult,
    tags=["service"],
    dependencies=[Depends(require("admin"))],
    responses=KEYS,
)
def reload_model(store: StoreDep) -> ReloadResult:
    """Check `@production` (and `@challenger` unless the challenger mode is off) now and swap
    in a new version if there is one, in every worker (a key with the `admin` scope). Answers
    once every worker has checked, or after a minute at most; `detail` says how many did."""
    changed, challenger_changed, workers = store.reload_everywhere()
    current = store.current
    detail = store.last_error or (
        "loaded a new version" if changed else "already serving production"
    )
    detail = f"{detail}; {workers}" if workers else detail
    challenger = store.challenger.current
    return ReloadResult(
        changed=changed,
        model=_ref(current) if current else None,
        detail=detail,
        challenger=_ref(challenger) if challenger else None,
        challenger_changed=challenger_changed,
    )


@router.post(
    "/outcomes",
    response_model=OutcomesResult,
    tags=["monitoring"],
    dependencies=[Depends(require("outcomes"))],
    responses={
        **KEYS,
        422: {"description": "A bad outcome (named by index and field), or too many"},
        503: {"description": "monitor-db is unavailable; nothing was stored, send again"},
    },
)
def post_outcomes(
    body: OutcomesRequest,
    request: Request,
    settings: SettingsDep,
) -> Any:
    """Record what became of scored encounters (a key with the `outcomes` scope). Idempotent:
    sending the same outcomes again changes nothing; a different value for an encounter
    replaces the stored one and counts as a correction."""
    count = len(body.outcomes)
    if count > settings.max_batch:
        reason = f"{count} outcomes; at most {settings.max_batch}"
        return JSONResponse(
            status_code=422,
            content={
                "detail": [{"loc": ["body", "outcomes"], "msg": reason, "type": "batch_size"}]
            },
        )
    entries = [(o.encounter_id, o.readmitted) for o in body.outcomes]
    try:
        counts = record_outcomes(request.app.state.monitor_engine, entries)
    except StorageError as exc:
        raise HTTPException(status_code=503, detail=f"outcomes not stored: {exc}") from None
    return OutcomesResult(**counts.__dict__)
