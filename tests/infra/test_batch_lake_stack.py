"""In AWS, a completed drop-folder transform's rows reach the claims lake (issue 13): the synthesized
stack checked against AWS's own definitions, in the conformance style of test_aws_conformance.py.

- The rules match the developer guide's examples ("Events that Amazon SageMaker AI sends to Amazon
  EventBridge", https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html:
  "SageMaker transform job state change" and "SageMaker processing job state change"; the examples,
  with this stack's names, are tests/unit/events/), evaluated by moto's implementation of
  EventBridge's pattern matching.
- The trigger runs for real, with the template's environment, against moto: its CreateProcessingJob
  is validated against botocore's sagemaker model (patterns, lengths, enums) and allowed by its role
  (the SageMaker API permissions reference: the job's ARN, AddTags for its tags, iam:PassRole).
- The lake job's module runs for real against moto (SageMaker, S3, Glue): every call it makes is
  recorded, validated against botocore, and allowed by the role it runs as (the SageMaker role), and
  nothing beyond: the role may read the dropped files' versions but no other object's.
- A failed lake job reaches on-call: a rule to the topic, and an alarm on that rule.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pytest
from moto.events.models import EventPattern

from cdk.config import stage_config
from sagemaker_jobs.processing import batch_lake
from shared.adapters.transform_jobs import SageMakerTransformLauncher
from shared.batch_jobs import BatchSettings, TransformJobSpec, plan_transform_job
from shared.batch_lake import LAKE_JOB_MODULE, LAKE_JOB_PREFIX, TRANSFORM_JOB_ENV
from shared.ml.batch_scoring import render_line_results
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
from tests.infra.test_lake_stack import bucket_of, environment_errors, lake_resources, sagemaker_role
from tests.infra.test_lake_stack import call_needs as lake_call_needs

TRIGGER: Final = "lambdas.batch_trigger.handler.lambda_handler"
EVENTS: Final = Path(__file__).resolve().parents[1] / "unit" / "events"
KEY: Final = "incoming/2026/12/claims.csv"
BODY: Final = b"claim_id,claim_amount\nA1,100\nB2,-5\n"
SAGEMAKER_PERMISSIONS: Final = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/api-permissions-reference.html"
)


@pytest.fixture(scope="module")
def deployments(synthesized_stages: dict[str, Synthesized]) -> dict[str, Deployment]:
    return {stage: Deployment(s) for stage, s in synthesized_stages.items()}


def documented(name: str) -> Any:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def completed_event(bucket: str, transform_job: str = "claims-batch-claims-0a1b2c3d4e5f") -> Any:
    """The guide's transform job example, as this stack's job for a file dropped in ``bucket``."""
    event = documented("sagemaker_transform_job_state_change.json")
    text = json.dumps(event).replace("claims-risk-data", bucket)
    return json.loads(text.replace("claims-batch-claims-0a1b2c3d4e5f", transform_job))


def rule_to(
    deployment: Deployment, detail_type: str, statuses: list[str], name_prefix: str = ""
) -> tuple[str, dict[str, Any]]:
    """The rule on these statuses of this detail type; ``name_prefix`` tells apart two rules on the
    same statuses by the job names they match (the lake job's failures, the quality job's)."""
    [(logical, rule)] = [
        (k, deployment.resolve(r["Properties"]))
        for k, r in deployment.of_type("AWS::Events::Rule").items()
        if r["Properties"].get("EventPattern", {}).get("detail-type") == [detail_type]
        and statuses in r["Properties"]["EventPattern"]["detail"].values()
        and any(
            [{"prefix": name_prefix}] == matched or not name_prefix
            for matched in r["Properties"]["EventPattern"]["detail"].values()
        )
    ]
    return logical, rule


# -- the events --------------------------------------------------------------------------------------


def test_a_completed_transform_of_this_stack_and_nothing_else_invokes_the_trigger(
    deployments: dict[str, Deployment],
) -> None:
    for stage, deployment in deployments.items():
        logical, rule = rule_to(deployment, "SageMaker Transform Job State Change", ["Completed"])
        assert rule["State"] == "ENABLED"
        [target] = rule["Targets"]
        trigger = deployment.logical_by_arn("AWS::Lambda::Function", target["Arn"])
        assert deployment.resources[trigger]["Properties"]["Handler"] == TRIGGER
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
        bucket = bucket_of(deployment)
        assert pattern.matches_event(completed_event(bucket))
        for change in (
            {"TransformJobStatus": "Failed"},
            {"TransformJobStatus": "InProgress"},
            {"TransformJobName": "someone-elses-job"},
            {"TransformOutput": {"S3OutputPath": "s3://another-stages-bucket/scored/2026/12/claims.csv/"}},
            {"TransformOutput": {"S3OutputPath": f"s3://{bucket}/reports/claims.csv/"}},
        ):
            event = completed_event(bucket)
            event["detail"].update(change)
            assert not pattern.matches_event(event), (stage, change)


def test_a_failed_or_stopped_lake_job_reaches_on_call(deployments: dict[str, Deployment]) -> None:
    for stage, deployment in deployments.items():
        logical, rule = rule_to(
            deployment, "SageMaker Processing Job State Change", ["Failed", "Stopped"], LAKE_JOB_PREFIX
        )
        [topic] = deployment.of_type("AWS::SNS::Topic")
        [target] = rule["Targets"]
        assert target["Arn"] == deployment.ref(topic)
        template = target["InputTransformer"]["InputTemplate"]
        assert "<detail-ProcessingJobName>" in template and "<detail-FailureReason>" in template
        assert "lake_rerun" in template  # what to do about it
        pattern = EventPattern.load(json.dumps(rule["EventPattern"]))
        failed = documented("sagemaker_processing_job_state_change.json")
        assert pattern.matches_event(failed)
        for name, status in (
            ("claims-lake-claims-0a1b", "Stopped"),
            ("claims-lake-claims-0a1b", "Completed"),
            ("claims-risk-dev-drift-2026", "Failed"),  # another job's failure is not the lake's
        ):
            other = copy.deepcopy(failed)
            other["detail"].update(ProcessingJobName=name, ProcessingJobStatus=status)
            assert pattern.matches_event(other) == (status == "Stopped"), (stage, name)
        on_rule = [{"Name": "RuleName", "Value": deployment.ref(logical)}]
        [alarm] = [
            a["Properties"]
            for a in deployment.of_type("AWS::CloudWatch::Alarm").values()
            if deployment.resolve(a["Properties"].get("Dimensions", [])) == on_rule
        ]
        assert alarm["AlarmActions"] == [{"Ref": topic}] and alarm["OKActions"] == [{"Ref": topic}]
        assert alarm["AlarmName"] == f"{stage_config(stage).prefix}-batch-failed-lake"


# -- the trigger's request ---------------------------------------------------------------------------


def run_trigger(deployment: Deployment, event: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The trigger with the template's environment, against moto: its recorded AWS calls."""
    from lambdas.batch_trigger import handler

    environment = deployment.function_environment(TRIGGER)
    with recorded_aws() as (patch, recorder, _):
        for name, value in environment.items():
            patch.setenv(name, value)
        handler.reset_wiring()
        try:
            answer = handler.lambda_handler(event, FakeLambdaContext("claims-risk-batch-trigger"))
        finally:
            handler.reset_wiring()
        assert answer["lake_job"], answer
        return list(recorder.calls)


@pytest.fixture(scope="module")
def trigger_calls(deployments: dict[str, Deployment]) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    return {stage: run_trigger(d, completed_event(bucket_of(d))) for stage, d in deployments.items()}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_trigger_starts_the_lake_job_in_the_project_image_with_the_stages_lake(
    stage: str,
    deployments: dict[str, Deployment],
    trigger_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    deployment = deployments[stage]
    [(service, operation, request)] = trigger_calls[stage]  # no S3, no DynamoDB: SageMaker only
    assert (service, operation) == ("sagemaker", "CreateProcessingJob")
    assert not request_errors("sagemaker", "CreateProcessingJob", request)
    assert not environment_errors(request["Environment"])
    assert not lambda_calls_problems(deployment, TRIGGER, trigger_calls[stage], "batch trigger: lake job")
    assert request["AppSpecification"] == {
        "ImageUri": deployment.substitutions["Image"],  # the image every job runs
        "ContainerEntrypoint": ["job", LAKE_JOB_MODULE],
    }
    lake = stage_config(stage).lake_environment(bucket_of(deployment))
    assert {k: request["Environment"][k] for k in lake} == lake
    assert request["Environment"][TRANSFORM_JOB_ENV] == "claims-batch-claims-0a1b2c3d4e5f"
    assert role_of_request(deployment, "CreateProcessingJob", request) == sagemaker_role(deployment)
    cluster = request["ProcessingResources"]["ClusterConfig"]
    assert cluster["VolumeKmsKeyId"] == deployment.substitutions["KmsKeyArn"]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_trigger_may_start_lake_jobs_and_pass_only_the_sagemaker_role(
    stage: str, deployments: dict[str, Deployment]
) -> None:
    deployment = deployments[stage]
    statements = deployment.identity_statements(deployment.role_of_function(TRIGGER))
    job = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job"
    assert allows(statements, "sagemaker:CreateProcessingJob", f"{job}/claims-lake-claims-0a1b2c3d4e5f")
    assert not allows(statements, "sagemaker:CreateProcessingJob", f"{job}/claims-risk-{stage}-drift-2026")
    training = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/claims-lake-x"
    assert not allows(statements, "sagemaker:CreateTrainingJob", training)
    role = deployment.substitutions["SageMakerRoleArn"]
    to_sagemaker = {"iam:PassedToService": "sagemaker.amazonaws.com"}
    assert allows(statements, "iam:PassRole", role, to_sagemaker)
    assert not allows(statements, "iam:PassRole", role, {"iam:PassedToService": "lambda.amazonaws.com"})
    other = deployment.attribute(deployment.role_of_function(TRIGGER), "Arn")
    assert not allows(statements, "iam:PassRole", other, to_sagemaker)


# -- the lake job's own calls ------------------------------------------------------------------------


def run_lake_job(
    deployment: Deployment, request: Mapping[str, Any], work: Path
) -> list[tuple[str, str, dict[str, Any]]]:
    """The transform job the trigger started for a dropped CSV, its .out, then the lake job's module
    with the request's environment, against moto: the calls the lake job made."""
    bucket = bucket_of(deployment)
    database, _ = lake_resources(deployment)
    with recorded_aws() as (patch, recorder, seeding):
        s3 = seeding.client("s3")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        version = s3.put_object(Bucket=bucket, Key=KEY, Body=BODY)["VersionId"]
        s3.put_object(Bucket=bucket, Key=KEY, Body=b"claim_id\na newer upload\n")  # not the one scored
        seeding.client("glue").create_database(DatabaseInput=database["DatabaseInput"])
        settings = BatchSettings(kms_key_id=deployment.substitutions["KmsKeyArn"])
        plan = plan_transform_job(
            bucket,
            KEY,
            version,
            settings=settings,
            model_name="claims-risk-0a1b",
            csv_columns=["claim_id", "claim_amount"],
        )
        assert isinstance(plan, TransformJobSpec)
        seeding.client("sagemaker").create_model(
            ModelName="claims-risk-0a1b",
            ExecutionRoleArn=deployment.substitutions["SageMakerRoleArn"],
            PrimaryContainer={"Image": deployment.substitutions["Image"]},
        )
        SageMakerTransformLauncher(seeding.client("sagemaker")).launch(plan)
        scored = {"claim_id": "A1", "risk_level": "low", "risk_score": 0.1, "confidence": 0.8}
        results: list[dict[str, Any]] = [
            {"header": True},
            {**scored, "model_version": "v1", "risk_factors": []},
            {"claim_id": "B2", "error": "claim_amount: must be at least 0"},
        ]
        out = plan.output_uri.removeprefix(f"s3://{bucket}/") + "claims.csv.out"
        s3.put_object(Bucket=bucket, Key=out, Body=render_line_results(results, as_csv=True))
        environment = {**request["Environment"], TRANSFORM_JOB_ENV: plan.job_name}
        for name, value in environment.items():
            patch.setenv(name, value)
        recorder.calls.clear()
        assert batch_lake.main(["--work-dir", str(work)]) == 0
        stored = seeding.client("s3").list_objects_v2(Bucket=bucket, Prefix="lake/batch_scored/")
        batch_id = hashlib.sha256(BODY).hexdigest()[:32]
        assert [o["Key"].split("/")[2] for o in stored["Contents"]] == [f"batch_id={batch_id}"]
        return list(recorder.calls)


def lake_job_needs(deployment: Deployment, calls: list[tuple[str, str, dict[str, Any]]]) -> list[Need]:
    """What each recorded call needs of the job's role (the permissions references)."""
    config = stage_config(deployment.stage)
    key = deployment.substitutions["KmsKeyArn"]
    needs: list[Need] = []
    for service, operation, params in calls:
        why = f"lake job: {service} {operation}"
        if service == "sagemaker":
            assert operation in ("DescribeTransformJob", "ListTags"), operation
            resource = params.get("ResourceArn") or (
                f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:transform-job/{params['TransformJobName']}"
            )
            needs.append(Need(f"sagemaker:{operation}", resource, why=SAGEMAKER_PERMISSIONS))
        elif service == "s3" and not str(params.get("Key", params.get("Prefix", ""))).startswith("lake/"):
            needs += call_needs(deployment, service, operation, params, why)  # the drop folder's objects
        else:
            needs += lake_call_needs(
                service, operation, params, config.lake_database, config.lake_workgroup, key
            )
    return needs


@pytest.fixture(scope="module")
def lake_job_calls(
    deployments: dict[str, Deployment],
    trigger_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    found = {}
    for stage, deployment in deployments.items():
        [(_, _, request)] = trigger_calls[stage]
        found[stage] = run_lake_job(
            deployment, copy.deepcopy(request), tmp_path_factory.mktemp(f"lake-{stage}")
        )
    return found


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_lake_jobs_calls_are_valid_and_its_role_allows_them(
    stage: str,
    deployments: dict[str, Deployment],
    lake_job_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    deployment = deployments[stage]
    calls = lake_job_calls[stage]
    operations = {(s, o) for s, o, _ in calls}
    assert {
        ("sagemaker", "DescribeTransformJob"),
        ("sagemaker", "ListTags"),
        ("s3", "GetObject"),
        ("s3", "ListObjectsV2"),
        ("glue", "BatchCreatePartition"),
    } <= operations, operations
    assert not [e for s, o, p in calls for e in request_errors(s, o, p)]
    versioned = [p for s, o, p in calls if o == "GetObject" and p["Key"] == KEY]
    assert versioned and all(p.get("VersionId") for p in versioned)  # the version scored, by its id
    assert not missing(deployment, sagemaker_role(deployment), lake_job_needs(deployment, calls))


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_job_role_reads_the_versions_of_dropped_files_and_no_others(
    stage: str, deployments: dict[str, Deployment]
) -> None:
    deployment = deployments[stage]
    statements = deployment.identity_statements(sagemaker_role(deployment))
    bucket = f"arn:aws:s3:::{bucket_of(deployment)}"
    assert allows(statements, "s3:GetObjectVersion", f"{bucket}/{KEY}")
    for other in ("models/current/model.tar.gz", "scored/2026/12/claims.csv/claims.csv.out", "lake/x"):
        assert not allows(statements, "s3:GetObjectVersion", f"{bucket}/{other}"), other
    transform = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:transform-job"
    assert allows(statements, "sagemaker:DescribeTransformJob", f"{transform}/claims-batch-claims-0a1b")
    assert not allows(statements, "sagemaker:DescribeTransformJob", f"{transform}/someone-elses")
    assert not allows(statements, "sagemaker:ListTags", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/x")
