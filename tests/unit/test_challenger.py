"""Canary assignment and the near-miss rule, as plain functions: a patient always lands in the
same arm, the challenger's share over 10,000 patients is the one set, and a version close
below the champion becomes a challenger only when a margin is set."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from readmit.model import ReadmissionModel
from readmit.registry import near_miss
from readmit.serving.challenger import Plan, bucket, in_canary, make_plan
from readmit.serving.model_store import LoadedModel

KEY = b"canary-test-key"
PATIENTS = 10_000


def _loaded(version: str) -> LoadedModel:
    model = ReadmissionModel(None, None, None, 0.5)  # type: ignore[arg-type]  # never scores here
    return LoadedModel("readmission", version, model, datetime.now(UTC).isoformat())


@pytest.mark.parametrize("percent", [5.0, 10.0, 50.0])
def test_the_challengers_share_of_10000_patients_is_the_one_set(percent):
    chosen = sum(in_canary(KEY, {"patient_nbr": 1_000_000 + n}, percent) for n in range(PATIENTS))
    p = percent / 100
    tolerance = 4 * math.sqrt(p * (1 - p) / PATIENTS)  # four binomial standard deviations
    assert abs(chosen / PATIENTS - p) < tolerance


def test_a_patient_always_gets_the_same_arm_whatever_the_encounter():
    plan = Plan(_loaded("1"), _loaded("2"), "canary", 30.0, KEY)
    for patient in range(5_000, 5_300):
        arms = {plan.answering({"patient_nbr": patient, "encounter_id": e})[1] for e in range(4)}
        assert len(arms) == 1
    again = Plan(_loaded("1"), _loaded("3"), "canary", 30.0, KEY)  # a new challenger version
    for patient in range(5_000, 5_300):
        record = {"patient_nbr": patient, "encounter_id": 1}
        assert again.answering(record)[1] == plan.answering(record)[1]


def test_without_a_patient_the_encounter_decides_and_without_either_the_champion_answers():
    assert bucket(KEY, None, 42) == bucket(KEY, None, 42)
    assert bucket(KEY, None, 42) != bucket(KEY, 42, None)
    assert bucket(KEY, None, None) is None
    plan = Plan(_loaded("1"), _loaded("2"), "canary", 100.0, KEY)
    assert plan.answering({"encounter_id": 7})[1] == "challenger"
    assert plan.answering({})[1] == "champion"


def test_the_key_decides_the_arms():
    records = [{"patient_nbr": n} for n in range(2_000)]
    one = [in_canary(KEY, r, 50.0) for r in records]
    other = [in_canary(b"another-key", r, 50.0) for r in records]
    assert one != other


def test_arms_split_a_batch_and_keep_every_record_once():
    records = [{"patient_nbr": n, "encounter_id": n} for n in range(1_000)]
    plan = Plan(_loaded("1"), _loaded("2"), "canary", 25.0, KEY)
    arms = plan.arms(records)
    assert [variant for _, variant, _ in arms] == ["champion", "challenger"]
    indexes = sorted(i for _, _, found in arms for i in found)
    assert indexes == list(range(1_000))
    for _, variant, found in arms:
        assert all(plan.answering(records[i])[1] == variant for i in found)


@pytest.mark.parametrize("mode", ["off", "shadow"])
def test_outside_canary_mode_the_champion_answers_everything(mode):
    plan = Plan(_loaded("1"), _loaded("2"), mode, 100.0, KEY)
    assert plan.arms([{"patient_nbr": 1}, {"patient_nbr": 2}])[0][1:] == ("champion", [0, 1])
    assert plan.shadowed is (mode == "shadow")


def test_a_challenger_of_the_champions_own_version_is_none():
    plan = make_plan(_loaded("3"), _loaded("3"), "shadow", 10.0, KEY)
    assert plan.challenger is None and not plan.shadowed


@pytest.mark.parametrize(
    ("candidate", "champion", "margin", "expected"),
    [
        (0.675, 0.680, 0.01, True),
        (0.680, 0.680, 0.0, True),
        (0.665, 0.680, 0.01, False),
        (0.679, 0.680, None, False),
        (0.679, None, 0.01, False),
    ],
)
def test_near_miss(candidate, champion, margin, expected):
    assert near_miss(candidate, champion, margin) is expected
