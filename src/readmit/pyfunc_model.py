"""The MLflow pyfunc face of the readmission model (kept light: it is imported on load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from readmit.model import ReadmissionModel


class ReadmissionPyfunc(PythonModel):
    """The registered model: raw encounter fields in, calibrated probability out."""

    def load_context(self, context: Any) -> None:
        self.model = ReadmissionModel.load(Path(context.artifacts["readmit_model"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        probabilities = self.model.predict_frame(model_input.reset_index(drop=True))
        return pd.DataFrame({"probability": probabilities})
