"""Read a Prometheus text exposition into numbers, so tests can compare before and after."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, frozenset[tuple[str, str]]]


def samples(text: str) -> dict[Sample, float]:
    """Every sample of the exposition, keyed by its name and its labels."""
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[Sample, float], metric: str, /, **labels: str) -> float:
    """One sample's value; 0 when the series is not there yet (a counter not yet touched)."""
    return found.get((metric, frozenset(labels.items())), 0.0)


def total(found: dict[Sample, float], metric: str) -> float:
    """The sum over every label set of one sample name."""
    return sum(v for (n, _), v in found.items() if n == metric)
