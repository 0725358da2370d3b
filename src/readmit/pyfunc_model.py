"""The MLflow pyfunc face of the readmission model (kept light: it is imported on load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from readmit.inputs import InputError, model_frame
from readmit.model import ReadmissionModel


class ReadmissionPyfunc(PythonModel):
    """The registered model: raw encounter fields in, calibrated probability out.

    It takes encounters as pandas reads them from the data set's own CSV (its column names or
    the API's, any missing marker) and gives the API's probabilities for them.
    """

    def load_context(self, context: Any) -> None:
        self.model = ReadmissionModel.load(Path(context.artifacts["readmit_model"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        try:
            frame = model_frame(pd.DataFrame(model_input))
        except InputError as error:
            # MLflow reports this as a bad request (HTTP 400 when served), not a crash.
            raise MlflowException.invalid_parameter_value(str(error)) from None
        return pd.DataFrame({"probability": self.model.predict_frame(frame)})
