"""Every MLflow model-registry call: register, compare, promote, roll back, resolve.

Aliases carry the truth (`@staging`, `@production` the champion, `@challenger`); stages are
mirrored (Staging, Production, Archived) for registry views that still show them (a challenger
keeps its stage). Decisions and scores are version tags.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from readmit.errors import ReadmitError, first_line
from readmit.model import TrainingInfo
from readmit.registered import ModelRefused, load_checked, missing_artifacts_message
from readmit.settings import Settings
from readmit.tracking import connect

STAGING = "staging"
PRODUCTION = "production"
CHALLENGER = "challenger"
TAG_PREFIX = "readmit."
PROMOTED = "promoted"
KEPT_IN_STAGING = "kept_in_staging"
ABANDONED = "abandoned"
log = logging.getLogger(__name__)


class Tag:
    """Every tag readmit sets on training runs and model versions (all under TAG_PREFIX)."""

    # Lineage, on the training run and on the version it registered.
    CLEAN_BUILD = "readmit.clean_build"
    RAW_BATCHES = "readmit.raw_batches"
    DATASET_SHA256 = "readmit.dataset_sha256"
    GIT_COMMIT = "readmit.git_commit"
    HISTORY_SOURCE = "readmit.history_source"
    # The training run's owner (stale runs are repaired) and its outcome.
    HOST = "readmit.host"
    PID = "readmit.pid"
    REPAIRED = "readmit.repaired"
    MODEL_VERSION = "readmit.model_version"
    # A monitoring run: the model it judged and its verdict.
    MODEL_NAME = "readmit.model_name"
    VERDICT = "readmit.verdict"
    # The version: its run, the promotion decision, and its time in production.
    RUN_ID = "readmit.run_id"
    DECISION = "readmit.decision"
    DECISION_REASON = "readmit.decision_reason"
    CANDIDATE_TEST_AUC = "readmit.candidate_test_auc"
    PRODUCTION_TEST_AUC = "readmit.production_test_auc"
    COMPARED_WITH_VERSION = "readmit.compared_with_version"
    CHAMPION_PROBLEM = "readmit.champion_problem"
    DECIDED_AT = "readmit.decided_at"
    PROMOTED_AT = "readmit.promoted_at"
    PROMOTION_REASON = "readmit.promotion_reason"
    ARCHIVED_AT = "readmit.archived_at"
    ROLLED_BACK_AT = "readmit.rolled_back_at"
    # The latest live comparison of champion and challenger, on both versions.
    LIVE_DECISION = "readmit.live_decision"
    LIVE_DECISION_REASON = "readmit.live_decision_reason"
    LIVE_MODE = "readmit.live_mode"
    LIVE_ROLE = "readmit.live_role"
    LIVE_COMPARED_WITH_VERSION = "readmit.live_compared_with_version"
    LIVE_LABELLED = "readmit.live_labelled"
    LIVE_ROC_AUC = "readmit.live_roc_auc"
    LIVE_BRIER = "readmit.live_brier"
    LIVE_AUC_DIFFERENCE = "readmit.live_auc_difference"
    LIVE_AUC_DIFFERENCE_CI_LOW = "readmit.live_auc_difference_ci_low"
    LIVE_AUC_DIFFERENCE_CI_HIGH = "readmit.live_auc_difference_ci_high"
    LIVE_COMPARED_AT = "readmit.live_compared_at"
    # The subgroup audit: "passed" or "failed: <groups>", and a person's reason to override it.
    AUDIT = "readmit.audit"
    AUDIT_OVERRIDE = "readmit.audit_override"
    # The version's time as @challenger.
    CHALLENGER_SINCE = "readmit.challenger_since"
    CHALLENGER_REASON = "readmit.challenger_reason"
    CHALLENGER_CLEARED_AT = "readmit.challenger_cleared_at"


def lineage_tags(info: TrainingInfo) -> dict[str, str]:
    """The data and code a model came from, as tags of its run and of its version."""
    values = {
        Tag.CLEAN_BUILD: info.clean_build,
        Tag.RAW_BATCHES: info.raw_batches,
        Tag.DATASET_SHA256: info.dataset_sha256,
        Tag.GIT_COMMIT: info.git_commit,
        Tag.HISTORY_SOURCE: info.history_source,
    }
    return {tag: value for tag, value in values.items() if value is not None}


class RegistryError(ReadmitError):
    """A registry operation could not be carried out."""


@dataclass
class Decision:
    version: str
    promoted: bool
    candidate_auc: float
    production_version: str | None
    production_auc: float | None
    reason: str
    audit: str = ""  # why the subgroup audit failed; empty when it passed
    challenger: bool = False  # not promoted, but close enough to be set as @challenger

    @property
    def outcome(self) -> str:
        """The decision tag's value."""
        return PROMOTED if self.promoted else KEPT_IN_STAGING

    @property
    def audit_verdict(self) -> str:
        """The audit tag's value."""
        return audit_tag(self.audit)


def client_for(settings: Settings) -> MlflowClient:
    """A client on the configured registry; registry calls need no experiment."""
    connect(settings)
    return MlflowClient()


def _stage(client: MlflowClient, name: str, version: str, stage: str) -> None:
    """Mirror an alias as a stage. Never archive in bulk: that call fails on PostgreSQL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.transition_model_version_stage(name, version, stage, archive_existing_versions=False)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None when no version (or no model) has it."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def missing_artifacts(client: MlflowClient, name: str, version: str) -> str | None:
    """Why a registered version cannot be loaded because its files are gone (the registry
    still names them), or None when its MLmodel is in the artifact store. Raises when the
    registry or the artifact store cannot be asked."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    uri = client.get_model_version_download_uri(name, version)
    files = {PurePosixPath(f.path).name for f in get_artifact_repository(uri).list_artifacts()}
    return None if "MLmodel" in files else missing_artifacts_message(name, version, uri)


def register(settings: Settings, model_uri: str, run_id: str, tags: dict[str, str]) -> str:
    """Register a logged model as a new version of the model, at @staging (stage Staging)."""
    client = client_for(settings)
    name = settings.model_name
    version = mlflow.register_model(model_uri, name, tags=tags).version
    version = str(version)
    try:
        client.set_registered_model_alias(name, STAGING, version)
        _stage(client, name, version, "Staging")
        client.set_model_version_tag(name, version, Tag.RUN_ID, run_id)
    except Exception:
        client.delete_model_version(name, version)
        raise
    return version


def discard_version(settings: Settings, version: str) -> None:
    """Remove a version whose run failed after registration, so none is left half-done."""
    client = client_for(settings)
    for alias in (STAGING, PRODUCTION, CHALLENGER):
        holder = by_alias(client, settings.model_name, alias)
        if holder is not None and str(holder.version) == str(version):
            client.delete_registered_model_alias(settings.model_name, alias)
    client.delete_model_version(settings.model_name, version)


def champion_auc(
    settings: Settings, version: str, inputs: pd.DataFrame, labels: np.ndarray
) -> tuple[float | None, str]:
    """Test ROC-AUC of the @production version, loaded from its plain files (never unpickled).

    A champion that is not a readmit model, whose files are gone or broken, or that cannot
    score gives (None, why): the candidate then has no comparable champion, instead of every
    training failing on it. (When the whole store is down, promoting the candidate fails next,
    because promotion fetches and checks the candidate the same way.)
    """
    try:
        model = load_checked(settings, version)
        probabilities = np.asarray(model.predict_frame(inputs), dtype=np.float64)
        return float(roc_auc_score(labels, probabilities)), ""
    except ModelRefused as exc:
        return None, f"refused: {exc.reason}"
    except Exception as exc:
        return None, f"could not be scored: {type(exc).__name__}: {first_line(exc)[:300]}"


def audit_tag(audit_failure: str) -> str:
    return f"failed: {audit_failure}" if audit_failure else "passed"


def decide(
    candidate_auc: float,
    champion: str | None,
    champion_score: float | None,
    problem: str,
    min_delta: float,
    audit_failure: str = "",
) -> tuple[bool, str]:
    """Promote, and why: never when the subgroup audit failed (`audit_failure` names the
    groups); otherwise when there is no champion, when it cannot be compared (`problem` says
    why), or when the candidate's test ROC-AUC beats it by `min_delta` at least."""
    if audit_failure:
        return False, f"subgroup audit failed: {audit_failure}"
    if champion is None:
        return True, "no production model yet"
    if champion_score is None:
        return True, f"no comparable champion: production v{champion} {problem}"
    gain = candidate_auc - champion_score
    promoted = gain >= min_delta
    reason = (
        f"test ROC-AUC {candidate_auc:.4f} vs production v{champion} {champion_score:.4f}: "
        f"gain {gain:+.4f} {'>=' if promoted else '<'} {min_delta}"
    )
    return promoted, reason


def near_miss(candidate_auc: float, champion_score: float | None, margin: float | None) -> bool:
    """A candidate not promoted is worth a live comparison (as @challenger) when its test
    ROC-AUC is at most `margin` below a comparable champion's; no margin set: never."""
    if margin is None or champion_score is None:
        return False
    return candidate_auc >= champion_score - margin


def compare_and_promote(
    settings: Settings,
    version: str,
    candidate_auc: float,
    inputs: pd.DataFrame,
    labels: np.ndarray,
    audit_failure: str = "",
) -> Decision:
    """Promote `version` if it passed its subgroup audit and there is no production model or
    it beats production by the margin.

    Both are scored on the same current test set; the decision, both scores and the audit are
    recorded on the new version.
    """
    client = client_for(settings)
    name = settings.model_name
    current = by_alias(client, name, PRODUCTION)
    production_auc: float | None = None
    problem = ""
    if current is not None:
        production_auc, problem = champion_auc(settings, str(current.version), inputs, labels)
    champion = None if current is None else str(current.version)
    promoted, reason = decide(
        candidate_auc, champion, production_auc, problem, settings.promote_min_delta, audit_failure
    )
    if champion is not None and production_auc is None:
        log.warning(
            "champion not comparable",
            extra={"model_version": version, "production_version": champion, "reason": problem},
        )
    tags = {
        Tag.DECISION: PROMOTED if promoted else KEPT_IN_STAGING,
        Tag.DECISION_REASON: reason,
        Tag.CANDIDATE_TEST_AUC: f"{candidate_auc:.6f}",
        Tag.PRODUCTION_TEST_AUC: "" if production_auc is None else f"{production_auc:.6f}",
        Tag.COMPARED_WITH_VERSION: champion or "",
        Tag.CHAMPION_PROBLEM: problem,
        Tag.AUDIT: audit_tag(audit_failure)[:5000],
        Tag.DECIDED_AT: _now(),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    challenger = (
        not promoted
        and not audit_failure
        and near_miss(candidate_auc, production_auc, settings.challenger_margin)
    )
    if promoted:
        promote(settings, version, reason="automatic: " + reason)
    elif challenger:
        set_challenger(
            settings, version, f"within {settings.challenger_margin} of production: {reason}"
        )
    return Decision(
        version=version,
        promoted=promoted,
        candidate_auc=candidate_auc,
        production_version=champion,
        production_auc=production_auc,
        reason=reason,
        audit=audit_failure,
        challenger=challenger,
    )


def promote(settings: Settings, version: str, reason: str = "manual") -> str | None:
    """Move @production to `version` and archive the previous one; returns that previous one.

    The version must first load from its plain files and score its own input example
    (ModelRefused says why not), so no path puts a model that cannot predict in production.
    """
    client = client_for(settings)
    name = settings.model_name
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"registry: {name} has no version {version}") from exc
    load_checked(settings, version)
    previous = by_alias(client, name, PRODUCTION)
    client.set_registered_model_alias(name, PRODUCTION, version)
    _stage(client, name, version, "Production")
    for alias in (STAGING, CHALLENGER):  # a champion is no longer a candidate
        holder = by_alias(client, name, alias)
        if holder is not None and str(holder.version) == str(version):
            client.delete_registered_model_alias(name, alias)
    client.set_model_version_tag(name, version, Tag.PROMOTED_AT, _now())
    client.set_model_version_tag(name, version, Tag.PROMOTION_REASON, reason)
    if previous is None or str(previous.version) == str(version):
        return None
    _stage(client, name, str(previous.version), "Archived")
    client.set_model_version_tag(name, str(previous.version), Tag.ARCHIVED_AT, _now())
    return str(previous.version)


def promote_by_hand(
    settings: Settings, version: str, override_audit: str | None = None
) -> str | None:
    """`readmit promote`: a version that failed its subgroup audit moves only with a person's
    reason, which is recorded on the version; returns the version archived, if any."""
    client = client_for(settings)
    name = settings.model_name
    try:
        audit = client.get_model_version(name, version).tags.get(Tag.AUDIT, "")
    except MlflowException as exc:
        raise RegistryError(f"registry: {name} has no version {version}") from exc
    failed = audit.startswith("failed")
    if failed and not (override_audit or "").strip():
        raise RegistryError(
            f"registry: {name} v{version} failed its subgroup audit ({audit[8:300]}); "
            "promote it anyway with --override-audit REASON"
        )
    if not failed:
        return promote(settings, version, reason="manual promotion")
    reason = str(override_audit).strip()
    client.set_model_version_tag(name, version, Tag.AUDIT_OVERRIDE, reason)
    return promote(settings, version, reason=f"manual promotion, audit overridden: {reason}")


def set_challenger(settings: Settings, version: str, reason: str = "manual") -> str | None:
    """Move @challenger to `version`; returns the version that held it before (or None).

    Only a version that passes the checks promotion applies: it exists, is not the champion,
    and loads from its plain files and scores its own input example (ModelRefused says why
    not). RegistryError names a version that is not a number or not there.
    """
    if not version.isdigit() or int(version) < 1:
        raise RegistryError(f"challenger version {version!r}: not a version number (1, 2, ...)")
    client = client_for(settings)
    name = settings.model_name
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"registry: {first_line(exc)}") from exc
        raise RegistryError(f"challenger version {version}: {name} has no such version") from exc
    champion = by_alias(client, name, PRODUCTION)
    if champion is not None and str(champion.version) == version:
        raise RegistryError(
            f"challenger version {version}: {name} v{version} is @production already"
        )
    load_checked(settings, version)
    previous = by_alias(client, name, CHALLENGER)
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(name, version, Tag.CHALLENGER_SINCE, _now())
    client.set_model_version_tag(name, version, Tag.CHALLENGER_REASON, reason)
    if previous is None or str(previous.version) == version:
        return None
    client.set_model_version_tag(name, str(previous.version), Tag.CHALLENGER_CLEARED_AT, _now())
    return str(previous.version)


def clear_challenger(settings: Settings) -> str | None:
    """Remove @challenger; returns the version that held it (None when none did)."""
    client = client_for(settings)
    name = settings.model_name
    holder = by_alias(client, name, CHALLENGER)
    if holder is None:
        return None
    client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, str(holder.version), Tag.CHALLENGER_CLEARED_AT, _now())
    return str(holder.version)


def rollback(settings: Settings) -> tuple[str, str]:
    """Give @production back to the version that held it before; returns (from, to)."""
    client = client_for(settings)
    name = settings.model_name
    current = by_alias(client, name, PRODUCTION)
    if current is None:
        raise RegistryError(f"registry: {name} has no @production version to roll back")
    earlier = [
        v
        for v in client.search_model_versions(f"name='{name}'")
        if str(v.version) != str(current.version) and _served_without_rollback(v)
    ]
    if not earlier:
        raise RegistryError(
            f"registry: no version of {name} was in production before v{current.version}"
        )
    target = max(earlier, key=lambda v: v.tags[Tag.PROMOTED_AT])
    client.set_model_version_tag(name, str(current.version), Tag.ROLLED_BACK_AT, _now())
    promote(settings, str(target.version), reason=f"rollback from v{current.version}")
    return str(current.version), str(target.version)


def _served_without_rollback(version: ModelVersion) -> bool:
    """Was in production, and was not rolled back since it was last promoted."""
    promoted = version.tags.get(Tag.PROMOTED_AT)
    rolled_back = version.tags.get(Tag.ROLLED_BACK_AT)
    return promoted is not None and (rolled_back is None or rolled_back < promoted)


def production_uri(settings: Settings) -> str:
    return f"models:/{settings.model_name}@{PRODUCTION}"


def versions(settings: Settings) -> list[ModelVersion]:
    client = client_for(settings)
    found = client.search_model_versions(f"name='{settings.model_name}'")
    return sorted(found, key=lambda v: int(v.version))


def run_id_of(settings: Settings, name: str, version: str) -> str:
    """The training run a registered version came from (RegistryError when unknown)."""
    client = client_for(settings)
    try:
        found = client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"registry: {name} version {version} is unknown: {exc}") from None
    if not found.run_id:
        raise RegistryError(f"registry: {name} version {version} names no training run")
    return str(found.run_id)


def alias_holder(settings: Settings, alias: str) -> str | None:
    """The version holding `alias` now, or None."""
    found = by_alias(client_for(settings), settings.model_name, alias)
    return None if found is None else str(found.version)


def tag_versions(settings: Settings, tags: dict[str, dict[str, str]]) -> None:
    """Set tags on several versions: {version: {tag: value}}."""
    client = client_for(settings)
    for version, values in tags.items():
        for key, value in values.items():
            client.set_model_version_tag(settings.model_name, version, key, value)


def promote_challenger(settings: Settings, version: str, reason: str) -> str | None:
    """Promote the @challenger `version` as `promote` does (checked, previous archived), then
    take @challenger off it: a champion is no longer its own challenger. Returns the archived
    version."""
    archived = promote(settings, version, reason=reason)
    client = client_for(settings)
    holder = by_alias(client, settings.model_name, CHALLENGER)
    if holder is not None and str(holder.version) == str(version):
        client.delete_registered_model_alias(settings.model_name, CHALLENGER)
    return archived
