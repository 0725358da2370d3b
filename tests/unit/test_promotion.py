"""The promotion rule: a candidate replaces @production only when the evidence says so."""

from __future__ import annotations

import pytest

from readmit.registry import decide


def test_the_first_model_is_promoted():
    assert decide(0.60, None, None, "", 0.002) == (True, "no production model yet")


def test_a_champion_that_cannot_be_compared_gives_way_and_says_why():
    promoted, reason = decide(0.60, "4", None, "refused: not a readmit model", 0.002)
    assert promoted
    assert reason == "no comparable champion: production v4 refused: not a readmit model"


@pytest.mark.parametrize(
    ("candidate", "champion", "promoted"),
    [
        (0.690, 0.680, True),  # gain 0.010
        (0.6825, 0.680, True),  # gain 0.0025 >= 0.002
        (0.6815, 0.680, False),  # gain 0.0015 < 0.002
        (0.670, 0.680, False),  # worse
    ],
)
def test_the_candidate_must_gain_the_margin(candidate, champion, promoted):
    decided, reason = decide(candidate, "3", champion, "", 0.002)
    assert decided is promoted
    gain = candidate - champion
    assert reason == (
        f"test ROC-AUC {candidate:.4f} vs production v3 {champion:.4f}: "
        f"gain {gain:+.4f} {'>=' if promoted else '<'} 0.002"
    )


def test_a_zero_margin_promotes_an_equal_candidate_and_a_negative_one_a_worse():
    assert decide(0.68, "2", 0.68, "", 0.0)[0]
    assert decide(0.67, "2", 0.68, "", -0.02)[0]
    assert not decide(0.65, "2", 0.68, "", -0.02)[0]


@pytest.mark.parametrize(("champion", "champion_score"), [(None, None), ("3", 0.50), ("3", None)])
def test_a_failed_subgroup_audit_blocks_promotion_whatever_the_gain(champion, champion_score):
    failure = "race=AfricanAmerican (60 positives): ROC-AUC 0.500 [0.45, 0.55] wholly below"
    promoted, reason = decide(0.70, champion, champion_score, "", 0.002, failure)
    assert not promoted
    assert reason == f"subgroup audit failed: {failure}"
