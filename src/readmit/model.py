"""The readmission model: raw encounter fields in, calibrated probability out.

One object holds the whole path (cleaning rules, the fitted transform of the clean build, the
estimator, the calibration and the decision threshold), saved as one folder of plain files.
The registered MLflow model wraps that folder, and the API loads the same folder, so training,
the registry and serving share one implementation. `predict_frame` scores many encounters in
bulk; `predict_record` scores one dict without pandas, to the same probability.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from readmit.features import FittedTransform, clean_features, clean_record

MODEL_FILE = "readmit_model.json"
BULK_ROWS = 2_000  # from this many rows on, boosters may use every core


class Estimator(Protocol):
    """What the model needs of a fitted learner: log-odds and per-column contributions."""

    kind: str

    def margin(self, x: np.ndarray) -> np.ndarray: ...

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per column log-odds contributions, last column the base value (n, width + 1)."""
        ...

    def save(self, folder: Path) -> None: ...


@dataclass
class LinearEstimator:
    """Logistic regression as plain coefficients: no pickle, and exact row by row."""

    coef: np.ndarray
    intercept: float
    mean_input: np.ndarray
    kind: str = "logistic_regression"

    def margin(self, x: np.ndarray) -> np.ndarray:
        # The same row-wise reduction for one row or many, so both paths agree exactly.
        return (x.astype(np.float64) * self.coef).sum(axis=1) + self.intercept

    def contributions(self, x: np.ndarray) -> np.ndarray:
        centred = (x.astype(np.float64) - self.mean_input) * self.coef
        base = float(self.mean_input @ self.coef + self.intercept)
        return np.hstack([centred, np.full((len(x), 1), base)])

    def save(self, folder: Path) -> None:
        payload = {
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "mean_input": self.mean_input.tolist(),
        }
        (folder / "linear.json").write_text(json.dumps(payload))

    @classmethod
    def load(cls, folder: Path) -> LinearEstimator:
        data = json.loads((folder / "linear.json").read_text())
        return cls(
            np.asarray(data["coef"]), float(data["intercept"]), np.asarray(data["mean_input"])
        )


@dataclass
class XGBoostEstimator:
    booster: Any
    kind: str = "xgboost"

    def margin(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(x, predict_type="margin"), dtype=np.float64)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        return np.asarray(self.booster.predict(xgb.DMatrix(x), pred_contribs=True), np.float64)

    def save(self, folder: Path) -> None:
        self.booster.save_model(folder / "xgboost.json")

    @classmethod
    def load(cls, folder: Path) -> XGBoostEstimator:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(folder / "xgboost.json")
        booster.set_param({"nthread": 1})
        return cls(booster)


@dataclass
class LightGBMEstimator:
    booster: Any
    kind: str = "lightgbm"

    def margin(self, x: np.ndarray) -> np.ndarray:
        threads = 1 if len(x) < BULK_ROWS else 0  # 0: every core, worth it for big batches
        return np.asarray(self.booster.predict(x, raw_score=True, num_threads=threads), np.float64)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=1), np.float64)

    def save(self, folder: Path) -> None:
        self.booster.save_model(str(folder / "lightgbm.txt"))

    @classmethod
    def load(cls, folder: Path) -> LightGBMEstimator:
        import lightgbm as lgb

        return cls(lgb.Booster(model_file=str(folder / "lightgbm.txt")))


LOADERS: dict[str, Callable[[Path], Estimator]] = {
    "logistic_regression": LinearEstimator.load,
    "xgboost": XGBoostEstimator.load,
    "lightgbm": LightGBMEstimator.load,
}


@dataclass
class Calibration:
    """Platt scaling of the log-odds: identity (1, 0) when it did not improve the Brier score."""

    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, margin: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.slope * margin + self.intercept)))

    def apply_one(self, margin: float) -> float:
        return float(self.apply(np.asarray([margin]))[0])


@dataclass(frozen=True)
class TrainingInfo:
    """What training recorded about the model: saved with it, so the API, the exporter and the
    UI read the same facts, under the same names, that training wrote."""

    estimator: str | None = None
    run_id: str | None = None
    trained_at: str | None = None
    clean_build: str | None = None
    raw_batches: str | None = None
    dataset_sha256: str | None = None
    git_commit: str | None = None
    history_source: str | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    validation_roc_auc: float | None = None

    @property
    def test_roc_auc(self) -> float | None:
        return self.test_metrics.get("roc_auc")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> TrainingInfo:
        """Unknown keys are ignored; a key with a dotted prefix (earlier models saved their
        lineage under its tag names, e.g. `readmit.clean_build`) is read by its last part."""
        names = {f.name for f in fields(cls)}
        values = {k.rpartition(".")[2]: v for k, v in payload.items()}
        values = {k: v for k, v in values.items() if k in names}
        metrics = values.pop("test_metrics", None) or {}
        return cls(**values, test_metrics={k: float(v) for k, v in metrics.items()})


@dataclass
class ReadmissionModel:
    transform: FittedTransform
    estimator: Estimator
    calibration: Calibration
    threshold: float
    info: TrainingInfo = field(default_factory=TrainingInfo)

    def encode_frame(self, raw: pd.DataFrame) -> np.ndarray:
        return self.transform.transform_frame(clean_features(raw))

    def encode_record(self, raw: Mapping[str, Any]) -> np.ndarray:
        return self.transform.transform_record(clean_record(raw))

    def predict_frame(self, raw: pd.DataFrame) -> np.ndarray:
        """Probabilities of 30-day readmission for many raw encounters."""
        return self.calibration.apply(self.estimator.margin(self.encode_frame(raw)))

    def predict_record(self, raw: Mapping[str, Any]) -> float:
        """The probability for one raw encounter, with no DataFrame on the way."""
        vector = self.encode_record(raw)[np.newaxis, :]
        return float(self.calibration.apply(self.estimator.margin(vector))[0])

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.estimator.save(folder)
        payload = {
            "estimator": self.estimator.kind,
            "transform": self.transform.to_dict(),
            "calibration": {
                "slope": self.calibration.slope,
                "intercept": self.calibration.intercept,
            },
            "threshold": self.threshold,
            "info": self.info.to_dict(),
        }
        (folder / MODEL_FILE).write_text(json.dumps(payload, indent=1, default=str))
        return folder

    @classmethod
    def load(cls, folder: Path) -> ReadmissionModel:
        payload = json.loads((Path(folder) / MODEL_FILE).read_text())
        return cls(
            transform=FittedTransform.from_dict(payload["transform"]),
            estimator=LOADERS[payload["estimator"]](Path(folder)),
            calibration=Calibration(**payload["calibration"]),
            threshold=float(payload["threshold"]),
            info=TrainingInfo.from_dict(payload.get("info") or {}),
        )
