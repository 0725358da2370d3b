"""What is in raw-db and clean-db right now: batches, rows per table, the last clean build;
and which version is @production, and whether its files are in the artifact store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from readmit.errors import StorageError, first_line
from readmit.settings import Settings
from readmit.storage import clean, raw


@dataclass
class Status:
    batches: list[dict[str, Any]] = field(default_factory=list)
    table_rows: dict[str, int] = field(default_factory=dict)
    last_build: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProductionModel:
    """`artifacts` is "present", "missing" or "unknown" (the registry or the store did not
    answer); `detail` says what was found, in one line."""

    name: str
    version: str | None
    artifacts: str
    detail: str


def production_model(settings: Settings) -> ProductionModel:
    """The @production version and whether its artifacts can be had; never raises."""
    from readmit.registry import PRODUCTION, by_alias, client_for, missing_artifacts

    name = settings.model_name
    try:
        client = client_for(settings)
        holder = by_alias(client, name, PRODUCTION)
        if holder is None:
            return ProductionModel(name, None, "unknown", f"no version of {name} is @production")
        version = str(holder.version)
        missing = missing_artifacts(client, name, version)
    except Exception as exc:
        return ProductionModel(
            name, None, "unknown", f"registry unreachable: {type(exc).__name__}: {first_line(exc)}"
        )
    if missing is not None:
        return ProductionModel(name, version, "missing", missing)
    return ProductionModel(name, version, "present", f"{name} v{version} is @production")


def collect_status(settings: Settings) -> Status:
    """Read both databases (creating empty tables if they are new)."""
    status = Status()
    engine = raw.open_raw_db(settings)
    try:
        status.batches = raw.batch_records(engine)
        status.table_rows.update(raw.table_rows(engine))
    finally:
        engine.dispose()
    engine = clean.open_clean_db(settings)
    try:
        status.table_rows.update(clean.table_rows(engine))
        try:
            build = clean.latest_build(engine)
            status.last_build = {
                "build_id": build.build_id,
                "created_at": build.created_at,
                "raw_batches": build.raw_batches,
                "rows": build.rows,
                "features": build.transform.width,
            }
        except StorageError:
            status.last_build = None
    finally:
        engine.dispose()
    return status
