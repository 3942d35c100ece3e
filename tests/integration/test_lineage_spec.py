"""A model's lineage names the spec it was trained on, not the hyperparameter's default ("claims")."""

from __future__ import annotations

import json
from pathlib import Path

from sagemaker_jobs.environment import TrainingEnvironment
from sagemaker_jobs.training import train
from shared.feature_spec import FeatureSpec, builtin_spec_names
from shared.ml.model import Manifest
from tests.fraud_table import fraud_spec, fraud_table


def test_the_lineage_of_a_model_of_another_spec_names_that_spec(tmp_path: Path) -> None:
    spec = FeatureSpec.model_validate(fraud_spec())
    assert spec.name not in builtin_spec_names()  # a user's own spec, by file
    table = fraud_table(1_200, seed=2)
    table["FraudFound"] = (table["FraudFound"] == "Yes").astype(int)
    channels = {}
    for name, rows in (("train", table.iloc[:900]), ("validation", table.iloc[900:])):
        channels[name] = tmp_path / "input" / name
        channels[name].mkdir(parents=True)
        rows.to_parquet(channels[name] / "part.parquet")
    # The validate step puts the spec it used beside the training split, as here.
    (channels["train"] / "feature_spec.json").write_text(spec.to_json(), encoding="utf-8")
    environment = TrainingEnvironment(
        model_dir=tmp_path / "model",
        output_dir=tmp_path / "output",
        output_data_dir=tmp_path / "output" / "data",
        input_config_dir=tmp_path / "config",
        channels=channels,
        hyperparameters={"xgb_num_round": "50"},  # no feature_spec: the default would say "claims"
    )
    train.run(environment)
    manifest = Manifest.model_validate_json((tmp_path / "model" / "manifest.json").read_text())
    assert manifest.lineage.hyperparameters["feature_spec"] == "vehicle_fraud"
    saved = json.loads((tmp_path / "model" / "feature_spec.json").read_text())
    assert saved["name"] == "vehicle_fraud"
