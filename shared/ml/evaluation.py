"""Model metrics and the cost-based choice of the decision threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

from shared.decision import DEFAULT_COSTS, THRESHOLD_GRID_STEPS, DecisionCosts


def expected_cost(y: np.ndarray, scores: np.ndarray, threshold: float, costs: DecisionCosts) -> float:
    """Average cost per claim of triaging at ``threshold``."""
    flagged = scores >= threshold
    missed = np.sum(~flagged & (y == 1))
    needless = np.sum(flagged & (y == 0))
    return float((missed * costs.missed_high_risk + needless * costs.needless_review) / max(len(y), 1))


def choose_threshold(y: np.ndarray, scores: np.ndarray, costs: DecisionCosts = DEFAULT_COSTS) -> float:
    """The threshold with the lowest expected cost (ties go to the higher threshold: fewer reviews)."""
    grid = np.linspace(0.0, 1.0, THRESHOLD_GRID_STEPS + 1)[1:]
    cost = np.array([expected_cost(y, scores, t, costs) for t in grid])
    best = np.flatnonzero(cost <= cost.min() + 1e-12)[-1]
    return float(grid[best])


def classification_metrics(
    y: np.ndarray, scores: np.ndarray, threshold: float, costs: DecisionCosts = DEFAULT_COSTS
) -> dict[str, Any]:
    predicted = (scores >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    both_classes = len(np.unique(y)) == 2
    return {
        "rows": len(y),
        "prevalence": float(np.mean(y)),
        "roc_auc": float(skm.roc_auc_score(y, scores)) if both_classes else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, scores)) if both_classes else float("nan"),
        "logloss": float(skm.log_loss(y, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, scores)),
        "threshold": threshold,
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "precision": float(skm.precision_score(y, predicted, zero_division=0)),
        "recall": float(skm.recall_score(y, predicted, zero_division=0)),
        "f1": float(skm.f1_score(y, predicted, zero_division=0)),
        "false_negative_rate": float(fn / max(fn + tp, 1)),
        "false_positive_rate": float(fp / max(fp + tn, 1)),
        "auto_approved_share": float(np.mean(predicted == 0)),
        "expected_cost": expected_cost(y, scores, threshold, costs),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }
