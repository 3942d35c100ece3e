"""Model metrics and the cost-based choice of the decision threshold."""

from __future__ import annotations

import math
from statistics import NormalDist
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
    prevalence = float(np.mean(y))
    pr_auc = float(skm.average_precision_score(y, scores)) if both_classes else float("nan")
    recall = float(skm.recall_score(y, predicted, zero_division=0))
    flagged_share = float(np.mean(predicted))
    return {
        "rows": len(y),
        "prevalence": prevalence,
        "roc_auc": float(skm.roc_auc_score(y, scores)) if both_classes else float("nan"),
        "pr_auc": pr_auc,
        # Scale-free figures for the gates: a ranking by chance has PR-AUC equal to the positive rate,
        # and reviewing a share of claims at random catches that share of the high-risk ones.
        "pr_auc_lift": pr_auc / prevalence if both_classes else float("nan"),
        "recall_lift": recall / flagged_share if flagged_share > 0 else 0.0,
        "logloss": float(skm.log_loss(y, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, scores)),
        "threshold": threshold,
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "precision": float(skm.precision_score(y, predicted, zero_division=0)),
        "recall": recall,
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


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion. Unlike the normal approximation it keeps a width when
    nothing (or everything) was counted: 0 of 46 claims flagged still allows a rate up to about 8%."""
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials)) / (1 + z2n)
    return max(0.0, centre - half), min(1.0, centre + half)


def group_metrics(
    y: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    groups: np.ndarray,
    min_group: int = 30,
    min_positives: int = 20,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per-group rates and the disparity between the groups large enough to judge.

    The bounds that allow for chance come from each group's Wilson interval, Bonferroni-adjusted so
    that all of a table's judged groups are covered together at ``confidence``: then every rate lies
    in its interval at once, and the most the ratio of the lowest to the highest selection rate can
    be is the smallest upper bound over the largest lower bound (the least the false-negative-rate
    gap can be: the largest lower bound less the smallest upper bound).
    """
    flagged = scores >= threshold
    labels = groups.astype(str)
    counts: list[dict[str, Any]] = []
    for group in sorted(set(labels)):
        mask = labels == group
        positives = int(np.sum(y[mask] == 1))
        counts.append(
            {
                "group": group,
                "count": int(mask.sum()),
                "positives": positives,
                "flagged": int(flagged[mask].sum()),
                "missed": int(np.sum(~flagged[mask] & (y[mask] == 1))),
                "prevalence": float(y[mask].mean()) if mask.any() else float("nan"),
                "roc_auc": float(skm.roc_auc_score(y[mask], scores[mask]))
                if len(np.unique(y[mask])) == 2
                else float("nan"),
                # A missing attribute is not a group: only known groups large enough to measure are judged.
                "judged": bool(mask.sum() >= min_group and group != UNKNOWN_GROUP),
            }
        )
    judged = [r for r in counts if r["judged"]]
    # A false-negative rate over a handful of high-risk claims is noise, not disparity.
    with_fnr = [r for r in judged if r["positives"] >= min_positives]
    # Bonferroni: each interval at 1 - alpha/k, so the k intervals hold together at least at 1 - alpha.
    rate_level = 1 - (1 - confidence) / max(len(judged), 1)
    fnr_level = 1 - (1 - confidence) / max(len(with_fnr), 1)
    rows: list[dict[str, Any]] = []
    for r in counts:
        selection = wilson_interval(r["flagged"], r["count"], rate_level)
        fnr = wilson_interval(r["missed"], r["positives"], fnr_level)
        rows.append(
            {
                "group": r["group"],
                "count": r["count"],
                "positives": r["positives"],
                "prevalence": r["prevalence"],
                "selection_rate": r["flagged"] / r["count"] if r["count"] else float("nan"),
                "selection_rate_interval": list(selection),
                "false_negative_rate": r["missed"] / r["positives"] if r["positives"] else float("nan"),
                "false_negative_rate_interval": list(fnr) if r["positives"] else [float("nan")] * 2,
                "roc_auc": r["roc_auc"],
                "judged": r["judged"],
            }
        )
    judged_rows = [row for row in rows if row["judged"]]
    fnr_rows = [row for row in judged_rows if row["positives"] >= min_positives]
    rates = [float(row["selection_rate"]) for row in judged_rows]
    fnrs = [float(row["false_negative_rate"]) for row in fnr_rows]
    ratio_upper = 1.0
    if len(judged_rows) >= 2:
        lowest_upper = min(row["selection_rate_interval"][1] for row in judged_rows)
        highest_lower = max(row["selection_rate_interval"][0] for row in judged_rows)
        # A highest rate that could be 0 bounds nothing: the groups may all flag alike.
        ratio_upper = 1.0 if highest_lower <= 0 else float(min(1.0, lowest_upper / highest_lower))
    fnr_gap_lower = 0.0
    if len(fnr_rows) >= 2:
        highest_lower = max(row["false_negative_rate_interval"][0] for row in fnr_rows)
        lowest_upper = min(row["false_negative_rate_interval"][1] for row in fnr_rows)
        fnr_gap_lower = float(max(0.0, highest_lower - lowest_upper))
    return {
        "groups": rows,
        "selection_rate_ratio": float(min(rates) / max(rates)) if rates and max(rates) > 0 else 1.0,
        "selection_rate_ratio_upper_95": ratio_upper,
        "selection_rate_difference": float(max(rates) - min(rates)) if rates else 0.0,
        "false_negative_rate_difference": float(max(fnrs) - min(fnrs)) if fnrs else 0.0,
        "false_negative_rate_difference_lower_95": fnr_gap_lower,
        "interval_method": f"Wilson score, Bonferroni-adjusted over the judged groups "
        f"({confidence:.0%} jointly)",
        "min_group_size": min_group,
        "min_positives_for_fnr": min_positives,
    }


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
