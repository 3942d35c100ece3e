"""The state machine's Lambda tasks, through the handler, against moto S3 and moto SageMaker."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto import mock_aws

from lambdas.pipeline_tasks import handler
from tests.aws_fakes import FakeLambdaContext, offline_credentials
from tests.unit.test_challengers import REPORT
from tests.unit.test_gates import GOOD_QUALITY, evaluation

BUCKET = "claims-risk-data"
RUN = f"s3://{BUCKET}/pipeline/runs/abc123"


def Context() -> FakeLambdaContext:  # noqa: N802 (reads like the class it stands for)
    return FakeLambdaContext("claims-risk-pipeline-tasks")


@contextmanager
def tasks_in_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's AWS with the run bucket, and the handler's adapters made afresh inside it; the S3 client."""
    offline_credentials(monkeypatch)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    with mock_aws():
        for cached in (handler.artifact_store, handler.model_packages, handler.mlflow_registry):
            cached.cache_clear()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield s3
        for cached in (handler.artifact_store, handler.model_packages, handler.mlflow_registry):
            cached.cache_clear()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with tasks_in_moto(monkeypatch) as s3:
        yield s3


def put_json(s3: Any, key: str, document: dict[str, Any]) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(document).encode())


def reports(s3: Any, **test_changes: float) -> None:
    put_json(s3, "pipeline/runs/abc123/quality/data_quality.json", GOOD_QUALITY)
    put_json(s3, "pipeline/runs/abc123/evaluation/evaluation.json", evaluation(**test_changes))
    s3.put_object(Bucket=BUCKET, Key="pipeline/runs/abc123/evaluation/report.html", Body=REPORT.encode())


def gates_event() -> dict[str, Any]:
    return {
        "action": "gates",
        "quality": f"{RUN}/quality/data_quality.json",
        "evaluation": f"{RUN}/evaluation/evaluation.json",
        "gates": {},
    }


def test_the_gates_task_passes_a_good_challenger_and_says_why(aws: Any) -> None:
    reports(aws)
    answer = handler.lambda_handler(gates_event(), Context())
    assert answer["passed"] is True and answer["summary"] == "every gate passed"
    assert [g["gate"] for g in answer["gates"]] == ["data_quality", "metric_floors", "champion", "fairness"]
    # The decision and the final report are in the run folder for the register step and for people.
    gates = json.loads(
        aws.get_object(Bucket=BUCKET, Key="pipeline/runs/abc123/gates/gates.json")["Body"].read()
    )
    assert gates["passed"] is True and answer["report"] == f"{RUN}/gates/report.html"
    report = aws.get_object(Bucket=BUCKET, Key="pipeline/runs/abc123/report.html")["Body"].read().decode()
    assert 'id="gates-table"' in report and "Promotion gates: passed" in report


def test_the_gates_task_rejects_a_weak_challenger_naming_the_shortfall(aws: Any) -> None:
    reports(aws, roc_auc=0.6)
    answer = handler.lambda_handler(gates_event(), Context())
    assert answer["passed"] is False and "roc_auc 0.600 < 0.800" in answer["summary"]


def test_a_missing_report_fails_the_task_with_its_uri(aws: Any) -> None:
    with pytest.raises(FileNotFoundError, match=r"data_quality\.json"):
        handler.lambda_handler(gates_event(), Context())


def test_an_unknown_action_is_refused_before_anything_is_read(aws: Any) -> None:
    with pytest.raises(ValueError, match="action"):
        handler.lambda_handler({"action": "delete_everything"}, Context())


def register_event() -> dict[str, Any]:
    return {
        **gates_event(),
        "action": "register",
        "model": f"{RUN}/model/job/output/model.tar.gz",
        "report": f"{RUN}/evaluation/report.html",
        "image": "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:3.0-5",
        "model_package_group": "claims-risk-dev-models",
        "run": "exec-1",
    }


def test_register_records_an_approved_model_package_with_metrics_and_lineage(aws: Any) -> None:
    reports(aws)
    handler.lambda_handler(gates_event(), Context())
    answer = handler.lambda_handler(register_event(), Context())
    assert answer["model_version"] == "v2" and answer["mlflow_version"] is None
    package = boto3.client("sagemaker").describe_model_package(ModelPackageName=answer["model_package_arn"])
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["ModelPackageGroupName"] == "claims-risk-dev-models"
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["ModelDataUrl"].endswith("model.tar.gz") and "sagemaker-xgboost" in container["Image"]
    metadata = package["CustomerMetadataProperties"]
    assert metadata["data_sha256"] == "ab" * 32 and metadata["pipeline_run"] == "exec-1"
    assert float(metadata["metric_test_roc_auc"]) == pytest.approx(0.9)


def test_register_refuses_a_challenger_that_fails_the_gates(aws: Any) -> None:
    reports(aws, recall=0.1)
    assert handler.lambda_handler(gates_event(), Context())["passed"] is False
    with pytest.raises(ValueError, match="refusing to register"):
        handler.lambda_handler(register_event(), Context())
    assert boto3.client("sagemaker").list_model_packages()["ModelPackageSummaryList"] == []


def test_register_without_the_gates_decision_fails_naming_it(aws: Any) -> None:
    reports(aws)
    with pytest.raises(FileNotFoundError, match=r"gates/gates\.json"):
        handler.lambda_handler(register_event(), Context())


def test_publish_card_copies_the_serving_models_manifest_for_the_api_and_keeps_it_as_champion(
    aws: Any,
) -> None:
    manifest = {"model_version": "v2", "family": "xgboost", "threshold": 0.2}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in (("v2/model.ubj", b"x" * 10), ("v2/manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    aws.put_object(Bucket=BUCKET, Key="pipeline/runs/abc123/model/model.tar.gz", Body=buffer.getvalue())
    answer = handler.lambda_handler(
        {
            "action": "publish_card",
            "model": f"{RUN}/model/model.tar.gz",
            "card": f"s3://{BUCKET}/models/current/manifest.json",
            "champion": f"s3://{BUCKET}/models/current/model.tar.gz",
        },
        Context(),
    )
    assert answer["model_version"] == "v2"
    card = json.loads(aws.get_object(Bucket=BUCKET, Key="models/current/manifest.json")["Body"].read())
    assert card == manifest
    # The next run's challenger is judged against this model.
    champion = aws.get_object(Bucket=BUCKET, Key="models/current/model.tar.gz")["Body"].read()
    assert champion == buffer.getvalue()


PREPARE_STATE_FIELDS = (
    "inputs",
    "static_hyperparameters",
    "trial_hyperparameters",
    "hyperparameter_overrides",
)


def prepare_event(execution_input: dict[str, Any]) -> dict[str, Any]:
    """The state machine's first state: its Payload with ``$$.Execution.Input`` filled in."""
    from step_functions.state_machine import PREPARE_STATE, DeploymentGuardrails, definition

    guardrails = DeploymentGuardrails(10, 300, 600, ("a",), "ml.m5.large", 1, 20)
    payload = definition(guardrails)["States"][PREPARE_STATE]["Parameters"]["Payload"]
    assert payload == {"action": "prepare", "input.$": "$$.Execution.Input"}
    return {"action": payload["action"], "input": execution_input}


def test_the_prepare_task_completes_the_runs_input_as_the_state_machine_reads_it() -> None:
    from step_functions.pipeline import prepare_run

    for execution_input in ({}, {"tuning_trials": 4, "hyperparameters": {"model_family": "xgboost"}}):
        answer = handler.lambda_handler(prepare_event(execution_input), Context())
        assert answer == prepare_run(execution_input)
        # Every field the state's ResultSelector picks, and a JSON document as Lambda returns it.
        assert {*PREPARE_STATE_FIELDS, "tuning"} <= set(answer)
        assert json.loads(json.dumps(answer)) == answer
    assert answer["inputs"]["tuning_trials"] == 4 and answer["tuning"]["max_parallel"] == 2
    # A console start's {} arrives as such, and an event without "input" means the same.
    assert handler.lambda_handler({"action": "prepare"}, Context()) == prepare_run({})


@pytest.mark.parametrize(
    ("execution_input", "named"),
    [
        ({"tuning_trials": -1}, "tuning_trials"),
        ({"tuning_trails": 4}, "tuning_trails"),
        ({"hyperparameters": {"max_depht": 4}}, "max_depht"),
    ],
)
def test_a_bad_run_input_fails_the_prepare_task_naming_the_field(
    execution_input: dict[str, Any], named: str
) -> None:
    """Before any job is paid for; the state's Catch turns the error into an on-call notification."""
    with pytest.raises(ValueError, match=named):
        handler.lambda_handler(prepare_event(execution_input), Context())


def test_the_prepare_task_loads_no_heavy_library() -> None:
    """The pipeline-tasks function's bundle carries no numpy or pandas: prepare_run must not need them."""
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import sys; from step_functions.pipeline import prepare_run; prepare_run({}); "
        "print(sorted(m for m in ('numpy', 'pandas', 'sklearn', 'xgboost') if m in sys.modules))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert answer.stdout.strip() == "[]"
