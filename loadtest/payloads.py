"""Encounters for the load test: recorded ones from a JSON-lines file, or varied examples.

Kept free of Locust so the payloads can be checked without it. A file of real encounters
(one JSON object per line, fields as for POST /predict) gives the most realistic load; without
one, the API's documented example is sent with its counts varied, so the model does not score
the same row every time.
"""

from __future__ import annotations

import copy
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from readmit.serving.schemas import EXAMPLE

PAYLOADS_ENV = "READMIT_LOADTEST_PAYLOADS"
DEFAULT_PAYLOADS = Path(__file__).with_name("payloads.jsonl")


# Inclusive ranges within those of the UCI diabetes data set; visit counts are kept to the
# common low end, where most encounters lie.
NUMERIC_RANGES: dict[str, tuple[int, int]] = {
    "time_in_hospital": (1, 14),
    "num_lab_procedures": (1, 100),
    "num_procedures": (0, 6),
    "num_medications": (1, 60),
    "number_outpatient": (0, 5),
    "number_emergency": (0, 3),
    "number_inpatient": (0, 6),
    "number_diagnoses": (1, 16),
    "prior_encounters": (0, 10),
}
# Code fields take one of their most frequent codes.
CODE_CHOICES: dict[str, tuple[int, ...]] = {
    "admission_type_id": (1, 2, 3),
    "discharge_disposition_id": (1, 3, 6),
    "admission_source_id": (1, 7),
}


def vary(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A copy of the record with its counts and codes drawn again within plausible ranges."""
    varied = copy.deepcopy(record)
    for name, (low, high) in NUMERIC_RANGES.items():
        varied[name] = rng.randint(low, high)
    for name, codes in CODE_CHOICES.items():
        varied[name] = rng.choice(codes)
    return varied


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The encounters of a JSON-lines file; blank lines are skipped, anything else must parse."""
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from exc
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise ValueError(f"{path}:{number}: expected an object, got {kind}")
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no encounters")
    return records


@dataclass
class PayloadSource:
    """Hands out encounters: recorded ones as they are, or the example varied each time."""

    records: list[dict[str, Any]]
    origin: str
    recorded: bool
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_environment(cls, seed: int | None = None) -> PayloadSource:
        """Reads $READMIT_LOADTEST_PAYLOADS, else loadtest/payloads.jsonl, else the example.

        A path named in the variable must exist: a typo should stop the run, not quietly
        fall back to synthetic load.
        """
        rng = random.Random(seed)
        named = os.environ.get(PAYLOADS_ENV)
        path = Path(named) if named else DEFAULT_PAYLOADS
        if named and not path.is_file():
            raise FileNotFoundError(f"{PAYLOADS_ENV}={named}: no such file")
        if path.is_file():
            return cls(read_jsonl(path), str(path), recorded=True, rng=rng)
        return cls([EXAMPLE], "built-in example, varied", recorded=False, rng=rng)

    def encounter(self) -> dict[str, Any]:
        """One encounter for /predict or /explain."""
        record = self.rng.choice(self.records)
        return copy.deepcopy(record) if self.recorded else vary(record, self.rng)

    def batch(self, size: int) -> dict[str, Any]:
        """A /predict-batch body of `size` encounters."""
        return {"records": [self.encounter() for _ in range(size)]}
