"""Champion against challenger on live outcomes: which model ranks the patients seen now better.

- shadow: both models scored the same encounters (a `champion` row and a `shadow` row each), so
  the comparison is paired: the encounters with an outcome that both scored;
- canary: each patient was answered by one model (`champion` or `challenger` rows), so each arm
  is judged on its own encounters and the interval is unpaired.

The difference is ROC-AUC(challenger) - ROC-AUC(champion) with a 95% interval that resamples
patients (their pseudonyms) over both arms at once, so an encounter's two scores move
together. Decisions:
- `wait`: fewer than READMIT_COMPARE_MIN_LABELS labelled encounters, or too few of either
  outcome in an arm, or no challenger scores in the window;
- `promote`: the whole interval lies above zero;
- `keep`: otherwise (no clear gain, or a clear loss).
Each comparison is a row of monitor-db's `comparisons`; `apply` promotes a `promote` through
the registry (as `readmit promote` does) and writes the figures as tags on both versions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score

from readmit.errors import ReadmitError, first_line
from readmit.evaluation import bootstrap_auc_difference
from readmit.monitoring.performance import BOOTSTRAP_ROUNDS, MIN_PER_CLASS
from readmit.settings import Settings
from readmit.storage import monitor
from readmit.storage.db import WRITE_FIRST, transaction
from readmit.storage.monitor import Variant

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER, SHADOW = (
    Variant.CHAMPION.value,
    Variant.CHALLENGER.value,
    Variant.SHADOW.value,
)
CANARY = "canary"
PROMOTE, KEEP, WAIT = "promote", "keep", "wait"
DECISIONS = (PROMOTE, KEEP, WAIT)
LEVEL = 0.95
Z = 1.959963984540054  # the normal quantile of a 95% two-sided interval


class CompareError(ReadmitError):
    """A comparison that cannot be carried out as asked (e.g. --apply on a stale challenger)."""


@dataclass
class Arm:
    """One model's figures on the encounters it is judged on."""

    variant: str
    model_name: str | None
    model_version: str | None
    labelled: int = 0
    positives: int = 0
    roc_auc: float | None = None
    brier: float | None = None


@dataclass
class Comparison:
    mode: str | None  # shadow (paired), canary (unpaired), None (no challenger scores)
    champion: Arm
    challenger: Arm
    labelled: int
    decision: str
    reasons: list[str]
    auc_difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    labelled_needed: int | None = None
    min_labels: int = 0
    window_days: float | None = None
    run_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    applied: bool = False
    archived_version: str | None = None
    comparison_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        """Plain JSON: a figure that is not a finite number is null."""
        body = asdict(self)
        body["run_at"] = self.run_at.isoformat()
        return _finite(body)

    def line(self) -> str:
        """The closing line: decision, difference with its interval, labels."""
        if self.auc_difference is None or self.ci_low is None or self.ci_high is None:
            figures = "no difference yet"
        else:
            figures = (
                f"ROC-AUC challenger - champion {self.auc_difference:+.4f} "
                f"[{self.ci_low:+.4f}, {self.ci_high:+.4f}]"
            )
        versions = (
            f"v{self.challenger.model_version or '-'} vs v{self.champion.model_version or '-'}"
        )
        return (
            f"{self.decision} ({self.mode or 'no challenger'}, {versions}): {figures} on "
            f"{self.labelled:,} labelled encounters (needs {self.min_labels:,})"
        )


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- which rows are compared ------------------------------------------------------------------


def _newest(rows: pd.DataFrame, variants: tuple[str, ...], version: str | None) -> pd.Series | None:
    """The newest row of these variants (of `version` when given)."""
    found = rows[rows["variant"].isin(variants)]
    if version is not None:
        found = found[found["model_version"] == version]
    return None if found.empty else found.iloc[-1]


def _of(rows: pd.DataFrame, variants: tuple[str, ...], newest: pd.Series) -> pd.DataFrame:
    """Rows of these variants by the newest one's model, the newest row per encounter."""
    keep = (
        rows["variant"].isin(variants)
        & (rows["model_name"] == newest["model_name"])
        & (rows["model_version"] == newest["model_version"])
    )
    return rows[keep].drop_duplicates("encounter_id", keep="last")


def _arm(variant: str, newest: pd.Series | None, version: str | None) -> Arm:
    if newest is None:
        return Arm(variant, None, version)
    return Arm(variant, str(newest["model_name"]), str(newest["model_version"]))


def compared_rows(
    labelled: pd.DataFrame, champion: str | None = None, challenger: str | None = None
) -> tuple[str | None, Arm, Arm, pd.DataFrame]:
    """(mode, champion, challenger, rows) of the labelled scores of a window, oldest first
    (storage.monitor.read_labelled's frame, of one model name).

    `champion` and `challenger` are the versions to compare (the registry's @production and
    @challenger); None takes the newest champion row's version, and the newest shadow or
    challenger row's. The mode is the variant of the challenger's newest row. `rows` holds the
    encounters compared: columns encounter_id, patient, label, probability and arm
    (0 champion, 1 challenger); in shadow mode each encounter is in both arms.
    """
    champion_row = _newest(labelled, (CHAMPION,), champion)
    challenger_row = _newest(labelled, (SHADOW, CHALLENGER), challenger)
    first_arm = _arm(CHAMPION, champion_row, champion)
    second_arm = _arm(CHALLENGER, challenger_row, challenger)
    empty = pd.DataFrame(columns=["encounter_id", "patient", "label", "probability", "arm"])
    if champion_row is None or challenger_row is None:
        return None, first_arm, second_arm, empty
    mode = SHADOW if challenger_row["variant"] == SHADOW else CANARY
    first = _of(labelled, (CHAMPION,), champion_row)
    second = _of(labelled, (str(challenger_row["variant"]),), challenger_row)
    if mode == SHADOW:
        both = set(first["encounter_id"]) & set(second["encounter_id"])
        first = first[first["encounter_id"].isin(both)]
        second = second[second["encounter_id"].isin(both)]
    rows = pd.concat([first.assign(arm=0), second.assign(arm=1)], ignore_index=True)
    patient = rows["patient_key"].astype(object)
    fallback = "encounter:" + rows["encounter_id"].astype(str)
    rows = rows.assign(
        patient=patient.where(patient.notna(), fallback),
        label=rows["label"].astype(int),
        probability=rows["probability"].astype(float),
    )
    return mode, first_arm, second_arm, rows[list(empty.columns)].reset_index(drop=True)


# --- figures and the decision -----------------------------------------------------------------


def _fill(arm: Arm, rows: pd.DataFrame) -> None:
    labels = rows["label"].to_numpy(dtype=np.int64)
    arm.labelled, arm.positives = len(labels), int(labels.sum())
    if len(labels):
        arm.brier = float(brier_score_loss(labels, rows["probability"].to_numpy(float)))


def _one_sided(arms: tuple[Arm, Arm]) -> str | None:
    """Why an arm's ROC-AUC cannot be computed yet (too few of an outcome), or None."""
    for arm in arms:
        fewest = min(arm.positives, arm.labelled - arm.positives)
        if fewest < MIN_PER_CLASS:
            return (
                f"the {arm.variant}'s {arm.labelled:,} labelled encounters hold "
                f"{arm.positives:,} readmissions; each outcome needs {MIN_PER_CLASS}"
            )
    return None


def labels_needed(labelled: int, difference: float, low: float, high: float) -> int | None:
    """Labelled encounters at which an interval of this width per encounter would clear zero,
    if the difference held (the width shrinks as 1/sqrt(n)); None when it is not a gain."""
    if not difference > 0 or not high > low:
        return None
    return math.ceil(labelled * ((high - low) / (2 * difference)) ** 2)


def decide(
    labelled: int, low: float, high: float, difference: float, min_labels: int
) -> tuple[str, str]:
    """(decision, why) once the figures exist: promote only on a clear gain with enough labels."""
    interval = f"ROC-AUC difference {difference:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}]"
    if labelled < min_labels:
        return (
            WAIT,
            f"{interval}; {labelled:,} labelled encounters, the decision needs {min_labels:,}",
        )
    if low > 0:
        return PROMOTE, f"{interval} lies above zero: the challenger ranks patients better"
    if high < 0:
        return KEEP, f"{interval} lies below zero: the champion ranks patients better"
    return KEEP, f"{interval} includes zero: no clear difference"


def compare_rows(
    labelled: pd.DataFrame,
    min_labels: int,
    seed: int,
    rounds: int = BOOTSTRAP_ROUNDS,
    champion_version: str | None = None,
    challenger_version: str | None = None,
) -> Comparison:
    """The comparison of the labelled scores of a window (see `compared_rows`)."""
    mode, champion, challenger, rows = compared_rows(labelled, champion_version, challenger_version)
    count = int(rows["encounter_id"].nunique())
    result = Comparison(mode, champion, challenger, count, WAIT, [], min_labels=min_labels)
    if mode is None:
        arm = champion if champion.model_name is None else challenger
        which = "" if arm.model_version is None else f" of v{arm.model_version}"
        result.reasons.append(f"no labelled {arm.variant} scores{which} in the window")
        return result
    _fill(champion, rows[rows["arm"] == 0])
    _fill(challenger, rows[rows["arm"] == 1])
    problem = _one_sided((champion, challenger))
    if problem:
        result.reasons.append(problem)
        return result
    figures = bootstrap_auc_difference(
        rows["label"].to_numpy(np.int64),
        rows["probability"].to_numpy(float),
        rows["arm"].to_numpy(np.int64),
        rows["patient"].to_numpy(object),
        rounds,
        seed,
        LEVEL,
    )
    for number, arm in enumerate((champion, challenger)):
        part = rows[rows["arm"] == number]
        arm.roc_auc = float(roc_auc_score(part["label"], part["probability"]))
    result.auc_difference, result.ci_low, result.ci_high = (
        figures.difference,
        figures.ci_low,
        figures.ci_high,
    )
    result.decision, why = decide(
        count, figures.ci_low, figures.ci_high, figures.difference, min_labels
    )
    result.reasons.append(why)
    result.labelled_needed = labels_needed(
        count, figures.difference, figures.ci_low, figures.ci_high
    )
    return result


Report = Callable[[str], None]


def run_compare(
    settings: Settings,
    days: float | None = None,
    apply: bool = False,
    report: Report = lambda _: None,
) -> Comparison:
    """Compare champion and challenger on the predictions scored in the last `days` (None: all
    time); with `apply`, act on the decision through the registry. The comparison is recorded
    in monitor-db. Raises StorageError when monitor-db cannot be read, CompareError or
    RegistryError when `apply` cannot be carried out."""
    now = datetime.now(UTC)
    since = None if days is None else now - timedelta(days=days)
    engine = monitor.monitor_engine(settings)
    try:
        monitor.ensure_tables(engine)
        labelled = monitor.read_labelled(engine, since)
        labelled = labelled[labelled["model_name"] == settings.model_name]
        where = "all time" if days is None else f"the last {days:g} days"
        report(f"read {len(labelled):,} labelled scores of {settings.model_name}, {where}")
        champion, challenger, notes = _registry_versions(settings)
        if challenger is None and not notes:
            result = Comparison(
                None,
                Arm(CHAMPION, settings.model_name, champion),
                Arm(CHALLENGER, None, None),
                0,
                WAIT,
                [f"no @challenger version of {settings.model_name} in the registry"],
                min_labels=settings.compare_min_labels,
            )
        else:
            result = compare_rows(
                labelled,
                settings.compare_min_labels,
                settings.random_seed,
                champion_version=champion,
                challenger_version=challenger,
            )
            result.reasons[:0] = notes
        result.run_at, result.window_days = now, days
        report(result.line())
        if apply:
            apply_decision(settings, result, report)
        with transaction(engine.execution_options(**{WRITE_FIRST: True}), "monitor-db") as conn:
            result.comparison_id = monitor.insert_comparison(conn, _row(result, since))
    finally:
        engine.dispose()
    log.info(
        "champion and challenger compared",
        extra={
            "step": "compare",
            "decision": result.decision,
            "labelled": result.labelled,
            "champion_version": result.champion.model_version,
            "challenger_version": result.challenger.model_version,
            "applied": result.applied,
        },
    )
    return result


def _registry_versions(settings: Settings) -> tuple[str | None, str | None, list[str]]:
    """@production and @challenger now; a registry that cannot be asked leaves both to the log
    (the newest logged versions), said in the notes."""
    from readmit import registry

    try:
        return (
            registry.alias_holder(settings, registry.PRODUCTION),
            registry.alias_holder(settings, registry.CHALLENGER),
            [],
        )
    except Exception as exc:
        why = first_line(exc) or type(exc).__name__
        return None, None, [f"registry unreadable ({why}): the newest logged versions compared"]


def _row(result: Comparison, since: datetime | None) -> dict[str, Any]:
    return {
        "run_at": result.run_at,
        "window_since": since,
        "mode": result.mode,
        "champion_version": result.champion.model_version,
        "challenger_version": result.challenger.model_version,
        "labelled": result.labelled,
        "decision": result.decision,
        "applied": result.applied,
        "figures": result.as_json(),
    }


def apply_decision(settings: Settings, result: Comparison, report: Report) -> None:
    """Write the figures as tags on both versions and, on `promote`, promote the challenger
    (the champion is archived). Refused when the registry's aliases no longer name the
    compared versions: the evidence is about those two models only."""
    from readmit import registry

    if result.mode is None:
        report("nothing to apply: no comparison")
        return
    champion, challenger = result.champion.model_version, result.challenger.model_version
    assert champion is not None and challenger is not None
    holders = {
        registry.PRODUCTION: registry.alias_holder(settings, registry.PRODUCTION),
        registry.CHALLENGER: registry.alias_holder(settings, registry.CHALLENGER),
    }
    for alias, compared in ((registry.PRODUCTION, champion), (registry.CHALLENGER, challenger)):
        if holders[alias] != compared:
            now = "no version" if holders[alias] is None else f"v{holders[alias]}"
            raise CompareError(
                f"compare --apply: @{alias} is {now} but the logged scores compared are of "
                f"v{compared}; nothing applied"
            )
    registry.tag_versions(settings, live_tags(result))
    if result.decision != PROMOTE:
        report(f"figures tagged on v{champion} and v{challenger}; {result.decision}: no change")
        return
    reason = f"live comparison: {result.reasons[-1]}"
    result.archived_version = registry.promote_challenger(settings, challenger, reason)
    result.applied = True
    report(f"v{challenger} is @production; v{result.archived_version or champion} archived")


def live_tags(result: Comparison) -> dict[str, dict[str, str]]:
    """The comparison's figures as tags of each version: shared figures on both, each model's
    own ROC-AUC and Brier score on its own version."""
    from readmit.registry import Tag

    def number(value: float | None) -> str:
        return "" if value is None or not math.isfinite(value) else f"{value:.6f}"

    shared = {
        Tag.LIVE_DECISION: result.decision,
        Tag.LIVE_DECISION_REASON: "; ".join(result.reasons)[:500],
        Tag.LIVE_MODE: result.mode or "",
        Tag.LIVE_LABELLED: str(result.labelled),
        Tag.LIVE_AUC_DIFFERENCE: number(result.auc_difference),
        Tag.LIVE_AUC_DIFFERENCE_CI_LOW: number(result.ci_low),
        Tag.LIVE_AUC_DIFFERENCE_CI_HIGH: number(result.ci_high),
        Tag.LIVE_COMPARED_AT: result.run_at.isoformat(timespec="seconds"),
    }
    tags = {}
    for arm, other in ((result.champion, result.challenger), (result.challenger, result.champion)):
        assert arm.model_version is not None
        tags[arm.model_version] = {
            **shared,
            Tag.LIVE_ROLE: arm.variant,
            Tag.LIVE_COMPARED_WITH_VERSION: other.model_version or "",
            Tag.LIVE_ROC_AUC: number(arm.roc_auc),
            Tag.LIVE_BRIER: number(arm.brier),
        }
    return tags
