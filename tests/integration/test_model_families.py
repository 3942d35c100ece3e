"""Every model family trains under the same contract and serves through the same inference script."""

from __future__ import annotations

import re
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss

from local.jobs import JobResult, run_training
from local.pipeline_runner import PipelineRun
from sagemaker_jobs.inference import inference
from shared.metric_lines import parse_metrics
from shared.ml.families import XGBoostFamily
from shared.ml.model import RiskModel, unpack_model
from step_functions.pipeline import TRAINING_METRICS, step

pytestmark = pytest.mark.slow
SMALL = {"rf_n_estimators": 50, "nn_epochs": 8, "xgb_num_round": 200}
FAMILY_FILES = {
    "xgboost": {"model.ubj"},
    "random_forest": {"model.skops"},
    "keras": {"model.keras", "keras_inputs.json"},
}


def channels(run: PipelineRun) -> dict[str, Path]:
    return {name: run.artifacts[name] for name in ("train", "validation", "test")}


@pytest.fixture(scope="module", params=sorted(FAMILY_FILES))
def trained(
    request: pytest.FixtureRequest, trained_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, JobResult, RiskModel]:
    family = request.param
    out = tmp_path_factory.mktemp(family)
    result = run_training(step("train"), channels(trained_run), {"model_family": family, **SMALL}, out)
    model = inference.model_fn(str(unpack_model(result.outputs["model"], out / "model")))
    return family, result, model


def test_the_artifact_holds_the_familys_own_format(trained: tuple[str, JobResult, RiskModel]) -> None:
    family, result, model = trained
    with tarfile.open(result.outputs["model"]) as archive:
        names = set(archive.getnames())
    assert FAMILY_FILES[family] <= names and not any(
        n.endswith((".pkl", ".pickle", ".joblib")) for n in names
    )
    assert model.manifest.family == family and family in model.version
    assert model.manifest.explanation_method


def test_the_tuning_regexes_read_every_familys_log(trained: tuple[str, JobResult, RiskModel]) -> None:
    _, result, model = trained
    parsed = parse_metrics(result.log, list(TRAINING_METRICS))
    assert set(parsed) == set(TRAINING_METRICS)
    assert parsed["validation:roc_auc"] == pytest.approx(model.manifest.metrics["validation"]["roc_auc"])


def test_every_family_answers_the_brief_with_readable_factors(
    trained: tuple[str, JobResult, RiskModel], predict_requests: list[dict[str, Any]]
) -> None:
    _, _, model = trained
    for request, answer in zip(predict_requests, model.predict_records(predict_requests), strict=True):
        assert answer["claim_id"] == request["claim_id"] and answer["risk_level"] in {"low", "high"}
        assert 0 <= answer["risk_score"] <= 1 and answer["model_version"] == model.version
        assert answer["risk_factors"]
        for factor in answer["risk_factors"]:
            assert not re.fullmatch(r"f\d+", factor["factor"]) and 0 < factor["importance"] <= 1


def test_every_family_ranks_claims_usefully(trained: tuple[str, JobResult, RiskModel]) -> None:
    family, _, model = trained
    assert model.manifest.metrics["test"]["roc_auc"] > 0.8, family


def test_explanations_follow_the_score(
    trained: tuple[str, JobResult, RiskModel], trained_run: PipelineRun
) -> None:
    """Claims with larger contributions toward risk get higher scores."""
    _, _, model = trained
    test = pd.read_parquet(trained_run.artifacts["test"] / "test.parquet").head(300)
    matrix = model.encoder.transform(test)
    total = model.contributions(matrix).sum(axis=1)
    scores = model.probabilities(matrix)
    assert np.corrcoef(total, np.log(scores / (1 - scores)))[0, 1] > 0.8


def test_served_scores_and_factors_equal_the_separate_computations(
    trained: tuple[str, JobResult, RiskModel], predict_requests: list[dict[str, Any]]
) -> None:
    """Serving computes score and contributions in one pass (for XGBoost from per-leaf TreeSHAP
    tables). Computed apart (for XGBoost by XGBoost itself: its scoring and its own TreeSHAP), they
    must give the same answer, factor for factor."""
    family, _, model = trained
    reference_family = model.family
    if family == "xgboost":
        assert isinstance(model.family, XGBoostFamily) and model.family.tables is not None
        reference_family = replace(model.family, tables=None)
    reference = RiskModel(model.manifest, model.encoder, reference_family, model.baseline)
    served = model.predict_records(predict_requests)
    matrix = model.encoder.transform(pd.DataFrame(predict_requests))
    scores = reference.probabilities(matrix)
    contributions = reference.contributions(matrix)
    for i, answer in enumerate(served):
        assert answer["risk_score"] == pytest.approx(scores[i], abs=1e-5)
        for factor in answer["risk_factors"]:
            k = model.encoder.factor_names.index(factor["factor"])
            assert factor["contribution"] == pytest.approx(contributions[i, k], abs=2e-4)
        ranked = np.argsort(-np.abs(contributions[i]), kind="stable")[: len(answer["risk_factors"])]
        assert {model.encoder.factor_names[k] for k in ranked} == {
            f["factor"] for f in answer["risk_factors"]
        }


def test_platt_calibration_repairs_balanced_class_weights(trained_run: PipelineRun, tmp_path: Path) -> None:
    result = run_training(
        step("train"),
        channels(trained_run),
        {"model_family": "xgboost", "class_weighting": "balanced", **SMALL},
        tmp_path,
    )
    model = inference.model_fn(str(unpack_model(result.outputs["model"], tmp_path / "model")))
    test = pd.read_parquet(trained_run.artifacts["test"] / "test.parquet")
    matrix = model.encoder.transform(test)
    raw = 1.0 / (1.0 + np.exp(-model.family.margin(matrix)))  # weighted training inflates these
    calibrated = model.probabilities(matrix)
    y = test["is_high_risk"].to_numpy()
    assert raw.mean() > y.mean() + 0.1
    assert abs(calibrated.mean() - y.mean()) < 0.03
    assert brier_score_loss(y, calibrated) < brier_score_loss(y, raw)


class InProcessEndpoint:
    """The model endpoint port served by the inference script in this process (same path as the
    container: input_fn → predict_fn → output_fn)."""

    def __init__(self, model: RiskModel) -> None:
        self.model = model

    def invoke(self, claims: Any) -> list[dict[str, Any]]:
        import json

        body, _ = inference.handle(
            self.model, json.dumps(list(claims)), "application/json", "application/json"
        )
        predictions: list[dict[str, Any]] = json.loads(body)["predictions"]
        return predictions

    def describe(self) -> str:
        return f"in-process {self.model.version}"


def test_every_seed_example_gets_every_contract_field_through_the_api_for_each_family(
    trained: tuple[str, JobResult, RiskModel], contract: dict[str, Any], response_fields: set[str]
) -> None:
    import json

    from lambdas.api import handler
    from tests.unit.test_api_handler import call

    family, _, model = trained
    handler.use_ports(endpoint=InProcessEndpoint(model))
    try:
        for request in contract["predict"]["requests"]:
            response = call("POST", "/api/v1/predict", json.dumps(request))
            assert response["statusCode"] == 200, (family, response["body"])
            body = json.loads(response["body"])
            assert response_fields <= set(body), (family, response_fields - set(body))
            assert body["model_version"] == model.version and body["risk_factors"]
        for request in contract["predict_batch"]["requests"]:
            response = call("POST", "/api/v1/predict/batch", json.dumps(request))
            assert response["statusCode"] == 200, (family, response["body"])
            predictions = json.loads(response["body"])["predictions"]
            assert len(predictions) == len(request["claims"])
            assert all(response_fields <= set(p) for p in predictions)
    finally:
        handler.use_ports()


def test_each_factor_shows_the_claims_own_value_or_that_it_was_not_provided(
    trained: tuple[str, JobResult, RiskModel], predict_requests: list[dict[str, Any]]
) -> None:
    _, _, model = trained
    numeric = set(model.encoder.numeric)
    derived_inputs = {d.name: set(d.inputs) for d in model.encoder.derived}
    checked = 0
    for request, answer in zip(predict_requests, model.predict_records(predict_requests), strict=True):
        for factor in answer["risk_factors"]:
            name, value = factor["factor"], factor["value"]
            if name in numeric or name in model.encoder.categories:
                assert value == request.get(name), factor
            elif name in derived_inputs and not derived_inputs[name] <= set(request):
                assert value is None, factor  # e.g. no incident date: the factor says so
            else:
                continue
            checked += 1
    assert checked >= 3
