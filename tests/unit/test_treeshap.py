"""The tabulated TreeSHAP gives XGBoost's own values: the explanations a claims handler reads are the
exact path-dependent Shapley values, not an approximation, whatever the model's shape."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from shared.ml.families import XGBoostFamily
from shared.ml.treeshap import tables_from_booster


def _booster(
    depth: int, rounds: int, n_features: int, seed: int, missing_share: float
) -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(800, n_features))
    # A few discrete columns, so that split values coincide with data values (the boundary case).
    x[:, 0] = rng.integers(0, 4, size=len(x))
    y = ((x[:, 0] > 1) ^ (x[:, 1 % n_features] + 0.5 * x[:, -1] > 0.3)).astype(int)
    x[rng.random(x.shape) < missing_share] = np.nan
    params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.3, "seed": seed, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, missing=np.nan), num_boost_round=rounds)
    return booster, x


@pytest.mark.parametrize(
    ("depth", "rounds", "n_features", "missing_share"),
    [
        (1, 5, 4, 0.0),  # stumps
        (4, 60, 12, 0.05),  # the usual champion's shape
        (6, 30, 3, 0.2),  # deep trees on few features: features repeat along a path
        (8, 10, 20, 0.1),  # the deepest the tuner may pick
    ],
)
def test_contributions_and_margin_equal_xgboost(
    depth: int, rounds: int, n_features: int, missing_share: float
) -> None:
    booster, x = _booster(depth, rounds, n_features, seed=depth, missing_share=missing_share)
    tables = tables_from_booster(booster)
    assert tables is not None
    rows = np.vstack([x[:300], np.full((1, n_features), np.nan)])  # and a claim with nothing filled in
    margin, contributions = tables.explain(rows)

    native = booster.predict(xgb.DMatrix(rows, missing=np.nan), pred_contribs=True)
    np.testing.assert_allclose(contributions, native[:, :-1], atol=2e-5)
    expected_margin = booster.predict(xgb.DMatrix(rows, missing=np.nan), output_margin=True)
    np.testing.assert_allclose(margin, expected_margin, atol=2e-5)
    # Local accuracy: the contributions add up to the distance from the average claim.
    np.testing.assert_allclose(contributions.sum(axis=1) + native[:, -1], margin, atol=5e-5)


@pytest.mark.parametrize(("depth", "missing_share"), [(4, 0.05), (7, 0.3)])
def test_one_claim_and_many_give_the_same_values(depth: int, missing_share: float) -> None:
    """Batches are split over threads and explained block by block, a few claims one by one: a
    claim's explanation and score must not depend on its neighbours, to the last bit."""
    booster, x = _booster(depth, 40, 8, seed=3, missing_share=missing_share)
    tables = tables_from_booster(booster)
    assert tables is not None
    margin, together = tables.explain(x[:700])
    picked = (0, 137, 255, 256, 699)
    alone = [tables.explain(x[i : i + 1]) for i in picked]
    np.testing.assert_array_equal(np.vstack([c for _, c in alone]), together[list(picked)])
    np.testing.assert_array_equal(np.concatenate([m for m, _ in alone]), margin[list(picked)])


def test_a_tree_without_splits_adds_only_to_the_margin() -> None:
    _, x = _booster(3, 3, 4, seed=5, missing_share=0.0)
    # gamma this large forbids every split: each tree is one leaf.
    flat = xgb.train(
        {"objective": "binary:logistic", "gamma": 1e9, "nthread": 1},
        xgb.DMatrix(x, label=(x[:, 1] > 0).astype(int)),
        num_boost_round=3,
    )
    tables = tables_from_booster(flat)
    assert tables is not None
    margin, contributions = tables.explain(x[:5])
    assert np.all(contributions == 0)
    np.testing.assert_allclose(margin, flat.predict(xgb.DMatrix(x[:5]), output_margin=True), atol=1e-6)


def test_a_model_too_large_to_tabulate_is_explained_by_xgboost_itself() -> None:
    booster, x = _booster(6, 20, 10, seed=7, missing_share=0.0)
    assert tables_from_booster(booster, max_entries=100) is None
    family = XGBoostFamily(booster, tables=None)
    margin, contributions = family.explain(x[:10])
    native = booster.predict(xgb.DMatrix(x[:10]), pred_contribs=True)
    np.testing.assert_allclose(contributions, native[:, :-1], atol=1e-6)
    np.testing.assert_allclose(margin, booster.predict(xgb.DMatrix(x[:10]), output_margin=True), atol=1e-6)
