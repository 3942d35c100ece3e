"""The hourly drift trigger in AWS without Model Monitor (issue 11, point 10): EventBridge Scheduler
invokes the Lambda, which starts a plain processing job over the last full hour of captured traffic.
moto plays S3; SageMaker's side is botocore's Stubber, which checks every request against botocore's
own service model."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from lambdas.drift_trigger import handler
from shared.adapters.artifacts import S3ArtifactStore
from shared.adapters.processing_jobs import SageMakerProcessingLauncher
from shared.drift_jobs import DriftJobSettings, DriftWindow, drift_job_request, job_name
from tests.aws_fakes import FakeLambdaContext, offline_credentials

REGION: Final = "eu-west-1"
BUCKET: Final = "claims-risk-data-test"
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SETTINGS: Final = DriftJobSettings(
    image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/cdk-hnb659fds-container-assets:0123abcd",
    role_arn="arn:aws:iam::123456789012:role/claims-risk-sagemaker",
    bucket=BUCKET,
    endpoint="claims-risk",
    kms_key_arn="arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    job_prefix="claims-risk-dev",
)
SCHEDULED: Final = dt.datetime(2026, 12, 3, 14, 0, 12, tzinfo=dt.UTC)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    offline_credentials(monkeypatch, REGION)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client
    handler.wire()


def capture(s3: Any, hour: dt.datetime) -> str:
    """One file of captured traffic where SageMaker writes that hour's."""
    key = f"monitoring/capture/claims-risk/AllTraffic/{hour:%Y/%m/%d/%H}/12-00-000-abcd.jsonl"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"captureData": {}}\n')
    return key


def stubbed_sagemaker(expected: dict[str, Any] | None, *, duplicate: bool = False) -> tuple[Any, Stubber]:
    client = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(client)
    if duplicate:
        stubber.add_client_error(
            "create_processing_job",
            service_error_code="ValidationException",
            service_message=f"Job name must be unique within an AWS account and region, and a job with "
            f"this name already exists ({expected['ProcessingJobName'] if expected else ''})",
            expected_params=expected,
        )
    else:
        stubber.add_response(
            "create_processing_job",
            {"ProcessingJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:processing-job/x"},
            expected,
        )
    stubber.activate()
    return client, stubber


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = handler.lambda_handler(event, FakeLambdaContext("claims-risk-drift-trigger"))
    return result


def test_the_last_full_hour_of_capture_starts_one_drift_job_under_model_monitors_contract(s3: Any) -> None:
    previous_hour = dt.datetime(2026, 12, 3, 13, tzinfo=dt.UTC)
    capture(s3, previous_hour)
    capture(s3, SCHEDULED)  # the hour still being written is not this run's
    expected = drift_job_request(SETTINGS, DriftWindow.hour_before(SCHEDULED))
    client, stubber = stubbed_sagemaker(expected)  # the Stubber validates against botocore's model
    handler.wire(SETTINGS, S3ArtifactStore(), SageMakerProcessingLauncher(client))

    result = invoke({"scheduled_time": SCHEDULED.isoformat().replace("+00:00", "Z")})

    stubber.assert_no_pending_responses()
    assert result["started"].endswith("processing-job/x")
    assert result["hour"] == "2026-12-03T13:00Z"
    source = expected["ProcessingInputs"][0]["S3Input"]["S3Uri"]
    assert source == f"s3://{BUCKET}/monitoring/capture/claims-risk/AllTraffic/2026/12/03/13/"
    environment = expected["Environment"]
    assert environment["start_time"] == "2026-12-03T13:00:00Z"
    assert environment["end_time"] == "2026-12-03T14:00:00Z"
    assert environment["publish_cloudwatch_metrics"] == "Enabled"
    assert {"dataset_source", "output_path"} <= set(environment)
    assert expected["AppSpecification"]["ContainerEntrypoint"] == ["job", "sagemaker_jobs.monitoring.drift"]


def test_an_hour_without_captured_traffic_starts_nothing_and_says_why(s3: Any) -> None:
    client, stubber = stubbed_sagemaker(None)
    handler.wire(SETTINGS, S3ArtifactStore(), SageMakerProcessingLauncher(client))
    result = invoke({"scheduled_time": "2026-12-03T14:00:12Z"})
    assert result["started"] is None
    assert "nothing captured under" in result["reason"]
    with pytest.raises(AssertionError):  # no CreateProcessingJob was made
        stubber.assert_no_pending_responses()


def test_a_second_trigger_of_the_same_hour_leaves_the_first_job_standing(s3: Any) -> None:
    capture(s3, dt.datetime(2026, 12, 3, 13, tzinfo=dt.UTC))
    expected = drift_job_request(SETTINGS, DriftWindow.hour_before(SCHEDULED))
    client, _ = stubbed_sagemaker(expected, duplicate=True)
    handler.wire(SETTINGS, S3ArtifactStore(), SageMakerProcessingLauncher(client))
    assert invoke({"scheduled_time": "2026-12-03T14:00:12Z"})["started"] == expected["ProcessingJobName"]


def test_job_names_are_one_per_hour_and_valid_for_sagemaker() -> None:
    long_prefix = DriftJobSettings(**{**SETTINGS.__dict__, "job_prefix": "claims-risk-" + "x" * 60})
    for settings in (SETTINGS, long_prefix):
        names = {
            job_name(settings, DriftWindow.hour_before(SCHEDULED + dt.timedelta(minutes=m))) for m in (0, 59)
        }
        assert len(names) == 1
        (name,) = names
        assert len(name) <= 63 and name[0].isalnum() and all(c.isalnum() or c == "-" for c in name)


def test_in_lambda_a_missing_setting_fails_the_cold_start_by_name() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMS_RISK_")}
    env.update(AWS_LAMBDA_FUNCTION_NAME="claims-risk-drift-trigger", SAGEMAKER_ENDPOINT_NAME="claims-risk")
    env["AWS_DEFAULT_REGION"] = REGION
    result = subprocess.run(
        [sys.executable, "-c", "import lambdas.drift_trigger.handler"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "CLAIMS_RISK_IMAGE_URI" in result.stderr and "CLAIMS_RISK_DATA_BUCKET" in result.stderr
