"""The next training or promotion repairs what a killed one left behind.

A training killed after registering leaves a RUNNING run and a version with no decision; one
killed while moving `@production` leaves two versions in stage Production. Nothing else would
ever finish them, so `repair` does, before any new lifecycle step:

- a RUNNING run of the experiment whose process is gone is marked KILLED. Training runs carry
  the host and pid of their process: on the same host the pid is checked; any run older than
  READMIT_STALE_RUN_HOURS counts as gone (other hosts, reused pids);
- a version whose training run ended (failed, killed) without a decision, or decided to promote
  it and ended before the promotion landed, is tagged `readmit.decision=abandoned`, loses
  `@staging` and is archived;
- only the `@production` version is in stage Production; others found there are archived.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from mlflow.entities import RunStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from readmit.registry import (
    ABANDONED,
    PRODUCTION,
    PROMOTED,
    STAGING,
    Tag,
    _now,
    _stage,
    by_alias,
    client_for,
)
from readmit.settings import Settings
from readmit.stack.processes import alive

log = logging.getLogger(__name__)
ENDED = {"FAILED", "KILLED"}


def owner_tags() -> dict[str, str]:
    """Tags naming this process, so a later run can tell whether it is still alive."""
    return {Tag.HOST: socket.gethostname(), Tag.PID: str(os.getpid())}


def _gone(tags: dict[str, str], started_ms: int, stale_hours: float) -> str | None:
    """Why the run's process is gone, or None while it may still be running."""
    pid = tags.get(Tag.PID, "")
    if tags.get(Tag.HOST) == socket.gethostname() and pid.isdigit() and not alive(int(pid)):
        return f"its process {pid} on this host is gone"
    hours = (time.time() * 1000 - started_ms) / 3_600_000
    return f"it started {hours:.1f} h ago, over {stale_hours} h" if hours > stale_hours else None


def repair_runs(client: MlflowClient, settings: Settings) -> list[str]:
    """Mark RUNNING runs of the experiment whose process is gone as KILLED."""
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return []
    running = client.search_runs(
        [experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=1000
    )
    done = []
    for run in running:
        why = _gone(run.data.tags, run.info.start_time, settings.stale_run_hours)
        if why is None:
            continue
        client.set_tag(run.info.run_id, Tag.REPAIRED, f"marked KILLED: {why}")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        done.append(f"run {run.info.run_id} ({run.info.run_name}) marked KILLED: {why}")
    return done


def _run_status(client: MlflowClient, version: ModelVersion) -> str | None:
    run_id = version.tags.get(Tag.RUN_ID) or version.run_id
    if not run_id:
        return None
    try:
        return str(client.get_run(run_id).info.status)
    except MlflowException:
        return None


def _unfinished(tags: dict[str, str]) -> str | None:
    """The lifecycle step a version never got past, or None when it is complete."""
    decision = tags.get(Tag.DECISION)
    if decision is None:
        return "a decision"
    if decision == PROMOTED and Tag.PROMOTED_AT not in tags:
        return "the promotion landed"
    return None


def repair_versions(client: MlflowClient, settings: Settings) -> list[str]:
    """Archive undecided versions of ended runs; keep stage Production for @production only."""
    name = settings.model_name
    production = by_alias(client, name, PRODUCTION)
    staging = by_alias(client, name, STAGING)
    production_version = None if production is None else str(production.version)
    done = []
    for version in client.search_model_versions(f"name='{name}'"):
        number = str(version.version)
        if number == production_version:
            if version.current_stage != "Production":
                _stage(client, name, number, "Production")
                done.append(f"v{number} holds @production: stage set to Production")
            continue
        unfinished = _unfinished(version.tags)
        status = _run_status(client, version) if unfinished else None
        if status in ENDED:
            reason = f"its training run ended {status} before {unfinished}"
            client.set_model_version_tag(name, number, Tag.DECISION, ABANDONED)
            client.set_model_version_tag(name, number, Tag.DECISION_REASON, reason)
            if staging is not None and str(staging.version) == number:
                client.delete_registered_model_alias(name, STAGING)
            done.append(f"v{number} abandoned: {reason}")
        if version.current_stage == "Production" or status in ENDED:
            _stage(client, name, number, "Archived")
            client.set_model_version_tag(name, number, Tag.ARCHIVED_AT, _now())
            done.append(f"v{number} archived: not @production")
    return done


def repair(settings: Settings) -> list[str]:
    """Repair runs, then versions; returns one line per repair (also logged)."""
    client = client_for(settings)
    done = repair_runs(client, settings) + repair_versions(client, settings)
    for line in done:
        log.warning("repaired", extra={"repair": line})
    return done
