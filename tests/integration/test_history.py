"""Patient history: earlier encounters only (a leak guard on the real data set) and the
per-encounter history table the clean build writes for the feature store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from readmit.dataset import typed_rows
from readmit.features import clean_frame, history_steps, prior_history
from readmit.schema import HISTORY_FIELDS
from readmit.split import assign_splits
from readmit.storage.clean import open_clean_db, read_history, read_latest_build


def _history_auc(frame: pd.DataFrame, split: pd.Series) -> float:
    """Test ROC-AUC of a logistic regression on the history columns alone."""
    x = np.log1p(frame[list(HISTORY_FIELDS)].to_numpy(dtype=float))
    y = frame["label"].to_numpy()
    train, test = (split == "train").to_numpy(), (split == "test").to_numpy()
    model = LogisticRegression(max_iter=500).fit(x[train], y[train])
    return float(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1]))


@pytest.fixture(scope="module")
def raw_rows(full_dataset) -> pd.DataFrame:
    rows = typed_rows(full_dataset.frame).reset_index(drop=True)
    return rows.assign(row_hash=rows["encounter_id"].astype(str))


def test_history_over_the_whole_file_leaks_and_the_pipelines_does_not(raw_rows):
    cleaned = clean_frame(raw_rows)  # the pipeline's history: earlier encounters only
    split = pd.Series(assign_splits(cleaned["patient_nbr"], "readmit-split-v1"))
    # The leak: every other encounter of the patient, later ones (and their outcomes) too.
    steps = history_steps(raw_rows)
    totals = steps.groupby(raw_rows["patient_nbr"].to_numpy()).transform("sum")
    whole_file = (totals - steps).set_index(raw_rows["row_hash"]).loc[cleaned["row_hash"]]
    leaky = cleaned.assign(**{f: whole_file[f].to_numpy() for f in HISTORY_FIELDS})

    pipeline_auc, leaky_auc = _history_auc(cleaned, split), _history_auc(leaky, split)
    assert leaky_auc > pipeline_auc + 0.05, (pipeline_auc, leaky_auc)
    assert pipeline_auc < 0.70, pipeline_auc
    # The pipeline's columns are the earlier-encounters history, not the whole file's.
    expected = prior_history(raw_rows).set_index(raw_rows["row_hash"]).loc[cleaned["row_hash"]]
    assert (cleaned[list(HISTORY_FIELDS)].to_numpy() == expected.to_numpy()).all()


def test_the_history_table_holds_each_encounters_history_through_it(small_build):
    """A clean row's history is its patient's previous row in the table: never its own."""
    engine = open_clean_db(small_build.settings)
    try:
        history = read_history(engine)
        _, frames = read_latest_build(engine)
    finally:
        engine.dispose()
    assert history["encounter_id"].is_monotonic_increasing
    assert history["event_timestamp"].is_monotonic_increasing
    previous = history.groupby("patient_nbr")[list(HISTORY_FIELDS)].shift(1).fillna(0)
    before = previous.astype("int64").set_index(history["encounter_id"])
    clean = pd.concat(frames.values()).set_index("encounter_id")
    assert (clean["prior_encounters"] > 0).sum() > 1000
    np.testing.assert_array_equal(
        clean[list(HISTORY_FIELDS)].to_numpy(), before.loc[clean.index].to_numpy()
    )
    # Through the encounter: its own stay is counted in its row.
    own = history.set_index("encounter_id").loc[clean.index]
    assert (own["prior_encounters"] == clean["prior_encounters"] + 1).all()
