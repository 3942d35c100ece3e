"""How a hyperparameter configuration is scored: PR-AUC under stratified K-fold cross-validation on the
training rows, encoders fitted inside each fold. The local tuner's trials and SageMaker's tuning
trials (``cv_folds`` > 1 in the training script) score configurations the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from shared.feature_spec import FeatureSpec
from shared.ml.families import TrainingData, fit_family
from shared.ml.features import fit_encoder


@dataclass(frozen=True)
class Fold:
    fit: TrainingData  # the fold's training part, with an inner split for early stopping
    x_holdout: np.ndarray
    y_holdout: np.ndarray


def make_folds(frame: pd.DataFrame, spec: FeatureSpec, folds: int, seed: int) -> list[Fold]:
    """Encoders are fitted inside each fold, so the text vocabulary never sees the held-out labels."""
    y_all = frame[spec.target.column].to_numpy(dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = []
    for train_idx, holdout_idx in splitter.split(np.zeros(len(y_all)), y_all):
        fit_idx, stop_idx = train_test_split(
            train_idx, test_size=0.1, stratify=y_all[train_idx], random_state=seed
        )
        encoder = fit_encoder(spec, frame.iloc[fit_idx], y_all[fit_idx])
        data = TrainingData(
            encoder.transform(frame.iloc[fit_idx]),
            y_all[fit_idx],
            encoder.transform(frame.iloc[stop_idx]),
            y_all[stop_idx],
            encoder.feature_names,
        )
        out.append(Fold(data, encoder.transform(frame.iloc[holdout_idx]), y_all[holdout_idx]))
    return out


def cross_validated_pr_auc(folds: list[Fold], hp: dict[str, Any]) -> list[float]:
    """Each fold's PR-AUC of the configuration ``hp`` (parsed hyperparameters)."""
    scores = []
    for fold in folds:
        model = fit_family(hp["model_family"], fold.fit, hp)
        scores.append(float(average_precision_score(fold.y_holdout, model.margin(fold.x_holdout))))
    return scores
