"""Traffic for a running API: encounters of the test split, as they are or shifted the way a
hospital's data really shifts, scored through /predict-batch; their true outcomes are posted
to /outcomes later, as a hospital would once the 30 days are over.

Scenarios (each one changes one thing, so the monitor can be checked against what changed):
- `steady`: the test split as it is;
- `case-mix`: emergency admissions of patients aged 70 and over only;
- `a1c-measured`: a coding change, HbA1c measured for 90 % of patients (results drawn from the
  split's measured ones) where the split measures ~17 %;
- `specialty-missing`: a coding change, `medical_specialty` no longer sent (missing for all);
- `hours-for-days`: an upstream unit error, `time_in_hospital` sent in hours instead of days;
- `poor-ranking`: the records of `steady`, but outcomes come back only for the encounters the
  model ranks worst (readmitted patients it scored below the median, others above it): real
  labels on which the live ranking really is poor, so `degraded` can be shown.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
import numpy as np
import pandas as pd

from readmit.dataset import load_dataset, typed_rows
from readmit.errors import ReadmitError
from readmit.features import prior_history
from readmit.pipeline.ingest import validation_errors
from readmit.schema import FIELDS, HISTORY_FIELDS, MISSING
from readmit.settings import Settings
from readmit.split import assign_splits
from readmit.storage.monitor import POSITIVE

OLD_AGES = ("[70-80)", "[80-90)", "[90-100)")
EMERGENCY = 1
A1C_MEASURED_SHARE = 0.9
HOURS_PER_DAY = 24
RECORD_FIELDS = [*(f for f in FIELDS if f != "readmitted"), *HISTORY_FIELDS]
OUTCOME_COUNTS = ("received", "inserted", "updated", "unchanged", "unmatched")
RATE_LIMITED_TRIES = 30


class SimulationError(ReadmitError):
    """The simulation cannot run: unknown scenario, API unreachable or refusing."""


Shift = Callable[[pd.DataFrame, int, np.random.Generator], pd.DataFrame]


def _sample(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """N rows of the pool, each at most once while the pool is large enough."""
    if pool.empty:
        raise SimulationError("simulate: no test-split encounter fits the scenario")
    chosen = rng.choice(len(pool), size=n, replace=n > len(pool))
    return pool.iloc[chosen].reset_index(drop=True)


def _steady(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    return _sample(pool, n, rng)


def _case_mix(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    old = pool["age"].isin(OLD_AGES) & (pool["admission_type_id"] == EMERGENCY)
    return _sample(pool[old], n, rng)


def _a1c_measured(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = _sample(pool, n, rng)
    measured = pool.loc[pool["a1cresult"] != "None", "a1cresult"].to_numpy()
    untested = (rows["a1cresult"] == "None").to_numpy()
    target = untested & (rng.random(n) < A1C_MEASURED_SHARE)
    rows.loc[target, "a1cresult"] = rng.choice(measured, size=int(target.sum()))
    return rows


def _specialty_missing(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    return _sample(pool, n, rng).assign(medical_specialty=MISSING)


def _hours_for_days(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = _sample(pool, n, rng)
    return rows.assign(time_in_hospital=rows["time_in_hospital"] * HOURS_PER_DAY)


def worst_ranked(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Which encounters the model ranks worst: readmitted (<30) ones scored below the median
    probability and the others scored above it. Their live ROC-AUC is far below 0.5."""
    median = np.median(probabilities)
    positive = labels == 1
    return (positive & (probabilities < median)) | (~positive & (probabilities > median))


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    shift: Shift
    poor_outcomes: bool = False


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("steady", "the test split as it is", _steady),
        Scenario("case-mix", "emergency admissions aged 70+ only", _case_mix),
        Scenario("a1c-measured", "A1Cresult measured for 90 % of patients", _a1c_measured),
        Scenario("specialty-missing", "medical_specialty missing for all", _specialty_missing),
        Scenario("hours-for-days", "time_in_hospital sent in hours", _hours_for_days),
        Scenario(
            "poor-ranking",
            "outcomes only for the encounters the model ranks worst",
            _steady,
            poor_outcomes=True,
        ),
    )
}


def scenario_of(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise SimulationError(
            f"simulate: unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}"
        )
    return SCENARIOS[name]


def split_encounters(settings: Settings) -> pd.DataFrame:
    """The test split's valid encounters with field names, their history over the whole data
    set (earlier encounters only, as the clean step counts it) and `readmitted`."""
    dataset = load_dataset(settings, show_progress=False)
    frame = dataset.frame
    frame = frame.drop(index=validation_errors(frame, dataset.problems).index)
    rows = typed_rows(frame).reset_index(drop=True)
    rows[list(HISTORY_FIELDS)] = prior_history(rows)
    test = np.asarray(assign_splits(rows["patient_nbr"], settings.split_salt)) == "test"
    return rows[test].reset_index(drop=True)


def api_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a caller sends them: the API's fields, JSON numbers, null for the source's '?'."""
    out = json.loads(rows[RECORD_FIELDS].to_json(orient="records"))
    return [{k: (None if v == MISSING else v) for k, v in r.items()} for r in out]


def parse_delay(text: str) -> float:
    """Seconds from "0", "45", "30s", "5m" or "1h"."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not found:
        raise SimulationError(f"--outcome-delay: {text!r} is not a duration such as 30s, 5m, 1h")
    return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[found.group(2)]


@dataclass
class SimulationResult:
    scenario: str
    url: str
    sent: int = 0
    scored: int = 0
    rejected: int = 0
    probabilities: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOME_COUNTS, 0))
    positives: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        mean = float(np.mean(self.probabilities)) if self.probabilities else float("nan")
        o = self.outcomes
        return (
            f"{self.scenario}: {self.sent:,} records sent to {self.url}, {self.scored:,} scored, "
            f"{self.rejected:,} rejected, mean probability {mean:.3f}; outcomes: "
            f"{o['received']:,} posted ({self.positives:,} readmitted <30), {o['inserted']:,} "
            f"new, {o['updated']:,} corrected, {o['unchanged']:,} unchanged, {o['unmatched']:,} "
            f"unmatched; {self.seconds:.1f} s"
        )


class _Api:
    """The calls the simulation makes, with the API key when there is one (the API may want
    it for predictions too, READMIT_AUTH=keys); a 429 is waited out as its Retry-After says,
    any other failure is one SimulationError naming the call."""

    def __init__(self, client: httpx.Client, api_key: str | None) -> None:
        self.client, self.api_key = client, api_key
        self.headers = {"X-API-Key": api_key} if api_key else {}

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        for _ in range(RATE_LIMITED_TRIES):
            try:
                response = self.client.post(path, json=body, headers=self.headers)
            except httpx.HTTPError as exc:
                raise SimulationError(
                    f"simulate: {path} failed at {self.client.base_url}: {exc}"
                ) from None
            if response.status_code != 429:
                break
            time.sleep(float(response.headers.get("Retry-After", "1")))
        if response.status_code != 200:
            raise SimulationError(
                f"simulate: {path} answered HTTP {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def score(self, records: list[dict[str, Any]]) -> list[float | None]:
        body = self._post("/predict-batch", {"records": records})
        return [r["probability"] for r in body["results"]]

    def post_outcomes(self, entries: list[tuple[int, str]]) -> dict[str, int]:
        if not self.api_key:
            raise SimulationError("simulate: outcomes need READMIT_API_KEY (the API's key)")
        body = {"outcomes": [{"encounter_id": e, "readmitted": r} for e, r in entries]}
        found = self._post("/outcomes", body)
        return {k: int(found[k]) for k in OUTCOME_COUNTS}


class Outcome(NamedTuple):
    encounter_id: int
    readmitted: str
    probability: float


Due = list[tuple[float, list[Outcome]]]


@dataclass
class _Pending:
    """Outcomes waiting for their delay to pass, each batch with the time it is due."""

    due: Due = field(default_factory=list)

    def ready(self, now: float) -> list[Outcome]:
        out = [e for t, batch in self.due if t <= now for e in batch]
        self.due = [(t, b) for t, b in self.due if t > now]
        return out


def simulate(
    settings: Settings,
    url: str,
    scenario_name: str,
    records: int,
    outcome_delay: float = 0.0,
    seed: int = 0,
    batch_size: int = 250,
    encounters: pd.DataFrame | None = None,
    report: Callable[[str], None] | None = None,
    outcomes: bool = True,
) -> SimulationResult:
    """Score `records` encounters of the scenario through the API at `url`, then post their
    outcomes once `outcome_delay` seconds have passed since each batch was scored (none
    with `outcomes=False`: they can be loaded later with `readmit outcomes`)."""
    scenario = scenario_of(scenario_name)
    if records <= 0:
        raise SimulationError(f"--records: {records} is not a positive number of records")
    say = report or (lambda _message: None)
    pool = split_encounters(settings) if encounters is None else encounters
    rows = scenario.shift(pool, records, np.random.default_rng(seed))
    result = SimulationResult(scenario.name, url.rstrip("/"))
    clock, pending = time.monotonic(), _Pending()
    with httpx.Client(base_url=result.url, timeout=120) as client:
        api = _Api(client, settings.api_key)
        size = min(batch_size, settings.max_batch)
        for start in range(0, len(rows), size):
            batch = rows.iloc[start : start + size]
            answered = api.score(api_records(batch))
            if outcomes:
                pending.due.append((time.monotonic() + outcome_delay, _outcomes(batch, answered)))
            _count(result, len(batch), answered)
            if not scenario.poor_outcomes:
                _post(api, result, pending.ready(time.monotonic()), size)
            say(f"{result.sent:,} / {records:,} records scored")
        if scenario.poor_outcomes:
            pending.due = _worst_ranked_only(pending.due)
        _drain(api, result, pending, size, say)
    result.seconds = time.monotonic() - clock
    return result


def _outcomes(batch: pd.DataFrame, answered: list[float | None]) -> list[Outcome]:
    """Outcomes of the scored records; the probability rides along for `poor-ranking`."""
    return [
        Outcome(int(e), str(r), p)
        for e, r, p in zip(batch["encounter_id"], batch["readmitted"], answered, strict=True)
        if p is not None
    ]


def _count(result: SimulationResult, sent: int, answered: list[float | None]) -> None:
    result.sent += sent
    scored = [p for p in answered if p is not None]
    result.scored += len(scored)
    result.rejected += sent - len(scored)
    result.probabilities += scored


def _worst_ranked_only(due: Due) -> Due:
    """One batch of the outcomes `worst_ranked` keeps, due when the last batch was."""
    entries = [e for _, batch in due for e in batch]
    labels = np.array([int(e.readmitted == POSITIVE) for e in entries])
    probabilities = np.array([e.probability for e in entries])
    keep = set(np.flatnonzero(worst_ranked(labels, probabilities)).tolist())
    last = max(t for t, _ in due) if due else 0.0
    return [(last, [entries[i] for i in sorted(keep)])]


def _post(api: _Api, result: SimulationResult, entries: list[Outcome], size: int) -> None:
    for start in range(0, len(entries), size):
        chunk = [(e.encounter_id, e.readmitted) for e in entries[start : start + size]]
        for name, value in api.post_outcomes(chunk).items():
            result.outcomes[name] += value
        result.positives += sum(label == POSITIVE for _, label in chunk)


def _drain(
    api: _Api, result: SimulationResult, pending: _Pending, size: int, say: Callable[[str], None]
) -> None:
    """Post every outcome still waiting, sleeping until each is due."""
    while pending.due:
        wait = min(t for t, _ in pending.due) - time.monotonic()
        if wait > 0:
            say(f"waiting {wait:.0f} s for outcomes to be due")
            time.sleep(wait)
        _post(api, result, pending.ready(time.monotonic()), size)
    say(f"{result.outcomes['received']:,} outcomes posted")
