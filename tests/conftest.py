"""Fixtures shared by every test layer: the product brief's contract and a model trained once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from local.pipeline_runner import PipelineRun

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
CONTRACT_FILE = SHARED_DIR / "contract" / "seed_examples.json"
FOREIGN_DATA_FILE = SHARED_DIR / "data" / "insurance_claims.csv"

# Tests never reach AWS: no X-Ray daemon, no metric agent, and fake credentials for boto3.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture(scope="session")
def contract() -> dict[str, Any]:
    if not CONTRACT_FILE.is_file():
        pytest.skip(f"the product brief's contract is not beside the repo ({CONTRACT_FILE})")
    loaded: dict[str, Any] = json.loads(CONTRACT_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="session")
def predict_requests(contract: dict[str, Any]) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = contract["predict"]["requests"]
    return requests


@pytest.fixture(scope="session")
def response_fields(contract: dict[str, Any]) -> set[str]:
    return set(contract["predict"]["response_example"])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """A model trained once by the real pipeline (every step, no search) on 12k generated claims."""
    from local.pipeline_runner import run_pipeline
    from shared.ml.synthetic import generate_claims, write_claims
    from step_functions.pipeline import PipelineInputs
    from tests.factories import local_test_services

    root = tmp_path_factory.mktemp("trained")
    truth = root / "truth" / "claims.parquet"
    data = write_claims(generate_claims(12_000, seed=7), root / "raw" / "claims.csv", truth=truth)
    inputs = PipelineInputs(tuning_trials=0, cv_folds=0)
    return run_pipeline(data, root / "run", inputs, services=local_test_services(root / "home"), truth=truth)


@pytest.fixture(scope="session")
def model_dir(trained_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.ml.model import unpack_model

    return unpack_model(trained_run.model_tarball, tmp_path_factory.mktemp("model"))
