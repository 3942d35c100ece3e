"""The training job on 100k generated claims: wall time, peak memory, and test ROC-AUC against the oracle."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from benchmarks.harness import Figure
from local.jobs import run_processing, run_training
from shared.ml.model import RiskModel, unpack_model
from shared.ml.synthetic import generate_claims, write_claims
from step_functions.pipeline import step

NAME = "training"
ROWS = 100_000


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_claims(
            generate_claims(ROWS, seed=11), root / "raw" / "claims.csv", truth=root / "truth.parquet"
        )
        processed = run_processing(step("validate"), {"raw": data.parent}, root / "validate")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        trained = run_training(
            step("train"),
            {k: processed.outputs[k] for k in ("train", "validation", "test")},
            {},
            root / "train",
        )
        seconds = time.perf_counter() - started
        peak_mb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
        model = RiskModel.load(unpack_model(trained.outputs["model"], root / "model"))
        test = pd.read_parquet(processed.outputs["test"] / "test.parquet").merge(
            pd.read_parquet(root / "truth.parquet"), on="claim_id"
        )
        auc = roc_auc_score(test["is_high_risk"], model.scores(test))
        oracle = roc_auc_score(test["is_high_risk"], test["true_probability"])
    return [
        Figure(
            NAME,
            "training job (xgboost)",
            "wall time, 100k claims",
            seconds,
            "s",
            notes="includes process start and artifact packing",
        ),
        Figure(
            NAME,
            "training job (xgboost)",
            "peak memory",
            peak_mb,
            "MB",
            notes="max RSS of the job processes (processing or training, whichever is larger)",
        ),
        Figure(NAME, "champion", "test ROC-AUC", auc, ""),
        Figure(NAME, "oracle (true probability)", "test ROC-AUC", oracle, ""),
        Figure(NAME, "champion", "gap to oracle", oracle - auc, "", "<= 0.02", oracle - auc <= 0.02),
    ]
