"""The one place every setting is declared: environment variables prefixed READMIT_, or `.env`.

Switching from the embedded mode (SQLite files, local MLflow store) to the full stack
(PostgreSQL, MLflow server, S3) is a matter of these values only, never of code.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

UCI_DATASET_URL = "https://archive.ics.uci.edu/static/public/296/diabetes+130-us+hospitals+for+years+1999-2008.zip"
# SHA-256 of diabetic_data.csv as shipped in the UCI archive (101,766 rows).
UCI_CSV_SHA256 = "0689e7ec031237dc63031b938805c48377748761a3b26acab621567afa24df97"

DEFAULT_API_URL = "http://127.0.0.1:8000"  # where `readmit serve` binds by default

# Both go into queries: the model name into MLflow registry filters, the prefix into
# PostgreSQL database names (CREATE DATABASE). Plain names only, checked at startup.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
DB_PREFIX_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,39}")

# Default hyperparameter search per training: short where `make run` waits for it, longer where
# training runs as a scheduled job next to an MLflow server.
EMBEDDED_TUNE_SECONDS = 30.0
SERVER_TUNE_SECONDS = 300.0


class Settings(BaseSettings):
    """Runtime configuration; defaults give the embedded mode under `.readmit/`."""

    model_config = SettingsConfigDict(
        env_prefix="READMIT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_by_name=True,
    )

    data_dir: Path = Field(default=Path(".readmit"), description="Where local state lives.")
    dataset_uri: str = Field(
        default=UCI_DATASET_URL, description="URL or local path of the UCI zip or of the CSV."
    )
    dataset_sha256: str = Field(
        default=UCI_CSV_SHA256, description="Expected SHA-256 of diabetic_data.csv."
    )
    verify_checksum: bool = Field(
        default=True, description="Set to false to accept a CSV whose checksum differs."
    )
    raw_db_url: str | None = Field(default=None, description="SQLAlchemy URL of raw-db.")
    clean_db_url: str | None = Field(default=None, description="SQLAlchemy URL of clean-db.")
    monitor_db_url: str | None = Field(
        default=None, description="SQLAlchemy URL of monitor-db (prediction log, outcomes)."
    )
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="Key of the patient pseudonym (HMAC-SHA256 of patient_nbr) in the prediction "
        "log; default: generated once into a 0600 file under the data dir.",
    )
    prediction_log_enabled: bool = Field(
        default=True, description="Log every scored record to monitor-db."
    )
    prediction_log_flush_seconds: float = Field(
        default=1.0, gt=0, description="Longest wait before logged rows are written."
    )
    prediction_log_flush_rows: int = Field(
        default=1_000, gt=0, description="Rows that trigger a write before the interval ends."
    )
    prediction_log_max_pending: int = Field(
        default=200_000,
        gt=0,
        description="Most rows waiting for monitor-db (in memory and in the spill file); "
        "rows beyond are dropped and counted.",
    )
    prediction_log_retry_seconds: float = Field(
        default=5.0, gt=0, description="Wait before monitor-db is tried again after a failure."
    )
    prediction_log_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Connect and statement timeout of prediction log writes."
    )
    monitor_window_days: float = Field(
        default=7.0, gt=0, description="A monitoring run looks at predictions this recent..."
    )
    monitor_window_rows: int = Field(
        default=5_000, gt=0, description="...and at most this many of the newest of them."
    )
    monitor_min_rows: int = Field(
        default=500,
        gt=0,
        description="Fewest predictions of one model a run needs to judge drift; fewer give "
        "the verdict insufficient-data.",
    )
    monitor_min_labelled_rows: int = Field(
        default=500,
        gt=0,
        description="Fewest predictions with an outcome a run needs to judge live performance.",
    )
    monitor_auc_floor: float = Field(
        default=0.62,
        gt=0,
        lt=1,
        description="Live ROC-AUC floor: a run whose 95% interval lies below it is degraded.",
    )
    monitor_calibration_tolerance: float = Field(
        default=0.03,
        gt=0,
        lt=1,
        description="Largest gap between the observed readmission rate and the mean predicted "
        "probability before a run is degraded.",
    )
    monitor_experiment_name: str = Field(
        default="readmission-monitoring", description="MLflow experiment of monitoring runs."
    )
    compare_min_labels: int = Field(
        default=1_000,
        gt=0,
        description="Fewest labelled encounters before champion and challenger are compared "
        "on live outcomes; fewer give the decision wait.",
    )
    compare_window_days: float = Field(
        default=90.0,
        gt=0,
        description="The comparison looks at predictions scored this recently (outcomes "
        "come back 30 days after discharge, so it looks further back than the monitor).",
    )
    compare_apply: bool = Field(
        default=True,
        description="DAG 4 acts on its comparison as `readmit compare --apply` does: a promote "
        "puts the challenger in production; every decision is tagged on both versions.",
    )
    batch_size: int = Field(default=15_000, gt=0, description="Rows per ingest batch.")
    ingest_schedule: str = Field(
        default="@hourly", description="Airflow schedule of DAG 1 (one batch per run)."
    )
    monitor_schedule: str = Field(
        default="@daily", description="Airflow schedule of DAG 4 (one monitoring run a run)."
    )
    split_salt: str = Field(default="readmit-split-v1", description="Salt of the patient split.")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("READMIT_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking server; default: a SQLite store in the data dir.",
    )
    mlflow_backend_store_uri: str | None = Field(
        default=None,
        description="Store of `readmit mlflow-server`; default: SQLite in the data dir.",
    )
    mlflow_artifacts_destination: str | None = Field(
        default=None,
        description="Artifact store of `readmit mlflow-server`, e.g. s3://mlflow-artifacts.",
    )
    mlflow_host: str = Field(default="127.0.0.1", description="Bind address of the MLflow server.")
    mlflow_port: int = Field(default=5000, description="Port of the MLflow server.")
    mlflow_allowed_hosts: str | None = Field(
        default=None,
        description="Host headers the MLflow server accepts besides localhost and private IPs "
        "(comma-separated, e.g. `mlflow,mlflow:5000` behind a service name).",
    )
    mlflow_tracking_username: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "READMIT_MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_USERNAME"
        ),
        description="Login on an MLflow server with authentication; also the admin user that "
        "`readmit mlflow-server` creates there.",
    )
    mlflow_tracking_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "READMIT_MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_PASSWORD"
        ),
        description="Password of that login (12 characters at least).",
    )
    mlflow_auth_db_url: str | None = Field(
        default=None,
        description="Database of the MLflow server's users: when set, `readmit mlflow-server` "
        "answers only to logged-in clients (MLflow's basic-auth app).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("READMIT_S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"),
        description="S3-compatible endpoint (MinIO, the local S3 server) for MLflow artifacts.",
    )
    experiment_name: str = Field(default="readmission", description="MLflow experiment.")
    model_name: str = Field(default="readmission", description="Registered model name.")
    promote_min_delta: float = Field(
        default=0.002, description="ROC-AUC a new version must gain over @production."
    )
    audit_min_positives: int = Field(
        default=100,
        ge=1,
        description="Subgroups with fewer test positives are marked small and do not block "
        "promotion (100 events: the usual floor for validating a risk model).",
    )
    audit_max_gap: float = Field(
        default=0.05,
        ge=0,
        description="A subgroup whose ROC-AUC interval lies wholly below the overall test "
        "ROC-AUC minus this blocks promotion.",
    )
    audit_max_calibration_gap: float = Field(
        default=0.05,
        ge=0,
        description="A subgroup whose interval of observed minus mean predicted risk lies "
        "wholly beyond this (either side) blocks promotion.",
    )
    challenger_margin: float | None = Field(
        default=None,
        ge=0,
        description="A new version that is not promoted but whose test ROC-AUC is at most this "
        "much below @production's becomes @challenger; unset: it stays at @staging only.",
    )
    challenger_mode: Literal["off", "shadow", "canary"] = Field(
        default="off",
        description="What the API does with @challenger: `off` (not loaded), `shadow` (scores "
        "every record after the champion's answer is sent; logged, never returned) or "
        "`canary` (answers READMIT_CANARY_PERCENT of patients).",
    )
    canary_percent: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="Share of patients (by a hash of their pseudonym) the challenger answers "
        "in canary mode.",
    )
    stale_run_hours: float = Field(
        default=24.0,
        gt=0,
        description="A RUNNING training run this old, or whose process is gone, is marked KILLED.",
    )
    api_host: str = Field(default="127.0.0.1", description="Bind address of `readmit serve`.")
    api_port: int = Field(default=8000, description="Port of `readmit serve`.")
    ui_host: str = Field(default="127.0.0.1", description="Bind address of `readmit ui`.")
    ui_port: int = Field(default=8501, description="Port of `readmit ui`.")
    api_url: str = Field(default=DEFAULT_API_URL, description="The prediction API the UI calls.")
    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus the UI's service page queries; unset: the API's /metrics.",
    )
    api_key: str | None = Field(
        default=None,
        description="An API key with every scope (named `api_key`): /reload-model, /outcomes, "
        "and the predictions when READMIT_AUTH=keys.",
    )
    auth: Literal["none", "keys"] = Field(
        default="none",
        description="Who may call /predict, /predict-batch and /explain: `none` (anyone who "
        "reaches the port) or `keys` (an X-API-Key with the `predict` scope).",
    )
    api_key_rate: float = Field(
        default=0.0,
        ge=0,
        description="Requests a second each API key may make (0: no limit); more get 429.",
    )
    allow_open_bind: bool = Field(
        default=False,
        description="Let `readmit serve` listen on a non-loopback READMIT_API_HOST with "
        "READMIT_AUTH=none, serving predictions to anyone who reaches the port (refused "
        "otherwise).",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="Named API keys, one a line: `NAME SCOPE[,SCOPE] sha256:HEX` (scopes "
        "predict, outcomes, admin); re-read when it changes, no restart needed.",
    )
    model_poll_seconds: float = Field(
        default=30.0, gt=0, description="How often @production is checked."
    )
    history_poll_seconds: float = Field(
        default=30.0, gt=0, description="How often the API checks for a newer materialisation."
    )
    max_batch: int = Field(default=10_000, gt=0, description="Most records in one /predict-batch.")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0, description="Largest request body.")
    max_header_bytes: int = Field(
        default=32 * 1024, gt=0, description="Largest request line plus headers of the API (431)."
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Time an API connection gets to send a request's headers."
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Time an API request gets to send its whole body (408)."
    )
    keep_alive_seconds: int = Field(
        default=5, gt=0, description="Idle time before the API closes a keep-alive connection."
    )
    max_connections: int = Field(
        default=1000, gt=0, description="Open API connections; more are closed on accept."
    )
    api_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes of `readmit serve`, one per core to use; they share the port, "
        "and /metrics adds them up.",
    )
    api_threads: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Pool threads per API worker running handlers (scoring, body parsing); "
        "requests past them wait their turn in order. Few: threads taking turns at the GIL "
        "stretch every request's latency and keep the event loop (and /health) waiting.",
    )
    max_in_flight: int = Field(
        default=64,
        gt=0,
        description="Most requests in progress per API worker; more are answered 503 with "
        "Retry-After at once (/health and /metrics excepted). The bound in force adapts "
        "below it to READMIT_LATENCY_TARGET_MS.",
    )
    latency_target_ms: float = Field(
        default=35.0,
        ge=0,
        description="90th percentile of a worker's time on an accepted /predict that its "
        "in-flight bound adapts to, between READMIT_API_THREADS and READMIT_MAX_IN_FLIGHT "
        "(a flood is shed sooner so accepted requests stay fast); 0: the bound stays at "
        "READMIT_MAX_IN_FLIGHT.",
    )
    shed_pause_ms: float = Field(
        default=50.0,
        ge=0,
        le=1000,
        description="After a 503 for the in-flight bound, how long `readmit serve` reads "
        "nothing more from that connection: a client that resends at once, ignoring "
        "Retry-After, waits in its own socket instead of taking the CPU from accepted "
        "requests; 0: read on at once.",
    )
    max_queue_ms: float = Field(
        default=1000.0,
        gt=0,
        description="Longest an API request may wait, once its headers are read, for its "
        "worker to start it; past it, 503 with Retry-After at once (/health and /metrics "
        "excepted).",
    )
    log_level: str = Field(default="INFO", description="Level of the JSON logs.")
    stack_postgres_url: str = Field(
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        description="PostgreSQL server `readmit stack up` uses when one answers there.",
    )
    stack_private_pg_port: int = Field(
        default=5433, description="Port of the private cluster `stack up` starts when none answers."
    )
    stack_db_prefix: str = Field(
        default="", description="Prefix of the names of the stack's databases."
    )
    s3_port: int = Field(default=9000, description="Port of the stack's S3 server.")
    airflow_port: int = Field(default=8080, description="Port of the stack's Airflow API server.")
    airflow_parallelism: int = Field(
        default=4, gt=0, le=4, description="Airflow tasks running at once in the stack."
    )
    exporter_port: int = Field(default=9108, description="Port of the stack's pipeline exporter.")
    prometheus_port: int = Field(default=9090, description="Port of the stack's Prometheus.")
    random_seed: int = Field(default=42, description="Seed of every random choice in training.")
    tune_seconds: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Seconds one training may spend searching the XGBoost and LightGBM "
        "hyperparameters on validation (half each), beyond fitting the fixed ones; 0 turns the "
        f"search off. Default: {EMBEDDED_TUNE_SECONDS:g} with the local MLflow store (embedded "
        f"mode), {SERVER_TUNE_SECONDS:g} with an MLflow server.",
    )
    git_commit: str | None = Field(
        default=None,
        description="Commit the code came from (set in images); default: asked of git.",
    )
    debug: bool = Field(
        default=False, description="Let the CLI show the traceback of an unexpected error."
    )

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        """No trailing slash, so paths join; a blank URL means the default."""
        return value.strip().rstrip("/") or DEFAULT_API_URL

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus_url(cls, value: str | None) -> str | None:
        """No trailing slash, so paths join; a blank URL means unset."""
        return None if value is None else value.strip().rstrip("/") or None

    @field_validator("model_name")
    @classmethod
    def _plain_model_name(cls, value: str) -> str:
        if not MODEL_NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"READMIT_MODEL_NAME {value!r} must be 1-100 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("stack_db_prefix")
    @classmethod
    def _plain_db_prefix(cls, value: str) -> str:
        if value and not DB_PREFIX_PATTERN.fullmatch(value):
            raise ValueError(
                f"READMIT_STACK_DB_PREFIX {value!r} must be empty or up to 40 lowercase "
                "letters, digits or '_', not starting with a digit"
            )
        return value

    @property
    def resolved_tune_seconds(self) -> float:
        if self.tune_seconds is not None:
            return self.tune_seconds
        return EMBEDDED_TUNE_SECONDS if self.mlflow_tracking_uri is None else SERVER_TUNE_SECONDS

    @property
    def resolved_raw_db_url(self) -> str:
        return self.raw_db_url or f"sqlite:///{(self.data_dir / 'raw.db').resolve()}"

    @property
    def resolved_clean_db_url(self) -> str:
        return self.clean_db_url or f"sqlite:///{(self.data_dir / 'clean.db').resolve()}"

    @property
    def resolved_monitor_db_url(self) -> str:
        return self.monitor_db_url or f"sqlite:///{(self.data_dir / 'monitor.db').resolve()}"

    @property
    def prediction_spill_dir(self) -> Path:
        """Rows waiting for monitor-db while it is down (0700; files 0600)."""
        return self.data_dir / "prediction-log"

    @property
    def pseudonym_key_file(self) -> Path:
        return self.data_dir / "secrets" / "pseudonym.key"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def resolved_backend_store_uri(self) -> str:
        default = f"sqlite:///{(self.data_dir / 'mlflow-server.db').resolve()}"
        return self.mlflow_backend_store_uri or default

    @property
    def resolved_artifacts_destination(self) -> str:
        default = (self.data_dir / "mlflow-server-artifacts").resolve().as_uri()
        return self.mlflow_artifacts_destination or default

    @property
    def download_dir(self) -> Path:
        return self.data_dir / "downloads"


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per bad setting, named as the user sets it (READMIT_...)."""
    lines = []
    for error in exc.errors():
        name = "_".join(str(part) for part in error["loc"]).upper()
        name = name if name.startswith(("READMIT_", "MLFLOW_")) else f"READMIT_{name}"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(message if message.startswith(name) else f"{name}: {message}")
    return lines


def export_mlflow_login(settings: Settings) -> None:
    """Hand the settings' MLflow login to MLflow's client, which reads it from the environment
    only (a login set in `.env` would otherwise not reach it)."""
    if settings.mlflow_tracking_username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow_tracking_username
    if settings.mlflow_tracking_password:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            settings.mlflow_tracking_password.get_secret_value()
        )


# MLflow's client reads these from the environment only. One retry, sent at once (urllib3
# waits only from the second): a kept-alive connection the server closed as the request left
# is reset, and the retry takes a new one; a server that is down fails in seconds instead of
# MLflow's default minutes of retries. No progress bars in the JSON logs; a logged model
# carries its own pinned requirements, not a copy of the project's uv files.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOG_UV_FILES": "false",
}


def apply_mlflow_client_defaults() -> None:
    """readmit's MLflow client defaults, where the environment does not set its own."""
    for name, value in MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


@lru_cache
def get_settings() -> Settings:
    """Settings read once per process (tests build their own `Settings(...)`)."""
    return Settings()
