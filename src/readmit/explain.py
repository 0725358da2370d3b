"""Per-field SHAP contributions: one-hot columns summed back to the fields a user sent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from readmit.features import SOURCE_OF_FEATURE
from readmit.model import ReadmissionModel


@dataclass
class FieldContributions:
    """Contributions in log-odds: base + sum(values) is the model's uncalibrated margin."""

    fields: list[str]
    values: np.ndarray  # (rows, fields)
    base: np.ndarray  # (rows,)


def field_index(model: ReadmissionModel) -> tuple[list[str], np.ndarray]:
    """The output fields, and for each encoded column the index of its field."""
    sources = [SOURCE_OF_FEATURE[f] for f in model.transform.column_field]
    fields = list(dict.fromkeys(sources))
    position = {name: i for i, name in enumerate(fields)}
    return fields, np.asarray([position[s] for s in sources])


def field_contributions(model: ReadmissionModel, encoded: np.ndarray) -> FieldContributions:
    """Exact TreeSHAP (or linear) contributions of encoded rows, summed per raw field."""
    contributions = model.estimator.contributions(encoded)
    fields, column_to_field = field_index(model)
    values = np.zeros((len(encoded), len(fields)))
    np.add.at(values.T, column_to_field, contributions[:, :-1].T)
    return FieldContributions(fields=fields, values=values, base=contributions[:, -1])
