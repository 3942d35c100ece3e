"""XGBoost's least split gain (``xgb_gamma``): the run's value is the one XGBoost trains with, and a
model recorded before the setting existed refits as it was trained (XGBoost's own 0)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.ml.families import TrainingData, XGBoostFamily, fit_family
from step_functions.pipeline import HYPERPARAMETERS_BY_NAME, parse_hyperparameters


def _data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    y = (rng.random(600) < 1 / (1 + np.exp(-1.5 * x[:, 0] - x[:, 1]))).astype(np.int64)
    return TrainingData(x[:450], y[:450], x[450:], y[450:], ["a", "b", "c", "d"])


def _trained_gamma(model: XGBoostFamily) -> float:
    config = json.loads(model.booster.save_config())
    return float(config["learner"]["gradient_booster"]["tree_train_param"]["gamma"])


@pytest.mark.parametrize("given", [None, "0", "7.5"])
def test_the_runs_least_split_gain_is_the_one_xgboost_trains_with(given: str | None) -> None:
    raw = {} if given is None else {"xgb_gamma": given}
    model = fit_family("xgboost", _data(), parse_hyperparameters(raw))
    assert isinstance(model, XGBoostFamily)
    expected = HYPERPARAMETERS_BY_NAME["xgb_gamma"].default if given is None else float(given)
    assert _trained_gamma(model) == pytest.approx(expected)


def test_a_higher_least_split_gain_leaves_fewer_splits_a_tree() -> None:
    data = _data(1)
    fixed = {"xgb_num_round": "60", "xgb_eta": "0.3", "xgb_max_depth": "4"}
    per_tree = {}
    for gamma in ("0", "10"):
        model = fit_family("xgboost", data, parse_hyperparameters({**fixed, "xgb_gamma": gamma}))
        assert isinstance(model, XGBoostFamily)
        trees = model.booster.get_dump()
        per_tree[gamma] = sum(tree.count("yes=") for tree in trees) / len(trees)
    assert per_tree["10"] < per_tree["0"], per_tree


def test_a_lineage_from_before_the_setting_refits_with_xgboosts_own_zero() -> None:
    data = _data(2)
    recorded = parse_hyperparameters({})
    del recorded["xgb_gamma"]  # what an older model's lineage holds
    old = fit_family("xgboost", data, recorded)
    zero = fit_family("xgboost", data, parse_hyperparameters({"xgb_gamma": "0"}))
    assert isinstance(old, XGBoostFamily)
    assert _trained_gamma(old) == 0.0
    np.testing.assert_array_equal(old.margin(data.x_val), zero.margin(data.x_val))
