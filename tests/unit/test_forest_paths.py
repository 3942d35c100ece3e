"""The compiled forest walk gives scikit-learn's own probabilities, and credits every point of a
claim's score to the features split on along its paths."""

from __future__ import annotations

import itertools

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from shared.ml.families import RandomForestFamily
from shared.ml.forest_paths import ForestPaths


def _forest(missing_share: float, seed: int = 0) -> tuple[RandomForestClassifier, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1500, 6))
    x[:, 0] = rng.integers(0, 3, size=len(x))  # split values that coincide with data values
    y = ((x[:, 0] > 0) & (x[:, 1] + x[:, 2] > 0) | (x[:, 3] > 1.5)).astype(int)
    x[rng.random(x.shape) < missing_share] = np.nan
    forest = RandomForestClassifier(n_estimators=25, max_depth=9, min_samples_leaf=3, random_state=seed)
    return forest.fit(x, y), x


def _credits_by_hand(forest: RandomForestClassifier, row: np.ndarray) -> np.ndarray:
    """The same attribution written plainly from scikit-learn's decision_path."""
    credits = np.zeros(len(row))
    for estimator in forest.estimators_:
        tree = estimator.tree_
        share = tree.value[:, 0, 1] / tree.value[:, 0, :].sum(axis=1)
        path = estimator.decision_path(row[None, :]).indices
        for parent, child in itertools.pairwise(path):
            credits[tree.feature[parent]] += share[child] - share[parent]
    return credits / len(forest.estimators_)


def test_probabilities_equal_scikit_learns_with_missing_values() -> None:
    forest, x = _forest(missing_share=0.1)
    paths = ForestPaths.from_forest(forest)
    probability, credits = paths.explain(x)
    np.testing.assert_allclose(probability, forest.predict_proba(x)[:, 1], atol=1e-12)
    np.testing.assert_allclose(credits.sum(axis=1), probability - paths.average, atol=1e-12)


def test_credits_equal_the_plain_walk_down_each_tree() -> None:
    forest, x = _forest(missing_share=0.05, seed=1)
    _, credits = ForestPaths.from_forest(forest).explain(x[:200])
    for i in (0, 17, 199):
        np.testing.assert_allclose(credits[i], _credits_by_hand(forest, x[i]), atol=1e-12)


def test_the_family_explains_in_log_odds_that_add_up_to_the_margin() -> None:
    forest, x = _forest(missing_share=0.0, seed=2)
    family = RandomForestFamily(forest)
    assert family.paths is not None
    margin, contributions = family.explain(x[:300])
    np.testing.assert_allclose(margin, family.margin(x[:300]), atol=1e-9)
    average = family.paths.average
    base = np.log(average / (1 - average))
    # Rows with a probability of exactly 0 or 1 are clipped in the margin; the rest add up exactly.
    p = forest.predict_proba(x[:300])[:, 1]
    inside = (p > 1e-6) & (p < 1 - 1e-6)
    np.testing.assert_allclose(contributions[inside].sum(axis=1), margin[inside] - base, atol=1e-9)
