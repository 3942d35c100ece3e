"""Model metrics and the cost-based choice of the decision threshold."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn import metrics as skm

from shared.decision import DEFAULT_COSTS, THRESHOLD_GRID_STEPS, DecisionCosts
from shared.feature_spec import ColumnKind, FeatureSpec

if TYPE_CHECKING:
    import pandas as pd


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


def thin(x: np.ndarray, y: np.ndarray, points: int = 200) -> tuple[list[float], list[float]]:
    """At most ``points`` points of a curve, for plots and JSON."""
    keep = np.unique(np.linspace(0, len(x) - 1, min(points, len(x))).astype(int))
    return [float(v) for v in x[keep]], [float(v) for v in y[keep]]


def curves(y: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    fpr, tpr, _ = skm.roc_curve(y, scores)
    precision, recall, _ = skm.precision_recall_curve(y, scores)
    roc_x, roc_y = thin(fpr, tpr)
    pr_x, pr_y = thin(recall[::-1], precision[::-1])
    return {"roc": {"fpr": roc_x, "tpr": roc_y}, "pr": {"recall": pr_x, "precision": pr_y}}


def reliability(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Observed high-risk share against mean score, per equal-width score bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append(
                {
                    "bin": b,
                    "count": int(mask.sum()),
                    "mean_score": float(scores[mask].mean()),
                    "observed_rate": float(y[mask].mean()),
                }
            )
    gaps = [abs(r["mean_score"] - r["observed_rate"]) * r["count"] for r in rows]
    return {
        "bins": rows,
        "expected_calibration_error": float(sum(gaps) / max(len(y), 1)),
        "brier": float(skm.brier_score_loss(y, scores)),
    }


def threshold_comparison(
    y: np.ndarray, scores: np.ndarray, chosen: float, costs: DecisionCosts = DEFAULT_COSTS
) -> dict[str, Any]:
    """The cost-chosen threshold against the naive 0.5: expected cost and share auto-approved."""
    out = {}
    for name, threshold in (("chosen", chosen), ("half", 0.5)):
        m = classification_metrics(y, scores, threshold, costs)
        out[name] = {
            k: m[k]
            for k in (
                "threshold",
                "expected_cost",
                "auto_approved_share",
                "precision",
                "recall",
                "f1",
                "false_negative_rate",
                "false_positive_rate",
            )
        }
    return out


UNKNOWN_GROUP = "unknown"
AGE_BANDS = ((0, 25, "under 25"), (25, 40, "25-39"), (40, 55, "40-54"), (55, 70, "55-69"), (70, 200, "70+"))


def age_band(ages: np.ndarray) -> np.ndarray:
    bands = np.full(len(ages), UNKNOWN_GROUP, dtype=object)
    for low, high, label in AGE_BANDS:
        bands[(ages >= low) & (ages < high)] = label
    return bands


def group_metrics(
    y: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    groups: np.ndarray,
    min_group: int = 30,
    min_positives: int = 20,
) -> dict[str, Any]:
    """Per-group rates and the disparity between the groups large enough to judge."""
    flagged = scores >= threshold
    rows: list[dict[str, Any]] = []
    for group in sorted({str(g) for g in groups}):
        mask = groups.astype(str) == group
        positives = int(np.sum(y[mask] == 1))
        rows.append(
            {
                "group": group,
                "count": int(mask.sum()),
                "positives": positives,
                "prevalence": float(y[mask].mean()) if mask.any() else float("nan"),
                "selection_rate": float(flagged[mask].mean()) if mask.any() else float("nan"),
                "false_negative_rate": float(np.sum(~flagged[mask] & (y[mask] == 1)) / positives)
                if positives
                else float("nan"),
                "roc_auc": float(skm.roc_auc_score(y[mask], scores[mask]))
                if len(np.unique(y[mask])) == 2
                else float("nan"),
                # A missing attribute is not a group: only known groups large enough to measure are judged.
                "judged": bool(mask.sum() >= min_group and group != UNKNOWN_GROUP),
            }
        )
    judged = [r for r in rows if r["judged"]]
    rates = [float(r["selection_rate"]) for r in judged]
    # A false-negative rate over a handful of high-risk claims is noise, not disparity.
    with_fnr = [r for r in judged if r["positives"] >= min_positives]
    fnrs = [float(r["false_negative_rate"]) for r in with_fnr]
    fnr_gap_lower = 0.0
    if len(with_fnr) >= 2:
        worst = max(with_fnr, key=lambda r: r["false_negative_rate"])
        best = min(with_fnr, key=lambda r: r["false_negative_rate"])
        fnr_gap_lower = max(0.0, _difference_lower_bound(worst, best))
    ratio_upper = 1.0
    if len(judged) >= 2:
        lowest = min(judged, key=lambda r: r["selection_rate"])
        highest = max(judged, key=lambda r: r["selection_rate"])
        ratio_upper = _ratio_upper_bound(lowest, highest)
    return {
        "groups": rows,
        "selection_rate_ratio": float(min(rates) / max(rates)) if rates and max(rates) > 0 else 1.0,
        "selection_rate_ratio_upper_95": ratio_upper,
        "selection_rate_difference": float(max(rates) - min(rates)) if rates else 0.0,
        "false_negative_rate_difference": float(max(fnrs) - min(fnrs)) if fnrs else 0.0,
        "false_negative_rate_difference_lower_95": fnr_gap_lower,
        "min_group_size": min_group,
        "min_positives_for_fnr": min_positives,
    }


def _difference_lower_bound(high: dict[str, Any], low: dict[str, Any], z: float = 1.96) -> float:
    """Lower 95% bound of the gap between two groups' false-negative rates (normal approximation):
    the gap the data shows beyond chance, which is what a fairness gate should judge."""
    p1, n1 = float(high["false_negative_rate"]), int(high["positives"])
    p2, n2 = float(low["false_negative_rate"]), int(low["positives"])
    spread = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return float(p1 - p2 - z * spread)


def _ratio_upper_bound(low: dict[str, Any], high: dict[str, Any], z: float = 1.96) -> float:
    """Upper 95% bound of the ratio of two groups' selection rates: below a bound, the disparity is
    more than small groups' chance can explain."""
    p1, n1 = float(low["selection_rate"]), int(low["count"])
    p2, n2 = float(high["selection_rate"]), int(high["count"])
    top = p1 + z * np.sqrt(p1 * (1 - p1) / n1)
    bottom = p2 - z * np.sqrt(p2 * (1 - p2) / n2)
    return 1.0 if bottom <= 0 else float(min(1.0, top / bottom))


def protected_groups(spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Group labels per protected attribute (numbers such as age in bands); never model inputs."""
    import pandas as pd

    groups = {}
    for col in spec.protected_columns:
        if col.name not in frame.columns:
            continue
        values = frame[col.name]
        if col.kind in (ColumnKind.INTEGER, ColumnKind.NUMERIC):
            name = f"{col.name}_band"
            groups[name] = age_band(
                pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            )
        else:
            groups[col.name] = values.astype("string").fillna(UNKNOWN_GROUP).to_numpy(dtype=object)
    return groups
