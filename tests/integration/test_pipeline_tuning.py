"""The local pipeline with its tuning step: every family competes, trials reach MLflow, the best trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.pipeline_runner import run_pipeline
from shared.ml.model import RiskModel, unpack_model
from shared.ml.synthetic import generate_claims, write_claims
from step_functions.pipeline import PipelineInputs, step_names
from tests.factories import local_test_services, tracking_uri_in

pytestmark = pytest.mark.slow


def test_tuning_across_families_logs_every_trial_and_trains_the_winner(tmp_path: Path) -> None:
    data = write_claims(generate_claims(5_000, seed=31), tmp_path / "raw" / "claims.csv")
    uri = tracking_uri_in(tmp_path)
    inputs = PipelineInputs(
        tuning_trials=4,
        tuning_folds=2,
        tuning_max_rows=2_000,
        hyperparameters={"nn_epochs": 5, "rf_n_estimators": 50},
    )
    steps_seen: list[str] = []
    run = run_pipeline(
        data,
        tmp_path / "run",
        inputs,
        services=local_test_services(tmp_path),
        tracking_uri=uri,
        on_step=lambda s, state: steps_seen.append(s.name) if state == "finished" else None,
    )
    assert run.outcome is not None and run.promoted, run.outcome
    assert steps_seen == step_names()

    summary = json.loads((tmp_path / "run" / "tune" / "trials.json").read_text())
    assert len(summary["trials"]) == 4
    assert summary["budget"]["trials_run"] == summary["budget"]["trials_asked"] == 4
    assert summary["budget"]["ended_by"] == "every trial asked for ran"
    assert set(summary["best_per_family"]) == {"xgboost", "random_forest", "keras"}
    best = json.loads(run.artifacts["hyperparameters"].read_text())
    assert summary["best_cv_pr_auc"] == max(t["cv_pr_auc"] for t in summary["trials"])

    model = RiskModel.load(unpack_model(run.model_tarball, tmp_path / "model"))
    assert model.manifest.family == best["model_family"]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "claims-risk"]
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(trials) == 4
    assert all("cv_pr_auc" in r.data.metrics and "model_family" in r.data.params for r in trials)
