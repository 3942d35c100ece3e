"""Each gate stops a bad challenger, the champion stays, and people are told why.

One champion is trained and promoted first; every test then runs a full pipeline whose challenger
should be stopped, and checks the registry's ``champion`` alias, the model being served, the report
and the notification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from local.jobs import JobFailed
from local.pipeline_runner import LocalModelStore, PipelineRun, PipelineServices, run_pipeline
from shared.feature_spec import ColumnKind, ColumnRole, ColumnSpec, claims_spec
from shared.gates import GateConfig
from shared.ml.synthetic import generate_claims, write_claims
from shared.promotion import registered_model_name
from step_functions.pipeline import PipelineInputs
from tests.factories import local_test_services

pytestmark = pytest.mark.slow

ROWS = 8_000
NAME = registered_model_name("claims")
# Floors and fairness bounds out of the way, so each test proves the one gate it is about.
ONLY_CHAMPION_GATE = GateConfig(metric_floors={}, metric_ceilings={}, min_selection_rate_ratio=0.0)


@dataclass
class World:
    home: Path
    services: PipelineServices
    champion_version: str
    champion_model: str

    def run(self, data: Path, name: str, inputs: PipelineInputs) -> PipelineRun:
        return run_pipeline(data, self.home / "runs" / name, inputs, services=self.services)

    def assert_champion_unchanged(self) -> None:
        champion = self.services.registry.champion(NAME)
        assert champion is not None and champion.version == self.champion_version
        served = LocalModelStore(self.home / "models").current_dir()
        assert served is not None and served.name == self.champion_model

    def notifications(self) -> list[dict[str, Any]]:
        lines = (self.home / "notifications.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    home = tmp_path_factory.mktemp("gates")
    services = local_test_services(home)
    data = write_claims(generate_claims(ROWS, seed=11), home / "raw" / "champion.csv")
    run = run_pipeline(
        data, home / "runs" / "champion", PipelineInputs(tuning_trials=0, cv_folds=0), services=services
    )
    assert run.outcome is not None and run.promoted, run.outcome
    champion = services.registry.champion(NAME)
    assert champion is not None and champion.model_version == run.outcome.model_version
    return World(home, services, champion.version, champion.model_version)


def frame(seed: int) -> pd.DataFrame:
    return generate_claims(ROWS, seed=seed).frame.copy()


def assert_stopped_by(run: PipelineRun, world: World, gate: str, reason_part: str) -> None:
    outcome = run.outcome
    assert outcome is not None and outcome.status == "rejected", outcome
    failed = {g.gate: g.reason for g in outcome.gates if not g.passed}
    assert gate in failed and reason_part in failed[gate], failed
    assert "register" not in run.results and "deploy" not in run.results and "notify" in run.results
    world.assert_champion_unchanged()
    last = world.notifications()[-1]
    assert last["status"] == "rejected" and reason_part in last["reason"]
    assert "champion unchanged" in last["subject"]
    report = (run.run_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="gates-table"' in report and "FAIL" in report and reason_part in report


def test_dirty_data_fails_the_quality_gate(world: World, tmp_path: Path) -> None:
    claims = frame(seed=21)
    rng = np.random.default_rng(0)
    broken = rng.random(len(claims)) < 0.25
    claims["claim_amount"] = claims["claim_amount"].astype(object)
    claims.loc[broken, "claim_amount"] = -100.0  # a negative amount breaks a business rule
    data = tmp_path / "dirty.csv"
    claims.to_csv(data, index=False)
    run = world.run(data, "dirty", PipelineInputs(tuning_trials=0, cv_folds=0))
    assert_stopped_by(run, world, "data_quality", "data quality score")


def test_a_challenger_worse_than_the_champion_fails_the_champion_gate(world: World, tmp_path: Path) -> None:
    data = write_claims(generate_claims(ROWS, seed=22), tmp_path / "claims.csv")
    weak = {"model_family": "random_forest", "rf_max_depth": 4, "rf_n_estimators": 50, "rf_max_features": 0.1}
    inputs = PipelineInputs(tuning_trials=0, cv_folds=0, hyperparameters=weak, gates=ONLY_CHAMPION_GATE)
    run = world.run(data, "weaker", inputs)
    assert_stopped_by(run, world, "champion", f"against champion {world.champion_model}")


def test_a_model_biased_through_a_proxy_feature_fails_the_fairness_gate(world: World, tmp_path: Path) -> None:
    # A "customer segment" that is the customer's gender in disguise, and labels that follow it: the
    # model learns to send one gender to review far more often.
    claims = frame(seed=23)
    claims["customer_segment"] = claims["gender"].map({"female": "S1", "male": "S2"}).fillna("S3")
    flip = (claims["gender"] == "female") & (np.random.default_rng(1).random(len(claims)) < 0.6)
    claims.loc[flip, "is_high_risk"] = 1
    data = tmp_path / "proxied.csv"
    claims.to_csv(data, index=False)
    spec = claims_spec()
    spec.columns.append(
        ColumnSpec(name="customer_segment", kind=ColumnKind.CATEGORICAL, role=ColumnRole.FEATURE)
    )
    spec_file = tmp_path / "claims_with_segment.json"
    spec_file.write_text(spec.to_json(), encoding="utf-8")
    gates = GateConfig(metric_floors={}, metric_ceilings={}, champion_tolerance=1.0)
    run = world.run(
        data, "proxy", PipelineInputs(spec=str(spec_file), tuning_trials=0, cv_folds=0, gates=gates)
    )
    assert_stopped_by(run, world, "fairness", "gender: selection-rate ratio")
    screen = json.loads((run.run_dir / "evaluation.json").read_text(encoding="utf-8"))["feature_screen"]
    assert {"factor": "customer_segment", "attribute": "gender"} in [
        {k: p[k] for k in ("factor", "attribute")} for p in screen["proxies"]
    ]


def test_a_model_that_learned_nothing_fails_the_metric_floors(world: World, tmp_path: Path) -> None:
    claims = frame(seed=24)
    claims["is_high_risk"] = np.random.default_rng(2).permutation(claims["is_high_risk"].to_numpy())
    data = tmp_path / "shuffled.csv"
    claims.to_csv(data, index=False)
    run = world.run(data, "noise", PipelineInputs(tuning_trials=0, cv_folds=0))
    assert_stopped_by(run, world, "metric_floors", "roc_auc")


def test_a_failing_step_notifies_and_keeps_the_champion(world: World, tmp_path: Path) -> None:
    # A column that is the label itself: the feature screen stops the run before any training.
    claims = frame(seed=25)
    claims["adjuster_flag"] = claims["is_high_risk"].map({0: "clear", 1: "refer"})
    data = tmp_path / "leaky.csv"
    claims.to_csv(data, index=False)
    spec = claims_spec()
    spec.columns.append(
        ColumnSpec(name="adjuster_flag", kind=ColumnKind.CATEGORICAL, role=ColumnRole.FEATURE)
    )
    spec_file = tmp_path / "claims_with_flag.json"
    spec_file.write_text(spec.to_json(), encoding="utf-8")
    with pytest.raises(JobFailed) as failure:
        world.run(data, "leaky", PipelineInputs(spec=str(spec_file), tuning_trials=0, cv_folds=0))
    assert failure.value.step == "features" and "target leakage" in failure.value.reason
    assert "adjuster_flag" in failure.value.reason
    world.assert_champion_unchanged()
    last = world.notifications()[-1]
    assert last["status"] == "failed" and last["failed_step"] == "features"


def test_the_champion_carries_params_metrics_report_data_hash_and_code_version(world: World) -> None:
    from mlflow import MlflowClient

    from tests.factories import tracking_uri_in

    client = MlflowClient(tracking_uri=tracking_uri_in(world.home))
    version = client.get_model_version_by_alias(NAME, "champion")
    assert str(version.version) == world.champion_version
    assert len(version.tags["data_sha256"]) == 64 and version.tags["code_version"]
    assert version.tags["model_version"] == world.champion_model
    assert version.run_id is not None
    run = client.get_run(version.run_id)
    assert run.data.params["model_family"] == "xgboost" and "threshold" in run.data.params
    assert 0.5 < run.data.metrics["test_roc_auc"] <= 1 and "data_quality_score" in run.data.metrics
    files = {
        f.path for folder in ("model", "evaluation") for f in client.list_artifacts(run.info.run_id, folder)
    }
    assert {"model/model.tar.gz", "evaluation/report.html", "evaluation/gates.json"} <= files


def test_rejected_challengers_are_tracked_but_never_registered(world: World) -> None:
    from mlflow import MlflowClient

    from tests.factories import tracking_uri_in

    client = MlflowClient(tracking_uri=tracking_uri_in(world.home))
    experiment = client.get_experiment_by_name("claims-risk")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.decision = 'rejected'")
    registered_runs = {v.run_id for v in client.search_model_versions(f"name = '{NAME}'")}
    assert runs and not registered_runs & {r.info.run_id for r in runs}
