"""The drift job scales out on SageMaker's own mechanisms (issue 13, point 7): a map over the hour's
capture objects (ShardedByS3Key) and a reduce started by SageMaker's own event of the map's
completion, through an EventBridge rule to the drift trigger. Checked against AWS's definitions:

- botocore's sagemaker model: CreateProcessingJob (ProcessingS3Input.S3DataDistributionType
  FullyReplicated | ShardedByS3Key, ProcessingClusterConfig.InstanceCount 1 to 100);
- the developer guide's "Events that Amazon SageMaker AI sends to Amazon EventBridge" (detail-type
  "SageMaker Processing Job State Change", source aws.sagemaker), matched here with moto's
  implementation of EventBridge's pattern matching.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import json
from typing import Any, Final

import pytest
from moto.events.models import EventPattern

from cdk.config import STAGES, stage_config
from shared.drift_jobs import (
    PROCESSING_JOB_STATE_CHANGE,
    DriftJobSettings,
    DriftWindow,
    drift_job_request,
    drift_reduce_request,
    job_name,
)
from shared.settings import DriftTriggerSettings
from step_functions.pipeline import JobResources
from tests.infra.conftest import Synthesized
from tests.infra.test_aws_conformance import Deployment, request_errors

TRIGGER: Final = "lambdas.drift_trigger.handler.lambda_handler"
KEY: Final = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-000000000000"
HOUR: Final = DriftWindow.hour_before(dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC))


def reduce_rule(deployment: Deployment) -> tuple[str, dict[str, Any]]:
    """The rule on processing jobs' state changes whose target is the drift trigger."""
    trigger = deployment.attribute(
        next(
            k
            for k, f in deployment.of_type("AWS::Lambda::Function").items()
            if f["Properties"].get("Handler") == TRIGGER
        ),
        "Arn",
    )
    [(logical, rule)] = [
        (k, r["Properties"])
        for k, r in deployment.of_type("AWS::Events::Rule").items()
        if r["Properties"].get("EventPattern", {}).get("detail-type") == [PROCESSING_JOB_STATE_CHANGE]
        and any(deployment.resolve(t["Arn"]) == trigger for t in r["Properties"].get("Targets", []))
    ]
    return logical, rule


def event(name: str, status: str = "Completed") -> Any:
    return {
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Processing Job State Change",
        "detail": {"ProcessingJobName": name, "ProcessingJobStatus": status},
    }


def sharded_settings(stage: str, count: int = 4) -> DriftJobSettings:
    return DriftJobSettings(
        image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/claims-risk:1",
        bucket="claims-risk-data",
        role_arn="arn:aws:iam::123456789012:role/claims-risk-sagemaker",
        endpoint="claims-risk",
        kms_key_arn=KEY,
        job_prefix=stage_config(stage).prefix,
        instance_count=count,
        lake={"CLAIMS_RISK_LAKE_ROOT": "s3://claims-risk-data/lake/"},
    )


def test_a_completed_map_job_and_nothing_else_invokes_the_drift_trigger(synthesized: Synthesized) -> None:
    deployment = Deployment(synthesized)
    logical, rule = reduce_rule(deployment)
    resolved = deployment.resolve(rule)
    assert resolved["State"] == "ENABLED"
    [target] = resolved["Targets"]
    trigger = deployment.logical_by_arn("AWS::Lambda::Function", target["Arn"])
    assert deployment.resources[trigger]["Properties"]["Handler"] == TRIGGER
    permissions = [
        deployment.resolve(p["Properties"]) for p in deployment.of_type("AWS::Lambda::Permission").values()
    ]
    assert any(
        p["Principal"] == "events.amazonaws.com" and p["SourceArn"] == deployment.attribute(logical, "Arn")
        for p in permissions
    )
    pattern = EventPattern.load(json.dumps(resolved["EventPattern"]))
    settings = sharded_settings(synthesized.stage)
    other = sharded_settings("prod" if synthesized.stage == "dev" else "dev")
    assert pattern.matches_event(event(job_name(settings, HOUR, "map")))
    for name, status in (
        (job_name(settings, HOUR, "map"), "Failed"),
        (job_name(settings, HOUR, "map"), "InProgress"),
        (job_name(settings, HOUR, "reduce"), "Completed"),  # a reduce never starts another
        (job_name(settings, HOUR), "Completed"),  # the one-instance job has no reduce
        (job_name(other, HOUR, "map"), "Completed"),  # another stage's map
    ):
        assert not pattern.matches_event(event(name, status)), (name, status)


def test_the_trigger_may_start_the_map_and_the_reduce_and_only_its_stages_drift_jobs(
    synthesized: Synthesized,
) -> None:
    deployment = Deployment(synthesized)
    statements = deployment.identity_statements(deployment.role_of_function(TRIGGER))
    [create] = [s for s in statements if "sagemaker:CreateProcessingJob" in s["Action"]]
    resources = create["Resource"] if isinstance(create["Resource"], list) else [create["Resource"]]
    settings = sharded_settings(synthesized.stage)
    for phase in (None, "map", "reduce"):
        arn = f"arn:aws:sagemaker:eu-west-1:123456789012:processing-job/{job_name(settings, HOUR, phase)}"
        assert any(fnmatch.fnmatchcase(arn, pattern) for pattern in resources), arn
    foreign = "arn:aws:sagemaker:eu-west-1:123456789012:processing-job/someone-elses-job"
    assert not any(fnmatch.fnmatchcase(foreign, pattern) for pattern in resources)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_may_shard_the_drift_job_and_both_phases_are_requests_sagemaker_takes(stage: str) -> None:
    config = dataclasses.replace(
        stage_config(stage), drift_job=JobResources("ml.m5.xlarge", instance_count=4, volume_gb=50)
    )
    environment = {
        "CLAIMS_RISK_IMAGE_URI": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/claims-risk:1",
        "CLAIMS_RISK_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/claims-risk-sagemaker",
        "CLAIMS_RISK_DATA_BUCKET": "claims-risk-data",
        "SAGEMAKER_ENDPOINT_NAME": "claims-risk",
        "CLAIMS_RISK_KMS_KEY_ARN": KEY,
        "CLAIMS_RISK_JOB_PREFIX": config.prefix,
        **config.drift_environment(),
        **config.lake_environment("claims-risk-data"),
    }
    settings = DriftTriggerSettings.model_validate(environment).drift_job()
    mapped, reduced = drift_job_request(settings, HOUR), drift_reduce_request(settings, HOUR)
    assert not request_errors("sagemaker", "CreateProcessingJob", mapped)
    assert not request_errors("sagemaker", "CreateProcessingJob", reduced)
    assert mapped["ProcessingResources"]["ClusterConfig"] == {
        "InstanceCount": 4,
        "InstanceType": "ml.m5.xlarge",
        "VolumeSizeInGB": 50,
        "VolumeKmsKeyId": KEY,
    }
    assert reduced["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1
    [capture] = mapped["ProcessingInputs"]
    assert capture["S3Input"]["S3DataDistributionType"] == "ShardedByS3Key"
    [partials] = reduced["ProcessingInputs"]
    [partials_out] = mapped["ProcessingOutputConfig"]["Outputs"]
    assert (
        partials["S3Input"]["S3Uri"] == partials_out["S3Output"]["S3Uri"] + "/"
    )  # the reduce reads the map's


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_on_one_instance_the_drift_job_is_one_job_reading_the_whole_hour(stage: str) -> None:
    config = stage_config(stage)
    assert config.drift_job.instance_count == 1  # README, Scaling out per stage: why one is enough
    settings = dataclasses.replace(sharded_settings(stage), instance_count=1)
    request = drift_job_request(settings, HOUR)
    [capture] = request["ProcessingInputs"]
    assert capture["S3Input"]["S3DataDistributionType"] == "FullyReplicated"
    assert request["ProcessingJobName"] == f"{config.prefix}-drift-2026120108"
    assert request["Environment"]["publish_cloudwatch_metrics"] == "Enabled"
    assert "CLAIMS_RISK_DRIFT_PHASE" not in request["Environment"]
    assert not request_errors("sagemaker", "CreateProcessingJob", request)


@pytest.mark.parametrize("count", [0, 101])
def test_a_count_sagemaker_would_refuse_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 100 instances"):
        dataclasses.replace(sharded_settings("dev"), instance_count=count)
