"""Fit a configuration on some rows and measure it on others, exactly as the training job would.

Used by the evaluation step for stratified K-fold cross-validation and the out-of-time check: the
encoder, the model, the Platt calibration and the cost-based threshold are all refitted on the
fitting rows only (an inner split serves early stopping, calibration and the threshold).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from shared.decision import DEFAULT_COSTS, DecisionCosts
from shared.feature_spec import FeatureSpec
from shared.ml.evaluation import choose_threshold, classification_metrics
from shared.ml.families import TrainingData, fit_family
from shared.ml.features import fit_encoder
from shared.ml.model import Calibration


def fit_and_evaluate(
    spec: FeatureSpec,
    hyperparameters: dict[str, Any],
    fit_rows: pd.DataFrame,
    holdout_rows: pd.DataFrame,
    costs: DecisionCosts = DEFAULT_COSTS,
    seed: int = 0,
) -> dict[str, Any]:
    target = spec.target.column
    inner_fit, inner_val = train_test_split(
        fit_rows, test_size=0.15, stratify=fit_rows[target], random_state=seed
    )
    y_fit, y_val = inner_fit[target].to_numpy(np.int64), inner_val[target].to_numpy(np.int64)
    encoder = fit_encoder(spec, inner_fit, y_fit)
    data = TrainingData(
        encoder.transform(inner_fit), y_fit, encoder.transform(inner_val), y_val, encoder.feature_names
    )
    family = fit_family(hyperparameters["model_family"], data, hyperparameters)
    calibration = Calibration.fit(family.margin(data.x_val), y_val)
    threshold = choose_threshold(y_val, calibration.apply(family.margin(data.x_val)), costs)
    scores = calibration.apply(family.margin(encoder.transform(holdout_rows)))
    return classification_metrics(holdout_rows[target].to_numpy(np.int64), scores, threshold, costs)


def cross_validate(
    spec: FeatureSpec,
    hyperparameters: dict[str, Any],
    rows: pd.DataFrame,
    folds: int,
    seed: int = 0,
    costs: DecisionCosts = DEFAULT_COSTS,
) -> dict[str, Any]:
    """Stratified K-fold over all labelled rows: mean and spread of the metrics a claims manager reads."""
    y = rows[spec.target.column].to_numpy(np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    per_fold = [
        fit_and_evaluate(spec, hyperparameters, rows.iloc[fit_idx], rows.iloc[hold_idx], costs, seed)
        for fit_idx, hold_idx in splitter.split(np.zeros(len(y)), y)
    ]
    summary: dict[str, Any] = {"folds": folds, "rows": len(rows)}
    for key in ("roc_auc", "pr_auc", "f1", "precision", "recall", "brier", "expected_cost"):
        values = [float(m[key]) for m in per_fold]
        summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_fold": values}
    return summary


def out_of_time(
    spec: FeatureSpec,
    hyperparameters: dict[str, Any],
    rows: pd.DataFrame,
    date_column: str,
    quantile: float = 0.8,
    seed: int = 0,
    costs: DecisionCosts = DEFAULT_COSTS,
) -> dict[str, Any] | None:
    """Train on the earlier claims, test on the later ones; None when the dates cannot support it."""
    dated = rows[rows[date_column].notna()]
    if len(dated) < 200:
        return None
    cutoff = dated[date_column].quantile(quantile)
    earlier, later = dated[dated[date_column] <= cutoff], dated[dated[date_column] > cutoff]
    target = spec.target.column
    if min(earlier[target].nunique(), later[target].nunique()) < 2 or len(later) < 50:
        return None
    metrics = fit_and_evaluate(spec, hyperparameters, earlier, later, costs, seed)
    return {
        "date_column": date_column,
        "cutoff": str(cutoff)[:10],
        "train_rows": len(earlier),
        "test_rows": len(later),
        "metrics": metrics,
    }
