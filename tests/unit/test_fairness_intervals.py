"""The fairness gate on small groups: a group where nobody was flagged is not, by itself, evidence."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shared.gates import GateConfig, evaluate_gates
from shared.ml.evaluation import group_metrics, wilson_interval
from shared.ml.report import render_report


def test_the_wilson_interval_keeps_a_width_at_zero_and_matches_its_closed_form() -> None:
    low, high = wilson_interval(0, 46)
    assert low == 0.0
    assert high == pytest.approx(1.959964**2 / (46 + 1.959964**2), rel=1e-5)  # about 0.077
    low, high = wilson_interval(46, 46)
    assert high == pytest.approx(1.0) and low == pytest.approx(46 / (46 + 1.959964**2), rel=1e-5)
    # Agrees with the textbook value for 10 of 100 (0.0552 to 0.1744).
    assert wilson_interval(10, 100) == pytest.approx((0.0552, 0.1744), abs=1e-4)


def flagged_groups(sizes_and_rates: dict[str, tuple[int, float]], seed: int = 5) -> dict[str, Any]:
    """Scores of 1 for flagged claims and 0 for the others, group by group, with half high-risk."""
    rng = np.random.default_rng(seed)
    labels, flagged, y = [], [], []
    for group, (size, rate) in sizes_and_rates.items():
        labels += [group] * size
        flagged.append(rng.random(size) < rate)
        y.append(rng.random(size) < 0.5)
    scores = np.concatenate(flagged).astype(float)
    return group_metrics(np.concatenate(y).astype(int), scores, 0.5, np.array(labels, dtype=object))


def fairness_gate(fairness: dict[str, Any]) -> Any:
    evaluation = {"test": {"roc_auc": 0.9}, "fairness": {"location": fairness}}
    [gate] = [g for g in evaluate_gates({"score": 1.0}, evaluation, GateConfig()) if g.gate == "fairness"]
    return gate


def test_a_fair_model_with_a_small_group_nobody_was_flagged_in_passes() -> None:
    fairness = flagged_groups({"north": (2_000, 0.09), "south": (2_000, 0.09), "islands": (46, 0.0)})
    islands = next(g for g in fairness["groups"] if g["group"] == "islands")
    assert islands["selection_rate"] == 0.0 and islands["selection_rate_interval"][1] > 0.05
    # The raw ratio is 0, but 0 of 46 is what a 9% rate gives about once in 75 tables.
    assert fairness["selection_rate_ratio"] == 0.0
    assert fairness["selection_rate_ratio_upper_95"] > 0.9
    assert fairness_gate(fairness).passed


def test_a_clearly_unfair_model_still_fails_on_large_and_on_small_groups() -> None:
    large = flagged_groups({"north": (2_000, 0.30), "south": (2_000, 0.05)})
    gate = fairness_gate(large)
    assert not gate.passed and "location: selection-rate ratio" in gate.reason
    assert large["selection_rate_ratio_upper_95"] < 0.3
    # 0 of 46 where the others are flagged at 40%: chance does not explain that.
    small = flagged_groups({"north": (2_000, 0.40), "south": (2_000, 0.40), "islands": (46, 0.0)})
    assert small["selection_rate_ratio_upper_95"] < 0.5 and not fairness_gate(small).passed


def test_the_false_negative_gap_is_judged_on_intervals_not_on_points() -> None:
    rng = np.random.default_rng(1)
    # Group b misses none of its 25 high-risk claims, group a misses 10%: within chance.
    y = np.array([1] * 400 + [0] * 400 + [1] * 25 + [0] * 25)
    scores = np.concatenate([(rng.random(400) > 0.1), np.zeros(400), np.ones(25), np.zeros(25)]).astype(float)
    labels = np.array(["a"] * 800 + ["b"] * 50, dtype=object)
    fair = group_metrics(y, scores, 0.5, labels)
    assert fair["false_negative_rate_difference"] > 0.05
    assert fair["false_negative_rate_difference_lower_95"] == 0.0
    # Missing half the high-risk claims of one group, against a tenth of another's, is not chance.
    scores[800:825] = (np.arange(25) % 2).astype(float)
    scores[:400] = (rng.random(400) > 0.1).astype(float)
    y2 = np.concatenate([y[:800], np.ones(25, dtype=int), y[825:]])
    unfair = group_metrics(y2, scores, 0.5, labels)
    assert unfair["false_negative_rate_difference_lower_95"] > 0.15
    assert "false-negative-rate difference" in fairness_gate(unfair).reason


def test_the_report_shows_each_groups_interval() -> None:
    fairness = flagged_groups({"north": (2_000, 0.09), "islands": (46, 0.0)})
    islands = next(g for g in fairness["groups"] if g["group"] == "islands")
    html = render_report(minimal_evaluation({"location": fairness}))
    assert f"0.000 to {islands['selection_rate_interval'][1]:.3f}" in html
    assert "Wilson score interval" in html


def minimal_evaluation(fairness: dict[str, Any]) -> dict[str, Any]:
    from shared.ml.evaluation import classification_metrics, curves, reliability, threshold_comparison

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    scores = np.clip(y * 0.4 + rng.random(400) * 0.6, 0, 1)
    return {
        "model": {
            "version": "v1",
            "family": "xgboost",
            "spec": "claims",
            "data_sha256": "ab" * 32,
            "code_version": "abc",
            "explanation_method": "TreeSHAP",
            "hyperparameters": {},
        },
        "costs": {"missed_high_risk": 5.0, "needless_review": 1.0},
        "test": classification_metrics(y, scores, 0.3),
        "threshold_comparison": threshold_comparison(y, scores, 0.3),
        "curves": curves(y, scores),
        "reliability": reliability(y, scores),
        "global_importance": [{"factor": "claim_amount", "mean_abs_contribution": 0.5}],
        "fairness": fairness,
    }
