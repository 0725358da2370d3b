"""The Feast feature repository: entity `patient`, feature view `patient_history`.

The source is clean-db's `patient_history` table (one row per encounter: the patient's history
through it, at its encounter-order time, `features.HISTORY_EPOCH`). Where the stores live
follows clean-db, so switching modes stays configuration:

- clean-db on PostgreSQL (the stack, Compose, Kubernetes): the offline store reads the table in
  place, the online store and the registry are tables of the same database.
- clean-db on SQLite (embedded): the table is exported to a Parquet file for the file offline
  store; the online store is a SQLite file and the registry a file, under
  `<data dir>/feature-store/`.

`apply` and `materialize` run after every clean build; `historical_history` is the point-in-time
retrieval; the API reads through `lookup`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import make_url

from readmit.errors import StorageError
from readmit.features import HISTORY_EPOCH
from readmit.files import private_dir
from readmit.schema import HISTORY_FIELDS
from readmit.settings import Settings
from readmit.storage.clean import (
    latest_build,
    open_clean_db,
    read_history,
    record_materialisation,
)

Report = Callable[[str], None]

log = logging.getLogger(__name__)
PROJECT = "readmit"
ENTITY = "patient"
JOIN_KEY = "patient_nbr"
VIEW = "patient_history"
FEATURES = [f"{VIEW}:{name}" for name in HISTORY_FIELDS]
# A point-in-time join takes rows at or before the entity's time: "just before encounter e" is
# one second before its time, as encounter ids (the clock's seconds) are whole numbers.
JUST_BEFORE = timedelta(seconds=1)


def folder(settings: Settings) -> Path:
    return private_dir(settings.data_dir / "feature-store")


def on_postgres(settings: Settings) -> bool:
    return make_url(settings.resolved_clean_db_url).get_backend_name() == "postgresql"


def offline_file(settings: Settings) -> Path:
    return folder(settings) / "patient_history.parquet"


def online_file(settings: Settings) -> Path:
    return folder(settings) / "online.db"


def offline_name(settings: Settings) -> str:
    return "PostgreSQL (clean-db)" if on_postgres(settings) else str(offline_file(settings))


def _postgres(settings: Settings) -> dict[str, Any]:
    url = make_url(settings.resolved_clean_db_url)
    return {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "database": url.database or "postgres",
        "user": url.username or "postgres",
        "password": url.password or "",
        "sslmode": str(url.query.get("sslmode", "prefer")),
    }


PROMETHEUS_DIRS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def _import_feast() -> None:
    """Import Feast's metrics module once, undoing what it does to the environment: it points
    prometheus_client's multiprocess mode at a folder of its own, which would empty the API's
    /metrics in any process that also uses the feature store."""
    saved = {name: os.environ.get(name) for name in PROMETHEUS_DIRS}
    import feast.metrics  # noqa: F401

    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


_import_feast()  # before anything else imports Feast


def repo_config(settings: Settings) -> Any:
    """The Feast configuration for these settings (no feature_store.yaml: one source of truth)."""
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
        PostgreSQLOfflineStoreConfig,
    )
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.infra.online_stores.postgres_online_store.postgres import (
        PostgreSQLOnlineStoreConfig,
    )
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.infra.registry.sql import SqlRegistryConfig
    from feast.repo_config import RegistryConfig, RepoConfig

    if on_postgres(settings):
        url = make_url(settings.resolved_clean_db_url).set(drivername="postgresql+psycopg")
        registry = SqlRegistryConfig(
            registry_type="sql",
            path=url.render_as_string(hide_password=False),
            cache_ttl_seconds=60,
        )
        return RepoConfig(
            project=PROJECT,
            provider="local",
            registry=registry,
            offline_store=PostgreSQLOfflineStoreConfig(**_postgres(settings)),
            online_store=PostgreSQLOnlineStoreConfig(**_postgres(settings)),
            entity_key_serialization_version=3,
        )
    base = folder(settings)
    return RepoConfig(
        project=PROJECT,
        provider="local",
        registry=RegistryConfig(path=str(base / "registry.db"), cache_ttl_seconds=60),
        offline_store=DaskOfflineStoreConfig(),
        online_store=SqliteOnlineStoreConfig(path=str(online_file(settings))),
        entity_key_serialization_version=3,
        repo_path=base,
    )


def definitions(settings: Settings) -> list[Any]:
    """The entity, the source and the feature view, for `apply`."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )
    from feast.types import Int64

    patient = Entity(
        name=ENTITY,
        join_keys=[JOIN_KEY],
        value_type=ValueType.INT64,
        description="A patient (patient_nbr of the data set)",
    )
    source: Any
    if on_postgres(settings):
        columns = ", ".join(["patient_nbr", "event_timestamp", *HISTORY_FIELDS])
        source = PostgreSQLSource(
            name="patient_history_source",
            query=f"SELECT {columns} FROM patient_history",
            timestamp_field="event_timestamp",
        )
    else:
        source = FileSource(
            name="patient_history_source",
            path=str(offline_file(settings)),
            timestamp_field="event_timestamp",
        )
    view = FeatureView(
        name=VIEW,
        entities=[patient],
        ttl=timedelta(0),  # history never expires
        schema=[Field(name=name, dtype=Int64) for name in HISTORY_FIELDS],
        online=True,
        source=source,
        description="The patient's history through an encounter, earlier encounters included",
    )
    return [patient, source, view]


def open_store(settings: Settings) -> Any:
    from feast import FeatureStore

    return FeatureStore(config=repo_config(settings))


def export_offline(settings: Settings) -> int:
    """Embedded mode: clean-db's history table as the Parquet file the file store reads."""
    engine = open_clean_db(settings)
    try:
        history = read_history(engine)
    finally:
        engine.dispose()
    path = offline_file(settings)
    partial = path.with_suffix(".partial")
    history.drop(columns=["encounter_id"]).to_parquet(partial, index=False)
    partial.chmod(0o600)
    partial.replace(path)
    return len(history)


def apply(settings: Settings) -> Any:
    """Register the definitions (idempotent) and return the store."""
    if not on_postgres(settings):
        export_offline(settings)
    store = open_store(settings)
    store.apply(definitions(settings))
    return store


@dataclass
class MaterialiseResult:
    build_id: str
    patients: int
    encounters: int
    online_store: str
    seconds: float


def materialize(settings: Settings, report: Report = lambda _: None) -> MaterialiseResult:
    """Apply the repository and load every patient's latest history into the online store.

    Run after every clean build. The whole clock is covered, so a rebuilt history (a batch
    that adds encounters anywhere in the encounter order) replaces what was there; the API's
    history cache reloads once the materialisation is recorded in clean-db."""
    clock = time.perf_counter()
    engine = open_clean_db(settings)
    try:
        build = latest_build(engine)
        history = read_history(engine)
        store = apply(settings)
        report(f"applied the feature repository (offline store: {offline_name(settings)})")
        store.materialize(start_date=HISTORY_EPOCH - timedelta(days=1), end_date=datetime.now(UTC))
        if not on_postgres(settings):
            for written in (online_file(settings), folder(settings) / "registry.db"):
                if written.exists():
                    written.chmod(0o600)  # patient history, keyed by patient number
        patients = int(history["patient_nbr"].nunique())
        record_materialisation(engine, build.build_id, patients)
    finally:
        engine.dispose()
    online = (
        "PostgreSQL (clean-db)" if on_postgres(settings) else str(folder(settings) / "online.db")
    )
    report(f"materialised the history of {patients:,} patients into the online store {online}")
    log.info("feature store materialised", extra={"step": "materialise", "patients": patients})
    return MaterialiseResult(
        build.build_id, patients, len(history), online, time.perf_counter() - clock
    )


def historical_history(settings: Settings, encounters: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time history of `encounters` (columns `encounter_id`, `patient_nbr`): for each,
    its patient's history as of just before it, from the feature store's offline store.
    Returns `encounter_id` and the history fields (0 for a patient's first encounter)."""
    from readmit.features import event_times

    entity = pd.DataFrame(
        {
            "encounter_id": encounters["encounter_id"].astype("int64").to_numpy(),
            JOIN_KEY: encounters["patient_nbr"].astype("int64").to_numpy(),
            "event_timestamp": (event_times(encounters["encounter_id"]) - JUST_BEFORE).to_numpy(),
        }
    )
    store = open_store(settings)
    frame = store.get_historical_features(entity_df=entity, features=FEATURES).to_df()
    # The file store leaves out entity rows with no earlier row: the patient's first encounter.
    found = frame.set_index("encounter_id")[list(HISTORY_FIELDS)]
    out = found.reindex(entity["encounter_id"]).fillna(0).astype("int64")
    return out.reset_index()


def training_history(settings: Settings, frames: dict[str, pd.DataFrame], build_id: str) -> str:
    """Training's history features, read from the feature store's point-in-time retrieval
    (the definitions the API serves), put into each split's frame in place.

    The clean build computed the same counts when it wrote the history table the store reads;
    a frame whose retrieved history differs (a definition changed on one side only, a store
    left on another build) is an error, never a silent retrain on other numbers. Returns where
    the history came from, for the run's lineage."""
    clock = time.perf_counter()
    apply(settings)
    for split, frame in frames.items():
        retrieved = historical_history(settings, frame)[list(HISTORY_FIELDS)].to_numpy()
        differ = int((retrieved != frame[list(HISTORY_FIELDS)].to_numpy()).any(axis=1).sum())
        if differ:
            raise StorageError(
                f"feature store: the point-in-time history of {differ:,} of {len(frame):,} "
                f"{split} encounters differs from clean build {build_id}'s; run `readmit clean` "
                "then `readmit materialise`"
            )
        frame[list(HISTORY_FIELDS)] = retrieved
    rows = sum(len(f) for f in frames.values())
    log.info(
        "training history retrieved",
        extra={"step": "train", "encounters": rows, "seconds": time.perf_counter() - clock},
    )
    return f"feast {PROJECT}/{VIEW} point-in-time, offline store {offline_name(settings)}"
