"""The load test's payloads are encounters the API accepts, read as documented.

loadtest/payloads.py is loaded by path: loadtest is not a package, and Locust itself is not
needed for this.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from readmit.serving.schemas import EXAMPLE as API_EXAMPLE
from readmit.serving.schemas import Encounter
from tests.observability.dashboards import REPO

PAYLOADS_PY = REPO / "loadtest" / "payloads.py"


@pytest.fixture(scope="module")
def payloads() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readmit_loadtest_payloads", PAYLOADS_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building the class
    spec.loader.exec_module(module)
    return module


def test_varied_encounters_are_valid_and_vary(payloads: ModuleType) -> None:
    rng = random.Random(7)
    varied = [payloads.vary(payloads.EXAMPLE, rng) for _ in range(200)]
    for record in varied:
        Encounter.model_validate(record)
    for name, (low, high) in payloads.NUMERIC_RANGES.items():
        values = {record[name] for record in varied}
        assert len(values) > 1, name
        assert low <= min(values) and max(values) <= high, name
    assert payloads.EXAMPLE["time_in_hospital"] == 5, "vary must not change the example"


def test_without_a_file_the_example_is_varied(
    payloads: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(payloads.PAYLOADS_ENV, raising=False)
    monkeypatch.setattr(payloads, "DEFAULT_PAYLOADS", tmp_path / "absent.jsonl")
    source = payloads.PayloadSource.from_environment(seed=1)
    assert not source.recorded
    body = source.batch(100)
    assert len(body["records"]) == 100
    assert len({json.dumps(r, sort_keys=True) for r in body["records"]}) > 1


def test_a_recorded_file_is_sent_as_is(
    payloads: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = dict(API_EXAMPLE, time_in_hospital=3)
    second = dict(API_EXAMPLE, number_inpatient=0, diag_3=None)
    path = tmp_path / "encounters.jsonl"
    path.write_text(json.dumps(first) + "\n\n" + json.dumps(second) + "\n")
    monkeypatch.setenv(payloads.PAYLOADS_ENV, str(path))
    source = payloads.PayloadSource.from_environment(seed=1)
    assert source.recorded and source.origin == str(path)
    sent = [source.encounter() for _ in range(50)]
    assert all(record in (first, second) for record in sent)
    assert first in sent and second in sent
    sent[0]["race"] = "changed"
    assert source.records[0]["race"] == API_EXAMPLE["race"], "callers get copies"


def test_a_named_file_must_exist(
    payloads: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(payloads.PAYLOADS_ENV, str(tmp_path / "typo.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"typo\.jsonl"):
        payloads.PayloadSource.from_environment()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no encounters"),
        ('{"race": "Caucasian"}\nnot json\n', ":2: not JSON"),
        ("[1]\n", ":1:"),
    ],
)
def test_bad_files_are_refused(
    payloads: ModuleType, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        payloads.read_jsonl(path)
