"""A batch summary's score distribution, counted in fixed memory, against numpy's exact figures."""

from __future__ import annotations

import numpy as np
import pytest

from shared.ml.score_distribution import BINS, ScoreDistribution

LEVELS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


@pytest.mark.parametrize("size", [1, 2, 7, 10_000])
def test_quantiles_mean_and_levels_match_numpy(size: int) -> None:
    scores = np.random.default_rng(size).beta(0.6, 2.5, size=size)
    distribution = ScoreDistribution(threshold=0.3)
    for part in np.array_split(scores, 5):  # chunk by chunk, as a file is scored
        distribution.add(part)
    exact = scores.astype(np.float32)
    assert distribution.count == size
    assert distribution.high == int(np.count_nonzero(exact >= 0.3))
    assert distribution.mean == pytest.approx(float(exact.astype(np.float64).mean()), abs=1e-9)
    for level, value in distribution.quantiles(LEVELS).items():
        assert value == pytest.approx(float(np.quantile(exact, level)), abs=1 / BINS)


def test_scores_at_the_edges_are_counted() -> None:
    distribution = ScoreDistribution(threshold=0.5)
    distribution.add(np.array([0.0, 1.0, 1.0]))
    quantiles = distribution.quantiles((0.0, 1.0))
    assert quantiles[0.0] < 1e-6 and quantiles[1.0] > 1 - 1e-6
    assert distribution.high == 2


def test_an_empty_file_has_no_figures() -> None:
    distribution = ScoreDistribution(threshold=0.5)
    distribution.add(np.zeros(0))
    assert distribution.count == 0 and distribution.mean is None and distribution.quantiles(LEVELS) == {}
