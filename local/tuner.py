"""The local stand-in for SageMaker's hyperparameter tuning job: Optuna (TPE) over the same ranges.

Each trial picks a model family and its hyperparameters from :data:`step_functions.pipeline.HYPERPARAMETERS`
and is scored by PR-AUC under stratified K-fold cross-validation on the training split. The default
configuration of every family is tried first, so each family competes even on a small budget. Every
trial is logged to MLflow as a nested run.
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
from shared.ml.cross_validation import cross_validated_pr_auc, make_folds
from shared.ml.families import FAMILIES
from step_functions.pipeline import HYPERPARAMETERS, Hyperparameter, parse_hyperparameters

TrialReport = Callable[[dict[str, Any]], None]


@dataclass
class TuningResult:
    best_hyperparameters: dict[str, Any]
    best_cv_pr_auc: float
    trials: list[dict[str, Any]] = field(default_factory=list)

    def best_per_family(self) -> dict[str, float]:
        best: dict[str, float] = {}
        for trial in self.trials:
            if trial["state"] == "complete":
                family = trial["params"]["model_family"]
                best[family] = max(best.get(family, 0.0), trial["cv_pr_auc"])
        return best


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
) -> TuningResult:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = spec.target.column
    if len(train) > max_rows:  # trials compare configurations; the winner is retrained on all rows
        train, _ = train_test_split(train, train_size=max_rows, stratify=train[target], random_state=seed)
    cv = make_folds(train.reset_index(drop=True), spec, folds, seed)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    for family in families[: max(n_trials, 0)]:
        study.enqueue_trial(defaults_for(family))
    records: list[dict[str, Any]] = []

    with _mlflow_parent(tracking_uri, experiment, {"step": "tune", "spec": spec.name}) as parent:

        def objective(trial: Any) -> float:
            params = suggest(trial, families)
            started = time.perf_counter()
            scores = cross_validated_pr_auc(cv, parse_hyperparameters(params))
            record = {
                "number": trial.number,
                "params": params,
                "cv_pr_auc": float(np.mean(scores)),
                "cv_pr_auc_std": float(np.std(scores)),
                "fold_pr_auc": scores,
                "seconds": time.perf_counter() - started,
                "state": "complete",
            }
            records.append(record)
            if parent is not None:
                import mlflow

                with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                    mlflow.log_params(params)
                    mlflow.log_metrics(
                        {
                            "cv_pr_auc": record["cv_pr_auc"],
                            "cv_pr_auc_std": record["cv_pr_auc_std"],
                            "seconds": record["seconds"],
                        }
                    )
            if on_trial:
                on_trial(record)
            return float(record["cv_pr_auc"])

        if n_trials > 0:
            study.optimize(
                objective, n_trials=n_trials, timeout=timeout_s, catch=(ValueError, ArithmeticError)
            )
        completed = [r for r in records if r["state"] == "complete"]
        if not completed:
            best_params, best_value = defaults_for("xgboost"), float("nan")
        else:
            best = max(completed, key=lambda r: r["cv_pr_auc"])
            best_params, best_value = best["params"], best["cv_pr_auc"]
        if parent is not None:
            import mlflow

            mlflow.log_params({f"best.{k}": v for k, v in best_params.items()})
            mlflow.log_metric("best_cv_pr_auc", best_value)
    return TuningResult(best_params, best_value, records)
