"""In AWS, late outcomes are judged: a labels file under outcomes/incoming/ starts the quality job, whose
figures feed the model-quality alarm. The synthesized stack checked against AWS's own definitions, in
the style of test_batch_lake_stack.py.

- The rules match AWS's examples (tests/unit/events/, with this stack's names): S3's "Object created"
  event as S3 sends it to EventBridge ("EventBridge event message structure",
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html) and SageMaker's processing job
  state change ("Events that Amazon SageMaker AI sends to Amazon EventBridge",
  https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html),
  evaluated by moto's implementation of EventBridge's pattern matching.
- The trigger runs for real, with the template's environment, against moto: its CreateProcessingJob
  is validated against botocore's sagemaker model and allowed by its role.
- The quality job's module runs for real against moto (S3, CloudWatch; its lake a local folder, whose
  Athena calls test_lake_stack.py covers): every call it makes is recorded, validated against
  botocore (PutMetricData included) and allowed by the role it runs as, the SageMaker role, whose
  PutMetricData is limited by the cloudwatch:namespace condition key (the Service Authorization
  Reference: CloudWatch).
- The model-quality alarm watches exactly what the job publishes, and pages on-call like the others;
  a failed quality job reaches on-call with its exit message.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Final

import pytest
from moto.events.models import EventPattern

from cdk.config import stage_config
from sagemaker_jobs.monitoring import quality as quality_job
from shared.alarms import QUALITY_DROP_METRIC, QUALITY_NAMESPACE, alarm
from shared.capture import CapturePolicy, CaptureWriter
from shared.lake_writers import ingest_capture
from shared.quality_jobs import OUTCOMES_PREFIX, QUALITY_JOB_MODULE, VERSION_ENV
from shared.settings import QualityJobSettings
from tests.aws_fakes import FakeLambdaContext
from tests.infra.conftest import Synthesized
from tests.infra.test_aws_conformance import (
    ACCOUNT,
    REGION,
    Deployment,
    Need,
    allows,
    call_needs,
    lambda_calls_problems,
    missing,
    recorded_aws,
    request_errors,
    role_of_request,
)
from tests.infra.test_batch_lake_stack import rule_to
from tests.infra.test_lake_stack import bucket_of, environment_errors, sagemaker_role
from tests.integration.test_model_quality import DAY1, DAY2, scored_day

TRIGGER: Final = "lambdas.quality_trigger.handler.lambda_handler"
EVENTS: Final = Path(__file__).resolve().parents[1] / "unit" / "events"
KEY: Final = f"{OUTCOMES_PREFIX}2026-11/investigations closed.csv"  # the documented event's, decoded
CLOUDWATCH_IAM: Final = (
    "https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html"
)
MANIFEST: Final = {
    "model_version": "m1",
    "metrics": {"test": {"precision": 0.8, "recall": 0.9, "roc_auc": 0.9}},
}


@pytest.fixture(scope="module")
def deployments(synthesized_stages: dict[str, Synthesized]) -> dict[str, Deployment]:
    return {stage: Deployment(s) for stage, s in synthesized_stages.items()}


def documented(name: str) -> Any:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def created_event(bucket: str, key: str | None = None) -> Any:
    """The user guide's "Object created" example, for a labels file dropped in ``bucket``."""
    event = documented("s3_object_created_eventbridge.json")
    event["detail"]["bucket"]["name"] = bucket
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    if key is not None:
        event["detail"]["object"]["key"] = key
    return event


def failed_event(stage: str, name: str | None = None, status: str = "Failed") -> Any:
    event = documented("sagemaker_processing_job_state_change_quality.json")
    text = json.dumps(event).replace("claims-risk-dev-quality-", f"{stage_config(stage).prefix}-quality-")
    event = json.loads(text)
    if name is not None:
        event["detail"]["ProcessingJobName"] = name
    event["detail"]["ProcessingJobStatus"] = status
    return event


def alarm_named(deployment: Deployment, name: str) -> dict[str, Any]:
    [found] = [
        deployment.resolve(a["Properties"])
        for a in deployment.of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["AlarmName"] == name
    ]
    return dict(found)


# -- the events ----------------------------------------------------------------------------------------


def test_a_labels_file_in_this_stacks_bucket_and_nothing_else_invokes_the_trigger(
    deployments: dict[str, Deployment],
) -> None:
    for stage, deployment in deployments.items():
        bucket = bucket_of(deployment)
        # The data bucket sends its events to EventBridge (the batch trigger keeps its notification).
        [(_, notifications)] = deployment.of_type("Custom::S3BucketNotifications").items()
        assert deployment.resolve(notifications["Properties"]["BucketName"]) == bucket
        assert notifications["Properties"]["NotificationConfiguration"]["EventBridgeConfiguration"] == {}
        [(logical, rule)] = [
            (k, deployment.resolve(r["Properties"]))
            for k, r in deployment.of_type("AWS::Events::Rule").items()
            if r["Properties"].get("EventPattern", {}).get("source") == ["aws.s3"]
        ]
        [target] = rule["Targets"]
        trigger = deployment.logical_by_arn("AWS::Lambda::Function", target["Arn"])
        assert deployment.resources[trigger]["Properties"]["Handler"] == TRIGGER
        assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2
        permissions = [
            deployment.resolve(p["Properties"])
            for p in deployment.of_type("AWS::Lambda::Permission").values()
        ]
        assert any(
            p["Principal"] == "events.amazonaws.com"
            and p["SourceArn"] == deployment.attribute(logical, "Arn")
            for p in permissions
        ), stage
        pattern = EventPattern.load(json.dumps(rule["EventPattern"]))
        assert pattern.matches_event(created_event(bucket))
        assert not pattern.matches_event(created_event("another-stages-data"))
        for key in (
            "incoming/2026/12/claims.csv",
            "outcomes/incoming-old/x.csv",
            "scored/outcomes/incoming/x",
        ):
            assert not pattern.matches_event(created_event(bucket, key)), (stage, key)
        deleted = created_event(bucket)
        deleted["detail-type"] = "Object Deleted"
        assert not pattern.matches_event(deleted)


def test_a_failed_or_stopped_quality_job_reaches_on_call_with_its_reason(
    deployments: dict[str, Deployment],
) -> None:
    for stage, deployment in deployments.items():
        prefix = stage_config(stage).prefix
        logical, rule = rule_to(
            deployment, "SageMaker Processing Job State Change", ["Failed", "Stopped"], f"{prefix}-quality-"
        )
        [topic] = deployment.of_type("AWS::SNS::Topic")
        [target] = rule["Targets"]
        assert target["Arn"] == deployment.ref(topic)
        template = target["InputTransformer"]["InputTemplate"]
        for field in ("ProcessingJobName", "ProcessingJobStatus", "ExitMessage", "FailureReason"):
            assert f"<detail-{field}>" in template, field
        assert OUTCOMES_PREFIX in template and "upload it again" in template  # what to do about it
        pattern = EventPattern.load(json.dumps(rule["EventPattern"]))
        assert pattern.matches_event(failed_event(stage))
        assert pattern.matches_event(failed_event(stage, status="Stopped"))
        assert not pattern.matches_event(failed_event(stage, status="Completed"))
        for other in (
            "claims-lake-claims-0a1b",
            f"{prefix}-drift-2026120109",
            "claims-risk-qa-quality-x-0a1b",
        ):
            assert not pattern.matches_event(failed_event(stage, other)), (stage, other)
        failed = alarm_named(deployment, f"{prefix}-quality-job-failed")
        assert failed["Dimensions"] == [{"Name": "RuleName", "Value": deployment.ref(logical)}]
        assert failed["AlarmActions"] == failed["OKActions"] == [deployment.ref(topic)]


# -- the trigger's request -----------------------------------------------------------------------------


def run_trigger(deployment: Deployment, event: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The trigger with the template's environment, against moto: its recorded AWS calls."""
    from lambdas.quality_trigger import handler

    with recorded_aws() as (patch, recorder, _):
        for name, value in deployment.function_environment(TRIGGER).items():
            patch.setenv(name, value)
        handler.wire()  # from the settings, as a cold start
        answer = handler.lambda_handler(event, FakeLambdaContext("claims-risk-quality-trigger"))
        assert answer["started"], answer
        return list(recorder.calls)


@pytest.fixture(scope="module")
def trigger_calls(deployments: dict[str, Deployment]) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    return {stage: run_trigger(d, created_event(bucket_of(d))) for stage, d in deployments.items()}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_trigger_starts_the_quality_job_in_the_project_image_with_the_stages_lake(
    stage: str,
    deployments: dict[str, Deployment],
    trigger_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    deployment = deployments[stage]
    [(service, operation, request)] = trigger_calls[stage]  # SageMaker only: the job reads the file
    assert (service, operation) == ("sagemaker", "CreateProcessingJob")
    assert not request_errors("sagemaker", "CreateProcessingJob", request)
    assert not environment_errors(request["Environment"])
    assert not lambda_calls_problems(deployment, TRIGGER, trigger_calls[stage], "quality trigger")
    assert request["AppSpecification"] == {
        "ImageUri": deployment.substitutions["Image"],
        "ContainerEntrypoint": ["job", QUALITY_JOB_MODULE],
    }
    bucket = bucket_of(deployment)
    environment = request["Environment"]
    lake = stage_config(stage).lake_environment(bucket)
    assert {k: environment[k] for k in lake} == lake
    settings = QualityJobSettings.model_validate(environment)
    assert (settings.bucket, settings.outcomes_key()) == (bucket, KEY)
    assert environment[VERSION_ENV] == created_event(bucket)["detail"]["object"]["version-id"]
    assert environment["CLAIMS_RISK_MODEL_CARD_S3"] == f"s3://{bucket}/models/current/manifest.json"
    assert role_of_request(deployment, "CreateProcessingJob", request) == sagemaker_role(deployment)
    assert (
        request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"]
        == deployment.substitutions["KmsKeyArn"]
    )
    assert request["ProcessingJobName"].startswith(f"{stage_config(stage).prefix}-quality-")


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_trigger_may_start_quality_jobs_and_pass_only_the_sagemaker_role(
    stage: str, deployments: dict[str, Deployment]
) -> None:
    deployment = deployments[stage]
    prefix = stage_config(stage).prefix
    statements = deployment.identity_statements(deployment.role_of_function(TRIGGER))
    job = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job"
    assert allows(statements, "sagemaker:CreateProcessingJob", f"{job}/{prefix}-quality-labels-0a1b")
    for other in (f"{prefix}-drift-2026120109", "claims-lake-claims-0a1b", "claims-risk-qa-quality-x"):
        assert not allows(statements, "sagemaker:CreateProcessingJob", f"{job}/{other}"), other
    assert not allows(statements, "sagemaker:CreateTrainingJob", f"{job}/{prefix}-quality-x")
    assert not allows(
        statements, "s3:GetObject", f"arn:aws:s3:::{bucket_of(deployment)}/{KEY}"
    )  # the job reads it
    role = deployment.substitutions["SageMakerRoleArn"]
    to_sagemaker = {"iam:PassedToService": "sagemaker.amazonaws.com"}
    assert allows(statements, "iam:PassRole", role, to_sagemaker)
    assert not allows(statements, "iam:PassRole", role, {"iam:PassedToService": "lambda.amazonaws.com"})


# -- the quality job's own calls -----------------------------------------------------------------------


def run_quality_job(
    deployment: Deployment, request: dict[str, Any], work: Path
) -> list[tuple[str, str, dict[str, Any]]]:
    """The dropped labels file (and a newer upload under its key), the serving model's card, then the
    job's module with the request's environment, against moto: the calls the job made."""
    from shared.adapters.lake import LocalLake

    bucket = bucket_of(deployment)
    capture = work / "capture"
    writer = CaptureWriter(capture, CapturePolicy())
    labels = scored_day(writer, DAY1, "a", tp=36, fn=4, fp=9, tn=51)
    labels |= scored_day(writer, DAY2, "b", tp=20, fn=20, fp=5, tn=55)
    writer.close()
    lake = LocalLake(work / "lake")
    ingest_capture(capture, lake)
    body = ("claim_id,outcome\n" + "".join(f"{k},{v}\n" for k, v in labels.items())).encode()
    with recorded_aws() as (patch, recorder, seeding):
        s3 = seeding.client("s3")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=bucket, Key="models/current/manifest.json", Body=json.dumps(MANIFEST).encode())
        version = s3.put_object(Bucket=bucket, Key=KEY, Body=body)["VersionId"]
        s3.put_object(Bucket=bucket, Key=KEY, Body=b"claim_id,outcome\n")  # a newer upload: not this job's
        for name, value in {**request["Environment"], VERSION_ENV: version}.items():
            patch.setenv(name, value)
        patch.setenv("CLAIMS_RISK_LAKE_ROOT", str(lake.root))  # DuckDB for Athena: test_lake_stack's
        patch.delenv("CLAIMS_RISK_LAKE_DATABASE")
        recorder.calls.clear()
        assert quality_job.main([], message=work / "message") == 0, (work / "message").read_text()
        assert lake.query("SELECT count(*) AS n FROM outcomes")["n"].tolist() == [200]
        return list(recorder.calls)


@pytest.fixture(scope="module")
def job_calls(
    deployments: dict[str, Deployment],
    trigger_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    found = {}
    for stage, deployment in deployments.items():
        [(_, _, request)] = trigger_calls[stage]
        found[stage] = run_quality_job(
            deployment, copy.deepcopy(request), tmp_path_factory.mktemp(f"quality-{stage}")
        )
    return found


def job_needs(deployment: Deployment, calls: list[tuple[str, str, dict[str, Any]]]) -> list[Need]:
    needs: list[Need] = []
    for service, operation, params in calls:
        if service == "cloudwatch":
            assert operation == "PutMetricData", operation
            namespace = (("cloudwatch:namespace", params["Namespace"]),)
            needs.append(Need("cloudwatch:PutMetricData", "*", namespace, CLOUDWATCH_IAM))
        else:
            needs += call_needs(deployment, service, operation, params, "quality job")
    return needs


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_quality_jobs_calls_are_valid_and_its_role_allows_them(
    stage: str,
    deployments: dict[str, Deployment],
    job_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    deployment = deployments[stage]
    calls = job_calls[stage]
    assert {(s, o) for s, o, _ in calls} == {("s3", "GetObject"), ("cloudwatch", "PutMetricData")}
    assert not [e for s, o, p in calls for e in request_errors(s, o, p)]
    labels = [p for s, o, p in calls if o == "GetObject" and p["Key"] == KEY]
    assert labels and all(p.get("VersionId") for p in labels)  # the version dropped, by its id
    assert not missing(deployment, sagemaker_role(deployment), job_needs(deployment, calls))


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_alarm_watches_what_the_job_publishes(
    stage: str,
    deployments: dict[str, Deployment],
    job_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    deployment = deployments[stage]
    [put] = [p for s, o, p in job_calls[stage] if o == "PutMetricData"]
    [datum] = [d for d in put["MetricData"] if d["MetricName"] == QUALITY_DROP_METRIC]
    assert datum["Value"] == pytest.approx(0.40)  # day two's recall, 0.50 against 0.90 tested
    definition = alarm("model-quality")
    watched = alarm_named(deployment, f"{stage_config(stage).prefix}-model-quality")
    assert (watched["Namespace"], watched["MetricName"]) == (put["Namespace"], datum["MetricName"])
    assert watched["Namespace"] == QUALITY_NAMESPACE
    assert watched["Dimensions"] == datum["Dimensions"]  # the endpoint parameter's name, on both sides
    assert (watched["Threshold"], watched["ComparisonOperator"]) == (
        definition.threshold,
        definition.comparison,
    )
    assert (watched["Statistic"], watched["Period"]) == (definition.statistic, definition.period_s)
    assert watched["TreatMissingData"] == "ignore"
    [topic] = deployment.of_type("AWS::SNS::Topic")
    assert watched["AlarmActions"] == watched["OKActions"] == [deployment.ref(topic)]
    assert not request_errors("cloudwatch", "PutMetricAlarm", {k: watched[k] for k in PUT_ALARM_FIELDS})


PUT_ALARM_FIELDS: Final = (
    "AlarmName",
    "AlarmDescription",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "Period",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "AlarmActions",
    "OKActions",
)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_job_role_reads_dropped_labels_versions_and_publishes_only_its_namespaces(
    stage: str, deployments: dict[str, Deployment]
) -> None:
    deployment = deployments[stage]
    statements = deployment.identity_statements(sagemaker_role(deployment))
    bucket = f"arn:aws:s3:::{bucket_of(deployment)}"
    assert allows(statements, "s3:GetObjectVersion", f"{bucket}/{KEY}")
    for other in ("models/current/model.tar.gz", "lake/outcomes/x.parquet", "outcomes/reviewed/x.csv"):
        assert not allows(statements, "s3:GetObjectVersion", f"{bucket}/{other}"), other
    for namespace, allowed in ((QUALITY_NAMESPACE, True), ("AWS/SageMaker", False), ("Other", False)):
        context = {"cloudwatch:namespace": namespace}
        assert allows(statements, "cloudwatch:PutMetricData", "*", context) is allowed, namespace


def test_the_dashboard_shows_every_alarm_and_the_model_quality_figures(
    deployments: dict[str, Deployment],
) -> None:
    for deployment in deployments.values():
        [(_, board)] = deployment.of_type("AWS::CloudWatch::Dashboard").items()
        body = json.dumps(board["Properties"]["DashboardBody"])
        for logical in deployment.of_type("AWS::CloudWatch::Alarm"):
            assert f'"{logical}"' in body, logical  # the alarm widget's ARN of each, batch-failed-lake too
        assert QUALITY_NAMESPACE in body and QUALITY_DROP_METRIC in body
