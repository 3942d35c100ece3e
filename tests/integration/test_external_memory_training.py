"""Training data that do not fit: XGBoost reads the training split batch by batch through its
external-memory iterator and gives a model as good as the in-memory run's."""

from __future__ import annotations

from pathlib import Path

import pytest

from local.jobs import run_training
from local.pipeline_runner import PipelineRun
from shared.ml.model import RiskModel, unpack_model
from step_functions.pipeline import step

pytestmark = pytest.mark.slow


def test_a_budget_too_small_for_the_data_trains_through_the_iterator(
    trained_run: PipelineRun, tmp_path: Path
) -> None:
    channels = {name: trained_run.artifacts[name] for name in ("train", "validation", "test")}
    streamed = run_training(step("train"), channels, {"xgb_memory_mb": 1}, tmp_path / "streamed")
    assert "batch by batch" in streamed.log
    model = RiskModel.load(unpack_model(streamed.outputs["model"], tmp_path / "model"))
    reference = RiskModel.load(unpack_model(trained_run.model_tarball, tmp_path / "reference"))
    assert model.manifest.lineage.train_rows == reference.manifest.lineage.train_rows
    ours, theirs = model.manifest.metrics["test"], reference.manifest.metrics["test"]
    assert ours["roc_auc"] == pytest.approx(theirs["roc_auc"], abs=0.02)
    assert ours["pr_auc"] == pytest.approx(theirs["pr_auc"], abs=0.03)
    [answer] = model.predict_records([{"claim_id": "C1", "claim_amount": 1200, "claim_type": "auto"}])
    assert answer["risk_level"] in ("low", "high") and answer["risk_factors"]
