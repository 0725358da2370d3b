"""Patient-level split: a salted hash of `patient_nbr` picks train, validation or test.

The assignment depends on the patient alone, so every encounter of a patient lands in the
same split, and it does not change as new batches arrive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

SPLITS: tuple[str, ...] = ("train", "validation", "test")
FRACTIONS: tuple[float, ...] = (0.70, 0.15, 0.15)


def split_of(patient_nbr: str | int, salt: str) -> str:
    """The split of one patient: uniform in [0, 1) from SHA-256, cut at 70 % and 85 %."""
    digest = hashlib.sha256(f"{salt}:{int(patient_nbr)}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name, fraction in zip(SPLITS, FRACTIONS, strict=True):
        cumulative += fraction
        if position < cumulative:
            return name
    return SPLITS[-1]


def assign_splits(patient_nbrs: Iterable[str | int], salt: str) -> list[str]:
    """Splits for many rows, hashing each distinct patient once."""
    cache: dict[str | int, str] = {}
    result = []
    for patient in patient_nbrs:
        if patient not in cache:
            cache[patient] = split_of(patient, salt)
        result.append(cache[patient])
    return result
