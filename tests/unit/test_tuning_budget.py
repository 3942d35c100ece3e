"""The tuner keeps to its budget: a trial that would pass it is not started, one running over is stopped,
and the result says how many trials ran of those asked. A fake clock, moved only by the folds' fits,
makes the timings exact."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from local.tuner import Budget, defaults_for, tune
from shared.feature_spec import FeatureSpec
from shared.ml.cross_validation import Fold
from shared.ml.report import tuning_html
from tests.fraud_table import fraud_spec, fraud_table

FOLD_SECONDS = {"xgboost": 10.0, "random_forest": 20.0, "keras": 40.0}


class FitClock:
    """Time passes only while a fold is fitted, as much as its family takes."""

    def __init__(self) -> None:
        self.now = 0.0
        self.folds: list[str] = []

    def __call__(self) -> float:
        return self.now

    def score(self, fold: Fold, hp: dict[str, Any]) -> float:
        self.folds.append(hp["model_family"])
        self.now += FOLD_SECONDS[hp["model_family"]]
        return 0.3 + 0.1 * list(FOLD_SECONDS).index(hp["model_family"])


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, FeatureSpec]:
    frame = fraud_table(600, seed=4)
    frame["FraudFound"] = (frame["FraudFound"] == "Yes").astype(int)
    return frame, FeatureSpec.model_validate(fraud_spec())


def run(table: tuple[pd.DataFrame, FeatureSpec], clock: FitClock, **options: Any) -> Any:
    frame, spec = table
    return tune(frame, spec, folds=2, clock=clock, scorer=clock.score, **options)


def test_a_trial_that_runs_over_the_budget_is_stopped_and_the_count_is_reported(
    table: tuple[pd.DataFrame, FeatureSpec],
) -> None:
    clock = FitClock()
    result = run(table, clock, n_trials=10, timeout_s=100)
    # xgboost 2 x 10 s, random forest 2 x 20 s, then keras's first fold (40 s) ends at the deadline:
    # its second fold would pass it, so the trial stops there and the search ends.
    assert clock.folds == ["xgboost", "xgboost", "random_forest", "random_forest", "keras"]
    assert [t["state"] for t in result.trials] == ["complete", "complete", "stopped"]
    budget = result.budget
    assert (budget["trials_asked"], budget["trials_run"], budget["trials_completed"]) == (10, 3, 2)
    assert (budget["trials_stopped"], budget["trials_not_run"]) == (1, 7)
    assert budget["elapsed_s"] == 100 and budget["within_budget"]
    assert budget["ended_by"].startswith("the budget: trial 2 was stopped (1 of 2 folds left")
    # The stopped trial's partial score competes with nothing: the best is a completed one.
    assert result.best_hyperparameters["model_family"] == "random_forest"
    assert result.best_per_family() == {"xgboost": pytest.approx(0.3), "random_forest": pytest.approx(0.4)}


def test_a_trial_the_time_left_cannot_pay_for_is_not_started(table: tuple[pd.DataFrame, FeatureSpec]) -> None:
    clock = FitClock()
    result = run(table, clock, n_trials=10, timeout_s=70, families=("xgboost",))
    # Three trials of 2 x 10 s end at 60 s; a fourth needs about 20 s and 10 s are left.
    assert clock.now == 60 and [t["state"] for t in result.trials] == ["complete"] * 3 + ["not started"]
    assert result.budget["trials_run"] == 3 and result.budget["trials_not_run"] == 7
    assert result.budget["ended_by"] == (
        "the budget: the next trial would have passed it "
        "(xgboost needs about 20s for 2 folds, 10s of the budget left)"
    )


def test_every_trial_runs_when_the_budget_allows(table: tuple[pd.DataFrame, FeatureSpec]) -> None:
    clock = FitClock()
    result = run(table, clock, n_trials=4, timeout_s=1_000)
    assert result.budget["trials_run"] == result.budget["trials_completed"] == 4
    assert result.budget["ended_by"] == "every trial asked for ran" and clock.now < 1_000


def test_with_a_tiny_real_budget_nothing_starts_and_the_defaults_train(
    table: tuple[pd.DataFrame, FeatureSpec],
) -> None:
    frame, spec = table
    result = tune(frame, spec, n_trials=5, timeout_s=0.001, folds=2)
    assert result.budget["trials_run"] == 0 and result.budget["trials_asked"] == 5
    assert result.budget["ended_by"].startswith("the budget: ") and not result.budget["within_budget"]
    assert result.best_hyperparameters == defaults_for("xgboost") and np.isnan(result.best_cv_pr_auc)
    html = "".join(tuning_html({"budget": result.budget, "best_per_family": {}}))
    assert "<b>0 of 5 trials run</b>" in html and "(over the budget)" in html


def test_the_estimate_prefers_this_trials_pace_then_the_familys_then_any() -> None:
    budget = Budget(100, clock=lambda: 0.0)
    assert budget.fold_estimate("keras") is None
    budget.record("xgboost", 10)
    budget.record("random_forest", 30)
    assert budget.fold_estimate("keras") == 20  # no keras fold yet: any family's mean
    assert budget.fold_estimate("random_forest") == 30
    assert budget.fold_estimate("random_forest", [50.0]) == 50
