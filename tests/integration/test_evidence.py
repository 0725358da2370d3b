"""The promotion gate on the subgroup audit, with a real model on real test rows and a real
MLflow registry: the real model passes; the same model with its scores shuffled within one
group is kept in @staging with the reason on the version, and moves only by hand with a
recorded reason."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from readmit import registry
from readmit.audit import AuditRules, audit_subgroups, subgroups
from readmit.registry import RegistryError, Tag, compare_and_promote, promote_by_hand
from readmit.settings import Settings
from tests.models import MODEL_INPUTS, log_and_register

GROUP = ("race", "AfricanAmerican")
RULES = AuditRules(min_positives=30, max_auc_gap=0.05, max_calibration_gap=0.05)


@pytest.fixture(scope="module")
def scored(small_data, lightgbm_model):
    inputs = small_data.test_inputs[MODEL_INPUTS]
    probabilities = lightgbm_model.predict_frame(inputs)
    labels = small_data.labels("test")
    patients = small_data.frames["test"]["patient_nbr"].to_numpy()
    return inputs, labels, probabilities, patients


def shuffled_within(inputs, probabilities, attribute: str, group: str) -> np.ndarray:
    """The model's scores with their order destroyed inside one group only."""
    mask = (subgroups(inputs)[attribute] == group).to_numpy()
    broken = probabilities.copy()
    broken[mask] = np.random.default_rng(0).permutation(broken[mask])
    return broken


@pytest.fixture(scope="module")
def audits(scored, lightgbm_model):
    inputs, labels, probabilities, patients = scored
    threshold = lightgbm_model.threshold
    real = audit_subgroups(labels, probabilities, patients, inputs, threshold, RULES, 200)
    broken = shuffled_within(inputs, probabilities, *GROUP)
    failing = audit_subgroups(labels, broken, patients, inputs, threshold, RULES, 200)
    return real, failing


def test_the_real_model_passes_and_the_shuffled_group_fails(audits):
    real, failing = audits
    assert real.passed, real.failures
    assert len(failing.failures) == 1, failing.failures
    assert failing.failures[0].startswith(f"{GROUP[0]}={GROUP[1]} (")
    row = failing.table.set_index(["attribute", "group"]).loc[GROUP]
    assert row["roc_auc_ci_high"] < failing.overall_auc - RULES.max_auc_gap
    assert not row["small"]


def test_the_gate_keeps_the_failing_version_in_staging_and_promotes_the_real_one(
    audits, scored, lightgbm_model, tmp_path
):
    real, failing = audits
    inputs, labels, _, _ = scored
    settings = Settings(data_dir=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    blocked = log_and_register(settings, lightgbm_model, inputs)
    decision = compare_and_promote(settings, blocked, 0.70, inputs, labels, failing.reason)
    assert not decision.promoted
    assert decision.reason == f"subgroup audit failed: {failing.reason}"
    client = MlflowClient(settings.resolved_tracking_uri)
    tags = client.get_model_version(settings.model_name, blocked).tags
    assert tags[Tag.DECISION] == "kept_in_staging"
    assert tags[Tag.AUDIT] == f"failed: {failing.reason}"
    assert registry.by_alias(client, settings.model_name, "production") is None

    passing = log_and_register(settings, lightgbm_model, inputs)
    decision = compare_and_promote(settings, passing, 0.70, inputs, labels, real.reason)
    assert decision.promoted and decision.reason == "no production model yet"
    tags = client.get_model_version(settings.model_name, passing).tags
    assert tags[Tag.AUDIT] == "passed"

    with pytest.raises(RegistryError, match=r"failed its subgroup audit.*--override-audit"):
        promote_by_hand(settings, blocked)
    assert str(registry.by_alias(client, settings.model_name, "production").version) == passing
    promote_by_hand(settings, blocked, override_audit="reviewed with the ward; pilot only")
    tags = client.get_model_version(settings.model_name, blocked).tags
    assert tags[Tag.AUDIT_OVERRIDE] == "reviewed with the ward; pilot only"
    assert tags[Tag.PROMOTION_REASON].endswith(
        "audit overridden: reviewed with the ward; pilot only"
    )
    assert str(registry.by_alias(client, settings.model_name, "production").version) == blocked
