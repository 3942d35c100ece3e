from __future__ import annotations

from typing import Any

import numpy as np

from shared.decision import DecisionCosts, confidence, risk_level
from shared.ml.evaluation import choose_threshold, classification_metrics, expected_cost, group_metrics
from shared.schema import RiskLevel


def test_the_cost_chosen_threshold_beats_one_half_when_misses_are_costly() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(1, 4, 20_000)
    y = (rng.random(20_000) < p).astype(int)
    costs = DecisionCosts(missed_high_risk=5, needless_review=1)
    threshold = choose_threshold(y, p, costs)
    # For calibrated scores the cost-optimal threshold is near 1 / (1 + 5).
    assert 0.12 <= threshold <= 0.22
    assert expected_cost(y, p, threshold, costs) < expected_cost(y, p, 0.5, costs)


def test_metrics_match_a_hand_count() -> None:
    y = np.array([1, 1, 0, 0, 0])
    s = np.array([0.9, 0.2, 0.6, 0.1, 0.05])
    m = classification_metrics(y, s, 0.5)
    assert m["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 1}
    assert m["recall"] == 0.5 and m["false_negative_rate"] == 0.5 and m["auto_approved_share"] == 0.6


def test_level_and_confidence() -> None:
    assert risk_level(0.3, 0.2) == RiskLevel.HIGH and confidence(0.3, 0.2) == 0.3
    assert risk_level(0.1, 0.2) == RiskLevel.LOW and confidence(0.1, 0.2) == 0.9


def test_disparity_bounds_allow_for_chance_on_small_groups_but_not_on_large_ones() -> None:
    def groups_with(rates: tuple[float, float], size: int) -> dict[str, Any]:
        rng = np.random.default_rng(3)
        labels = np.array(["a"] * size + ["b"] * size, dtype=object)
        flagged = np.concatenate([rng.random(size) < rates[0], rng.random(size) < rates[1]])
        y = np.concatenate([rng.random(size) < 0.5, rng.random(size) < 0.5]).astype(int)
        return group_metrics(y, flagged.astype(float), 0.5, labels)

    small = groups_with((0.15, 0.45), 40)
    large = groups_with((0.15, 0.45), 4000)
    assert small["selection_rate_ratio"] < 0.5 and small["selection_rate_ratio_upper_95"] > 0.8
    assert large["selection_rate_ratio_upper_95"] < 0.5
    assert large["false_negative_rate_difference_lower_95"] > 0.2
    assert small["false_negative_rate_difference_lower_95"] < large["false_negative_rate_difference_lower_95"]
