"""The local stand-in for SageMaker's hyperparameter tuning job: Optuna (TPE) over the same ranges.

Each trial picks a model family and its hyperparameters from :data:`step_functions.pipeline.HYPERPARAMETERS`
and is scored by PR-AUC under stratified K-fold cross-validation on the training split. The default
configuration of every family is tried first, so each family competes even on a small budget. Every
completed trial is logged to MLflow as a nested run. The search keeps to its wall-clock budget
(:class:`Budget`) and says how many trials ran of those asked, and why it ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from shared.feature_spec import FeatureSpec
from shared.ml.cross_validation import Fold, cross_validated_pr_auc, make_folds
from shared.ml.families import FAMILIES
from step_functions.pipeline import HYPERPARAMETERS, Hyperparameter, parse_hyperparameters

TrialReport = Callable[[dict[str, Any]], None]
# Scores one fold of a configuration: (fold, parsed hyperparameters) -> PR-AUC on its holdout.
FoldScorer = Callable[[Fold, dict[str, Any]], float]
Clock = Callable[[], float]
# After this many trials in a row that did not fit the budget, the search ends: the sampler keeps
# proposing families that the time left cannot pay for.
MAX_SKIPS_IN_A_ROW = 3


@dataclass
class TuningResult:
    best_hyperparameters: dict[str, Any]
    best_cv_pr_auc: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)

    def best_per_family(self) -> dict[str, float]:
        best: dict[str, float] = {}
        for trial in self.trials:
            if trial["state"] == "complete":
                family = trial["params"]["model_family"]
                best[family] = max(best.get(family, 0.0), trial["cv_pr_auc"])
        return best


@dataclass
class Budget:
    """The tuning step's wall-clock budget, and what folds have cost so far, to tell what still fits.

    Optuna's own ``timeout`` is only looked at between trials, so a trial started just before the
    end ran to completion and the step overran (583 s of 480). Here a trial is not started when the
    folds it needs, at the pace its family has shown, would pass the deadline, and a running trial
    is stopped before a fold that would: the families' fits cannot be interrupted from outside, so a
    fold is the unit of work, and the step can overrun only by how much one fold outlasts its
    estimate (and by a family's first fold, which has no estimate yet).
    """

    seconds: float
    clock: Clock = time.perf_counter
    started: float = field(init=False)
    folds_seen: dict[str, list[float]] = field(default_factory=dict)  # seconds per fold, by family

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def remaining(self) -> float:
        return self.seconds - self.elapsed

    def record(self, family: str, seconds: float) -> None:
        self.folds_seen.setdefault(family, []).append(seconds)

    def fold_estimate(self, family: str, this_trial: list[float] | None = None) -> float | None:
        """Seconds a fold is expected to take: this trial's folds so far (same hyperparameters), else
        the family's, else any family's; None before anything was measured."""
        for seen in (this_trial or [], self.folds_seen.get(family, [])):
            if seen:
                return float(np.mean(seen))
        every = [s for family_folds in self.folds_seen.values() for s in family_folds]
        return float(np.mean(every)) if every else None

    def fits(self, seconds: float) -> bool:
        return seconds <= self.remaining


def score_fold(fold: Fold, hp: dict[str, Any]) -> float:
    return cross_validated_pr_auc([fold], hp)[0]


def suggest(trial: Any, families: tuple[str, ...]) -> dict[str, Any]:
    """Sample a family, then only the hyperparameters that family uses (a conditional space)."""
    family = trial.suggest_categorical("model_family", list(families))
    params: dict[str, Any] = {"model_family": family}
    for hp in HYPERPARAMETERS:
        if not hp.tunable or hp.name == "model_family" or hp.family not in (None, family):
            continue
        params[hp.name] = _suggest_one(trial, hp)
    return params


def _suggest_one(trial: Any, hp: Hyperparameter) -> Any:
    if hp.kind == "categorical":
        return trial.suggest_categorical(hp.name, list(hp.choices))
    assert hp.low is not None and hp.high is not None
    if hp.kind == "int":
        return trial.suggest_int(hp.name, int(hp.low), int(hp.high), log=hp.log)
    return trial.suggest_float(hp.name, hp.low, hp.high, log=hp.log)


def defaults_for(family: str) -> dict[str, Any]:
    return {
        hp.name: (family if hp.name == "model_family" else hp.default)
        for hp in HYPERPARAMETERS
        if hp.tunable and hp.family in (None, family)
    }


@contextmanager
def _mlflow_parent(tracking_uri: str | None, experiment: str, tags: dict[str, str]) -> Iterator[Any]:
    if tracking_uri is None:
        yield None
        return
    import mlflow

    from shared.adapters.mlflow_registry import ensure_experiment

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment_id=ensure_experiment(tracking_uri, experiment))
    with mlflow.start_run(run_name="tuning", tags=tags) as parent:
        yield parent


def tune(
    train: pd.DataFrame,
    spec: FeatureSpec,
    *,
    n_trials: int,
    timeout_s: float,
    folds: int = 3,
    max_rows: int = 40_000,
    seed: int = 0,
    families: tuple[str, ...] = FAMILIES,
    tracking_uri: str | None = None,
    experiment: str = "claims-risk",
    on_trial: TrialReport | None = None,
    clock: Clock = time.perf_counter,
    scorer: FoldScorer = score_fold,
) -> TuningResult:
    """Up to ``n_trials`` trials within ``timeout_s`` seconds (preparing the folds included); the
    result's ``budget`` says how many ran against how many were asked, and why the search ended."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = Budget(timeout_s, clock)
    target = spec.target.column
    if len(train) > max_rows:  # trials compare configurations; the winner is retrained on all rows
        train, _ = train_test_split(train, train_size=max_rows, stratify=train[target], random_state=seed)
    cv = make_folds(train.reset_index(drop=True), spec, folds, seed) if n_trials > 0 else []
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    for family in families[: max(n_trials, 0)]:
        study.enqueue_trial(defaults_for(family))
    records: list[dict[str, Any]] = []
    started = skipped_in_a_row = 0
    ended_by = "every trial asked for ran" if n_trials > 0 else "no search asked for (0 trials)"

    with _mlflow_parent(tracking_uri, experiment, {"step": "tune", "spec": spec.name}) as parent:
        while started < n_trials:
            if budget.remaining <= 0:  # preparing the folds (or the trials so far) took all of it
                ended_by = f"the budget: {budget.elapsed:.1f}s of {budget.seconds:g}s spent"
                break
            trial = study.ask()
            params = suggest(trial, families)
            family = params["model_family"]
            estimate = budget.fold_estimate(family)
            if estimate is not None and not budget.fits(len(cv) * estimate):
                why = (
                    f"{family} needs about {len(cv) * estimate:.0f}s for {len(cv)} folds, "
                    f"{max(budget.remaining, 0):.0f}s of the budget left"
                )
                study.tell(trial, state=TrialState.PRUNED)
                _report(
                    records,
                    on_trial,
                    {"number": trial.number, "params": params, "state": "not started", "reason": why},
                )
                skipped_in_a_row += 1
                if skipped_in_a_row >= MAX_SKIPS_IN_A_ROW or not _any_family_fits(budget, families, len(cv)):
                    ended_by = f"the budget: the next trial would have passed it ({why})"
                    break
                continue
            skipped_in_a_row = 0
            started += 1
            record = _run_trial(trial.number, params, cv, budget, scorer)
            if record["state"] == "complete":
                study.tell(trial, record["cv_pr_auc"])
                _log_trial(parent, trial.number, record)
            else:
                study.tell(trial, state=TrialState.FAIL)
            _report(records, on_trial, record)
            if record["state"] == "stopped":
                ended_by = f"the budget: trial {trial.number} was stopped ({record['reason']})"
                break
        completed = [r for r in records if r["state"] == "complete"]
        if not completed:
            best_params, best_value = defaults_for("xgboost"), float("nan")
        else:
            best = max(completed, key=lambda r: r["cv_pr_auc"])
            best_params, best_value = best["params"], best["cv_pr_auc"]
        summary = _budget_summary(records, n_trials, budget, ended_by)
        if parent is not None:
            import mlflow

            mlflow.log_params({f"best.{k}": v for k, v in best_params.items()})
            mlflow.log_metric("best_cv_pr_auc", best_value)
            mlflow.log_metrics({k: float(summary[k]) for k in ("trials_asked", "trials_run", "elapsed_s")})
            mlflow.set_tag("ended_by", ended_by[:5000])
    return TuningResult(best_params, best_value, records, summary)


def _run_trial(
    number: int, params: dict[str, Any], cv: list[Fold], budget: Budget, scorer: FoldScorer
) -> dict[str, Any]:
    """One configuration fold by fold; stopped before a fold when the folds left would pass the
    budget at this trial's pace (its partial score compares with nothing, so it is dropped)."""
    family = params["model_family"]
    hp = parse_hyperparameters(params)
    started = budget.clock()
    scores: list[float] = []
    durations: list[float] = []
    record: dict[str, Any] = {"number": number, "params": params}
    try:
        for k, fold in enumerate(cv):
            estimate = budget.fold_estimate(family, durations)
            if k > 0 and estimate is not None and not budget.fits((len(cv) - k) * estimate):
                left = len(cv) - k
                record |= {
                    "state": "stopped",
                    "reason": f"{left} of {len(cv)} folds left, about {left * estimate:.0f}s, "
                    f"{max(budget.remaining, 0):.0f}s of the budget left",
                }
                break
            fold_started = budget.clock()
            scores.append(scorer(fold, hp))
            durations.append(budget.clock() - fold_started)
            budget.record(family, durations[-1])
        else:
            record |= {
                "state": "complete",
                "cv_pr_auc": float(np.mean(scores)),
                "cv_pr_auc_std": float(np.std(scores)),
                "fold_pr_auc": scores,
            }
    except (ValueError, ArithmeticError) as error:  # a configuration that cannot fit: the next one may
        record |= {"state": "failed", "reason": f"{type(error).__name__}: {error}"}
    record["seconds"] = budget.clock() - started
    return record


def _any_family_fits(budget: Budget, families: tuple[str, ...], folds: int) -> bool:
    estimates = [budget.fold_estimate(f) for f in families]
    return any(e is None or budget.fits(folds * e) for e in estimates)


def _report(records: list[dict[str, Any]], on_trial: TrialReport | None, record: dict[str, Any]) -> None:
    records.append(record)
    if on_trial:
        on_trial(record)


def _log_trial(parent: Any, number: int, record: dict[str, Any]) -> None:
    if parent is None:
        return
    import mlflow

    with mlflow.start_run(run_name=f"trial-{number}", nested=True):
        mlflow.log_params(record["params"])
        mlflow.log_metrics(
            {
                "cv_pr_auc": record["cv_pr_auc"],
                "cv_pr_auc_std": record["cv_pr_auc_std"],
                "seconds": record["seconds"],
            }
        )


def _budget_summary(
    records: list[dict[str, Any]], asked: int, budget: Budget, ended_by: str
) -> dict[str, Any]:
    """Trials run against asked, and time spent against the budget: what trials.json and the report say."""
    states = [r["state"] for r in records]
    run = sum(s != "not started" for s in states)
    return {
        "trials_asked": asked,
        "trials_run": run,
        "trials_completed": states.count("complete"),
        "trials_stopped": states.count("stopped"),
        "trials_failed": states.count("failed"),
        "trials_not_run": asked - run,
        "budget_s": budget.seconds,
        "elapsed_s": round(budget.elapsed, 3),
        "within_budget": budget.elapsed <= budget.seconds,
        "ended_by": ended_by,
    }
