"""How probabilities and risk are written on every page, defined once so pages agree."""

from __future__ import annotations

from dataclasses import dataclass

# A probability at or above half the model's threshold is "medium": close to being flagged.
MEDIUM_FRACTION = 0.5


@dataclass(frozen=True)
class RiskBand:
    name: str
    colour: str
    meaning: str


LOW = RiskBand("low", "green", "below half the model's threshold")
MEDIUM = RiskBand("medium", "orange", "between half the threshold and the threshold")
HIGH = RiskBand("high", "red", "at or above the threshold: flagged as a likely readmission")
BANDS = (LOW, MEDIUM, HIGH)


def risk_band(probability: float, threshold: float) -> RiskBand:
    """High means the model flags the encounter (probability >= threshold), as the API does."""
    if probability >= threshold:
        return HIGH
    if probability >= MEDIUM_FRACTION * threshold:
        return MEDIUM
    return LOW


def percent(probability: float) -> str:
    """A probability as shown in headlines, e.g. 17.1%."""
    return f"{probability:.1%}"


def exact(probability: float) -> str:
    """A probability with four decimals, for the line under the headline and tables."""
    return f"{probability:.4f}"
