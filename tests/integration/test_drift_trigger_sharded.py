"""The drift trigger of a stage whose drift job runs on several instances: the schedule starts the
map (its capture input ShardedByS3Key), and SageMaker's event of the map's completion starts the
reduce. Every request goes through botocore's Stubber, which checks it against the service model."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Final

import pytest

from lambdas.drift_trigger import handler
from shared.adapters.artifacts import S3ArtifactStore
from shared.adapters.processing_jobs import SageMakerProcessingLauncher
from shared.drift_jobs import (
    PARTIALS_VARIABLE,
    PHASE_VARIABLE,
    DriftWindow,
    drift_job_request,
    drift_reduce_request,
    job_name,
    map_job_prefix,
    map_job_window,
)
from tests.integration.test_drift_trigger import (
    BUCKET,
    SCHEDULED,
    SETTINGS,
    capture,
    invoke,
    s3,
    stubbed_sagemaker,
)

__all__ = ["s3"]  # the fixture, shared with the one-instance tests
SHARDED: Final = dataclasses.replace(SETTINGS, instance_count=3)
HOUR: Final = DriftWindow.hour_before(SCHEDULED)


def state_change(name: str, status: str = "Completed") -> dict[str, Any]:
    """SageMaker's event for a processing job's new status, as EventBridge delivers it."""
    return {
        "version": "0",
        "id": "4d7b8a5e-0000-4000-8000-000000000000",
        "detail-type": "SageMaker Processing Job State Change",
        "source": "aws.sagemaker",
        "account": "123456789012",
        "time": "2026-12-03T14:07:31Z",
        "region": "eu-west-1",
        "resources": [f"arn:aws:sagemaker:eu-west-1:123456789012:processing-job/{name}"],
        "detail": {
            "ProcessingJobName": name,
            "ProcessingJobArn": f"arn:aws:sagemaker:eu-west-1:123456789012:processing-job/{name}",
            "ProcessingJobStatus": status,
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": 3, "InstanceType": "ml.m5.large"}},
        },
    }


def test_on_several_instances_the_schedule_starts_a_map_over_shards_of_the_hour(s3: Any) -> None:
    capture(s3, dt.datetime(2026, 12, 3, 13, tzinfo=dt.UTC))
    expected = drift_job_request(SHARDED, HOUR)
    client, stubber = stubbed_sagemaker(expected)
    handler.wire(SHARDED, S3ArtifactStore(), SageMakerProcessingLauncher(client))

    result = invoke({"scheduled_time": "2026-12-03T14:00:12Z"})

    stubber.assert_no_pending_responses()
    assert result["hour"] == "2026-12-03T13:00Z"
    assert expected["ProcessingJobName"] == "claims-risk-dev-drift-map-2026120313"
    assert expected["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 3
    [source] = expected["ProcessingInputs"]
    assert source["S3Input"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert source["S3Input"]["LocalPath"].endswith("/claims-risk/AllTraffic/2026/12/03/13")
    [output] = expected["ProcessingOutputConfig"]["Outputs"]
    assert (
        output["S3Output"]["S3Uri"]
        == f"s3://{BUCKET}/monitoring/reports/drift/claims-risk/2026/12/03/13/partials"
    )
    environment = expected["Environment"]
    assert environment[PHASE_VARIABLE] == "map"
    assert environment["publish_cloudwatch_metrics"] == "Disabled"  # the reduce publishes, once


def test_a_completed_map_starts_the_reduce_where_the_one_instance_job_reports(s3: Any) -> None:
    expected = drift_reduce_request(SHARDED, HOUR)
    client, stubber = stubbed_sagemaker(expected)
    handler.wire(SHARDED, S3ArtifactStore(), SageMakerProcessingLauncher(client))

    result = invoke(state_change("claims-risk-dev-drift-map-2026120313"))

    stubber.assert_no_pending_responses()
    assert result["reduce"] == expected["ProcessingJobName"] == "claims-risk-dev-drift-reduce-2026120313"
    assert expected["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1
    [partials] = expected["ProcessingInputs"]
    assert (
        partials["S3Input"]["S3Uri"]
        == f"s3://{BUCKET}/monitoring/reports/drift/claims-risk/2026/12/03/13/partials/"
    )
    assert partials["S3Input"]["S3DataDistributionType"] == "FullyReplicated"  # every partial
    one_instance = drift_job_request(SETTINGS, HOUR)["ProcessingOutputConfig"]
    assert expected["ProcessingOutputConfig"] == one_instance  # the report's place does not move
    environment = expected["Environment"]
    assert environment[PHASE_VARIABLE] == "reduce"
    assert environment[PARTIALS_VARIABLE] == partials["S3Input"]["LocalPath"]
    assert environment["publish_cloudwatch_metrics"] == "Enabled"
    assert environment["start_time"] == "2026-12-03T13:00:00Z"
    assert {"CLAIMS_RISK_MODEL_URI", "dataset_source"}.isdisjoint(environment)


@pytest.mark.parametrize(
    "event",
    [
        state_change("claims-risk-dev-drift-map-2026120313", "Failed"),
        state_change("claims-risk-dev-drift-map-2026120313", "Stopped"),
        state_change("claims-risk-dev-drift-reduce-2026120313"),
        state_change("claims-risk-dev-drift-2026120313"),  # a one-instance job
        state_change("claims-risk-prod-drift-map-2026120313"),  # another stage's
        state_change("claims-risk-dev-drift-map-20261203"),
    ],
)
def test_anything_but_a_completed_map_of_this_stage_starts_nothing(s3: Any, event: dict[str, Any]) -> None:
    client, stubber = stubbed_sagemaker(None)
    handler.wire(SHARDED, S3ArtifactStore(), SageMakerProcessingLauncher(client))
    result = invoke(event)
    assert result["started"] is None and "is not a completed map job" in result["reason"]
    with pytest.raises(AssertionError):  # no CreateProcessingJob was made
        stubber.assert_no_pending_responses()


def test_a_repeated_event_leaves_the_first_reduce_standing(s3: Any) -> None:
    expected = drift_reduce_request(SHARDED, HOUR)
    client, _ = stubbed_sagemaker(expected, duplicate=True)
    handler.wire(SHARDED, S3ArtifactStore(), SageMakerProcessingLauncher(client))
    assert invoke(state_change(job_name(SHARDED, HOUR, "map")))["started"] == expected["ProcessingJobName"]


def test_job_names_of_each_phase_are_valid_and_the_map_names_its_hour() -> None:
    long_prefix = dataclasses.replace(SHARDED, job_prefix="claims-risk-" + "x" * 60)
    for settings in (SHARDED, long_prefix):
        names = {job_name(settings, HOUR, phase) for phase in (None, "map", "reduce")}
        assert len(names) == 3
        for name in names:
            assert len(name) <= 63 and name[0].isalnum() and all(c.isalnum() or c == "-" for c in name)
        map_name = job_name(settings, HOUR, "map")
        assert map_name.startswith(map_job_prefix(settings.job_prefix))
        assert map_job_window(settings, map_name) == HOUR
        assert map_job_window(settings, job_name(settings, HOUR, "reduce")) is None
    with pytest.raises(ValueError, match="has no reduce"):
        drift_reduce_request(SETTINGS, HOUR)
