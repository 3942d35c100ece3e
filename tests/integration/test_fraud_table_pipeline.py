"""A real-world-shaped fraud table (6% fraud, an integer year, banded columns) through the pipeline with
the user's spec file: the out-of-time check on the last year, gates at the spec's floors, lineage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from local.pipeline_runner import run_pipeline
from shared.gates import GateConfig
from shared.ml.evaluation import classification_metrics
from shared.ml.frames import read_parquet_folder
from shared.ml.model import RiskModel, unpack_model
from shared.promotion import decide
from step_functions.pipeline import PipelineInputs
from tests.factories import local_test_services
from tests.fraud_table import write_fraud_case

if TYPE_CHECKING:
    from local.pipeline_runner import PipelineRun

pytestmark = pytest.mark.slow

SPEC_GATES = {"roc_auc": 0.75, "pr_auc_lift": 2.0}


@pytest.fixture(scope="module")
def fraud_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    root = tmp_path_factory.mktemp("fraud")
    data, spec = write_fraud_case(root / "case", 6_000, seed=11, gates=SPEC_GATES)
    inputs = PipelineInputs(spec=str(spec), tuning_trials=0, cv_folds=0)
    return run_pipeline(data, root / "run", inputs, services=local_test_services(root / "home"))


@pytest.fixture(scope="module")
def evaluation(fraud_run: PipelineRun) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((fraud_run.run_dir / "evaluation.json").read_text(encoding="utf-8"))
    return loaded


def test_the_out_of_time_check_trains_on_the_early_years_and_measures_the_last(
    fraud_run: PipelineRun, evaluation: dict[str, Any]
) -> None:
    oot = evaluation["out_of_time"]
    assert "skipped" not in oot, oot
    assert (oot["date_column"], oot["cutoff"], oot["later_from"]) == ("Year", "2020", "2021")
    splits = [read_parquet_folder(fraud_run.artifacts[name]) for name in ("train", "validation", "test")]
    assert oot["test_rows"] == sum(int((s["Year"] == 2021).sum()) for s in splits)
    # The last year's lower fraud rate shows beside the in-time figure of the same refit.
    assert oot["metrics"]["prevalence"] < oot["in_time_metrics"]["prevalence"]
    report = (fraud_run.run_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="out-of-time-table"' in report and "from 2021 on" in report


def test_the_gates_pass_a_good_model_at_the_specs_floors_and_fail_a_crippled_one(
    fraud_run: PipelineRun, evaluation: dict[str, Any]
) -> None:
    test = evaluation["test"]
    assert 0.03 < test["prevalence"] < 0.09
    assert fraud_run.promoted, fraud_run.outcome
    # The absolute floors of old would have refused this model.
    assert test["pr_auc"] < 0.5
    assert not decide({"score": 1.0}, evaluation, GateConfig(metric_floors={"pr_auc": 0.5})).passed
    checks = {c["name"]: c for g in evaluation["gates"]["gates"] for c in g["checks"]}
    assert (checks["roc_auc"]["bound"], checks["roc_auc"]["source"]) == (0.75, "spec")
    assert (checks["pr_auc_lift"]["bound"], checks["pr_auc_lift"]["source"]) == (2.0, "spec")
    assert checks["recall_lift"]["source"] == "default"
    report = (fraud_run.run_dir / "report.html").read_text(encoding="utf-8")
    lift = checks["pr_auc_lift"]["value"]
    assert f"<td>pr_auc_lift</td><td>{lift:.4f}</td><td>at least 2.0000</td>" in report
    # The same holdout scored by a model that learned nothing: the spec's floors refuse it.
    y = read_parquet_folder(fraud_run.artifacts["test"])["FraudFound"].to_numpy(np.int64)
    noise = np.random.default_rng(0).random(len(y)) * 0.2
    crippled = {**evaluation, "test": classification_metrics(y, noise, test["threshold"])}
    decision = decide({"score": 1.0}, crippled, GateConfig())
    assert not decision.passed and decision.summary().startswith("metric_floors: roc_auc")


def test_the_lineage_names_the_users_spec(fraud_run: PipelineRun, tmp_path: Path) -> None:
    model = RiskModel.load(unpack_model(fraud_run.model_tarball, tmp_path / "model"))
    assert model.spec.name == "vehicle_fraud" and model.spec.gates == SPEC_GATES
    assert model.manifest.lineage.hyperparameters["feature_spec"] == "vehicle_fraud"
    registered = json.loads((fraud_run.run_dir / "register" / "registration.json").read_text())
    assert registered["name"] == "claims-risk-vehicle_fraud"
