"""The training script under SageMaker's training contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from local.jobs import JobFailed, run_processing, run_training
from local.pipeline_runner import PipelineRun
from sagemaker_jobs.inference import inference
from shared.metric_lines import parse_metrics
from shared.ml.model import pack_model_dir, unpack_model
from shared.ml.synthetic import generate_claims, write_claims
from step_functions.pipeline import TRAINING_METRIC_DEFINITIONS, TRAINING_METRICS, step

REPO_ROOT = Path(__file__).resolve().parents[2]


def sagemaker_tree(root: Path, splits: dict[str, Path], hyperparameters: dict[str, str]) -> dict[str, str]:
    """The /opt/ml layout and the environment SageMaker gives a training container."""
    opt_ml = root / "opt" / "ml"
    for name, source in splits.items():
        (opt_ml / "input" / "data" / name).mkdir(parents=True)
        for f in source.iterdir():
            (opt_ml / "input" / "data" / name / f.name).write_bytes(f.read_bytes())
    (opt_ml / "input" / "config").mkdir(parents=True)
    (opt_ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (opt_ml / "model").mkdir()
    (opt_ml / "output" / "data").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(
        SM_MODEL_DIR=str(opt_ml / "model"),
        SM_OUTPUT_DIR=str(opt_ml / "output"),
        SM_OUTPUT_DATA_DIR=str(opt_ml / "output" / "data"),
        SM_INPUT_CONFIG_DIR=str(opt_ml / "input" / "config"),
        SM_INPUT_DATA_DIR=str(opt_ml / "input" / "data"),
        SM_CHANNELS=json.dumps(sorted(splits)),
        **{f"SM_CHANNEL_{name.upper()}": str(opt_ml / "input" / "data" / name) for name in splits},
    )
    return env


def run_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagemaker_jobs.training.train"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def splits(trained_run: PipelineRun) -> dict[str, Path]:
    return {name: trained_run.artifacts[name] for name in ("train", "validation", "test")}


def test_the_script_writes_a_model_that_the_inference_script_loads(
    tmp_path: Path, splits: dict[str, Path]
) -> None:
    env = sagemaker_tree(tmp_path, splits, {"xgb_max_depth": "3", "xgb_num_round": "80"})
    done = run_script(env)
    assert done.returncode == 0, done.stdout + done.stderr
    # SageMaker packs SM_MODEL_DIR into model.tar.gz; do the same and load it as the endpoint would.
    tarball = pack_model_dir(env["SM_MODEL_DIR"], tmp_path / "model.tar.gz")
    with tarfile.open(tarball) as archive:
        assert {
            "manifest.json",
            "encoder.json",
            "feature_spec.json",
            "baseline_statistics.json",
            "model.ubj",
        } <= set(archive.getnames())
    model = inference.model_fn(str(unpack_model(tarball, tmp_path / "unpacked")))
    assert model.manifest.lineage.hyperparameters["xgb_max_depth"] == 3
    assert model.manifest.lineage.data_sha256 and model.manifest.family == "xgboost"
    assert 0 < model.manifest.threshold < 1
    assert set(model.baseline["features"]) >= {"claim_amount", "amount_to_sum_insured", "customer_age"}


def test_the_tuning_regexes_parse_the_real_training_log(trained_run: PipelineRun) -> None:
    log = trained_run.results["train"].log
    parsed = parse_metrics(log, list(TRAINING_METRICS))
    assert set(parsed) == set(TRAINING_METRICS), log[-2000:]
    metrics = json.loads((trained_run.run_dir / "train" / "metrics.json").read_text())
    for name, value in parsed.items():
        channel, key = name.split(":")
        assert value == pytest.approx(metrics[channel][key], rel=1e-12)
    assert all(d["Regex"] for d in TRAINING_METRIC_DEFINITIONS)


@pytest.mark.parametrize(
    ("hyperparameters", "drop", "reason"),
    [
        ({"xgb_max_depth": "99"}, None, "xgb_max_depth"),
        ({"no_such_knob": "1"}, None, "unknown hyperparameters"),
        ({}, "validation", "channel 'validation' is missing"),
    ],
)
def test_a_failure_leaves_its_reason_where_sagemaker_reads_it(
    tmp_path: Path, splits: dict[str, Path], hyperparameters: dict[str, str], drop: str | None, reason: str
) -> None:
    chosen = {k: v for k, v in splits.items() if k != drop}
    env = sagemaker_tree(tmp_path, chosen, hyperparameters)
    done = run_script(env)
    assert done.returncode == 1
    assert reason in (Path(env["SM_OUTPUT_DIR"]) / "failure").read_text()
    assert not list(Path(env["SM_MODEL_DIR"]).iterdir())


def test_the_local_runner_reports_the_failure_reason(tmp_path: Path, splits: dict[str, Path]) -> None:
    with pytest.raises(JobFailed, match="xgb_eta"):
        run_training(step("train"), splits, {"xgb_eta": "-1"}, tmp_path / "out")


@pytest.mark.slow
def test_the_model_comes_within_0_02_of_the_oracle_auc(tmp_path: Path) -> None:
    data = write_claims(
        generate_claims(40_000, seed=21), tmp_path / "raw" / "claims.csv", truth=tmp_path / "truth.parquet"
    )
    processed = run_processing(step("validate"), {"raw": data.parent}, tmp_path / "validate")
    channels = {k: processed.outputs[k] for k in ("train", "validation", "test")}
    trained = run_training(step("train"), channels, {}, tmp_path / "train")
    model = inference.model_fn(str(unpack_model(trained.outputs["model"], tmp_path / "model")))
    test = pd.read_parquet(processed.outputs["test"] / "test.parquet").merge(
        pd.read_parquet(tmp_path / "truth.parquet"), on="claim_id"
    )
    model_auc = roc_auc_score(test["is_high_risk"], model.scores(test))
    oracle_auc = roc_auc_score(test["is_high_risk"], test["true_probability"])
    assert oracle_auc - model_auc <= 0.02, (model_auc, oracle_auc)
