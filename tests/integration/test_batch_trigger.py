"""The drop-folder trigger end to end, in process: real S3 event notifications into the Lambda handler,
against moto's S3, DynamoDB (the Powertools idempotency table) and SageMaker (endpoint and transform jobs).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import quote_plus

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from lambdas.batch_trigger import handler
from shared.adapters.transform_jobs import SageMakerTransformLauncher
from shared.batch_jobs import BatchSettings, TransformJobSpec, plan_transform_job
from shared.ports import TransformJobError
from tests.aws_fakes import FakeLambdaContext, offline_credentials
from tests.factories import minimal_claim

REGION: Final = "eu-west-1"
ACCOUNT = "123456789012"
BUCKET = "claims-drop-test"
TABLE = "claims-batch-idempotency"
ENDPOINT = "claims-risk"
MODEL = "claims-risk-model-20261101"
# The trigger reads a CSV's header: it must name the claim schema's required columns.
CSV_HEADER = ",".join(minimal_claim())
CSV_BODY = f"{CSV_HEADER}\n{','.join(str(v) for v in minimal_claim().values())}\n".encode()


FUNCTION_NAME = "claims-risk-batch-trigger"


def Context() -> FakeLambdaContext:  # noqa: N802 (reads like the class it stands for)
    return FakeLambdaContext(FUNCTION_NAME, memory_limit_in_mb=256, remaining_ms=25_000)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Fake credentials, moto for every AWS call, and the trigger's resources: a versioned bucket,
    the idempotency table as Powertools expects it, and a serving endpoint with its model."""
    offline_credentials(monkeypatch, REGION)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME)  # the idempotency key's prefix
    monkeypatch.setenv("IDEMPOTENCY_TABLE", TABLE)
    monkeypatch.setenv("SAGEMAKER_ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "ClaimsRisk")
    for name in ("INCOMING_PREFIX", "SCORED_PREFIX", "REJECTED_PREFIX", "DATA_KMS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        sagemaker.create_model(
            ModelName=MODEL,
            ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/claims-risk-sagemaker",
            PrimaryContainer={
                "Image": f"141502667606.dkr.ecr.{REGION}.amazonaws.com/sagemaker-scikit-learn:1.4-2-cpu-py3",
                "ModelDataUrl": f"s3://{BUCKET}-models/model.tar.gz",
            },
        )
        sagemaker.create_endpoint_config(
            EndpointConfigName=f"{ENDPOINT}-config-7",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": MODEL,
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.t2.medium",
                }
            ],
        )
        sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=f"{ENDPOINT}-config-7")
        handler.reset_wiring()  # the DynamoDB and SageMaker clients must be made inside moto
        yield {"s3": s3, "sagemaker": sagemaker}
        handler.reset_wiring()


def put(aws: dict[str, Any], key: str, body: bytes = CSV_BODY) -> dict[str, Any]:
    """Upload an object and return the S3 notification event for it, as S3 would deliver it."""
    answer = aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=body)
    # S3 URL-encodes the key in notifications, spaces as '+', slashes kept.
    return notification(key, answer["VersionId"], len(body), answer["ETag"].strip('"'))


def notification(key: str, version_id: str | None, size: int, etag: str) -> dict[str, Any]:
    s3_object: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": size,
        "eTag": etag,
        "sequencer": f"{time.time_ns():018X}",
    }
    if version_id is not None:
        s3_object["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": "2026-11-02T09:15:00.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "203.0.113.7"},
                "responseElements": {
                    "x-amz-request-id": "C3D13FE58DE4C810",
                    "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "claims-drop-incoming",
                    "bucket": {
                        "name": BUCKET,
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": f"arn:aws:s3:::{BUCKET}",
                    },
                    "object": s3_object,
                },
            }
        ]
    }


def jobs(aws: dict[str, Any]) -> list[dict[str, Any]]:
    summaries: list[dict[str, Any]] = aws["sagemaker"].list_transform_jobs()["TransformJobSummaries"]
    return summaries


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = handler.lambda_handler(event, Context())
    json.dumps(summary)  # the summary is what Lambda returns: it must be JSON
    return summary


def test_one_csv_drop_starts_one_transform_job_with_the_serving_model(aws: dict[str, Any]) -> None:
    key = "incoming/2026/11/claims batch+1.csv"
    event = put(aws, key)
    assert event["Records"][0]["s3"]["object"]["key"] == "incoming/2026/11/claims+batch%2B1.csv"

    summary = invoke(event)

    [job] = jobs(aws)
    assert summary == {"started": [job["TransformJobName"]], "duplicates": [], "ignored": []}
    described = aws["sagemaker"].describe_transform_job(TransformJobName=job["TransformJobName"])
    assert described["TransformJobName"].startswith("claims-batch-claims-batch-1-")
    assert described["ModelName"] == MODEL
    assert described["TransformInput"] == {
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": f"s3://{BUCKET}/incoming/2026/11/claims batch+1.csv",
            }
        },
        "ContentType": "text/csv",
        "SplitType": "Line",
        "CompressionType": "None",
    }
    assert described["TransformOutput"] == {
        "S3OutputPath": f"s3://{BUCKET}/scored/2026/11/claims batch+1.csv/",
        "Accept": "text/csv",
        "AssembleWith": "Line",
    }
    assert described["Environment"] == {
        "CLAIMS_RISK_REJECTED_S3_URI": f"s3://{BUCKET}/rejected/2026/11/claims batch+1.csv/",
        "CLAIMS_RISK_CSV_COLUMNS": json.dumps(CSV_HEADER.split(","), separators=(",", ":")),
    }
    assert described["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1}
    assert described["BatchStrategy"] == "MultiRecord"
    assert described["MaxPayloadInMB"] == 6
    assert described["DataProcessing"] == {"JoinSource": "None"}
    tags = aws["sagemaker"].list_tags(ResourceArn=described["TransformJobArn"])["Tags"]
    version = event["Records"][0]["s3"]["object"]["versionId"]
    assert {t["Key"]: t["Value"] for t in tags} == {
        "source-object": f"s3://{BUCKET}/incoming/2026/11/claims batch+1.csv",
        "source-version": version,
    }


def test_a_redelivered_event_starts_no_second_job_but_a_new_version_does(aws: dict[str, Any]) -> None:
    key = "incoming/2026/11/claims.csv"
    event = put(aws, key)

    first = invoke(event)
    again = invoke(json.loads(json.dumps(event)))  # S3 delivers at least once: the very same event

    [job] = jobs(aws)
    assert first["started"] == [job["TransformJobName"]]
    assert again == {"started": [], "duplicates": [job["TransformJobName"]], "ignored": []}

    newer = invoke(put(aws, key, CSV_BODY + b"CLM-3,700\n"))

    names = {j["TransformJobName"] for j in jobs(aws)}
    assert len(names) == 2
    assert newer["started"][0] in names and newer["started"][0] != job["TransformJobName"]
    # Both jobs read the same key: S3Prefix cannot name a version, so each scores the latest one.
    inputs = {
        aws["sagemaker"].describe_transform_job(TransformJobName=n)["TransformInput"]["DataSource"][
            "S3DataSource"
        ]["S3Uri"]
        for n in names
    }
    assert inputs == {f"s3://{BUCKET}/{key}"}


def test_the_idempotency_record_is_keyed_on_the_object_version(aws: dict[str, Any]) -> None:
    invoke(put(aws, "incoming/a.csv"))
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=TABLE)["Items"]
    [item] = items
    assert item["id"]["S"].startswith(f"{FUNCTION_NAME}.lambdas.batch_trigger.handler.start_job#")
    assert item["status"]["S"] == "COMPLETED"
    expiry = int(item["expiration"]["N"]) - int(time.time())
    assert 3 * 24 * 3600 - 60 <= expiry <= 3 * 24 * 3600


def test_a_file_that_is_not_claims_starts_nothing_and_the_log_says_why(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Powertools handler holds the stdout of import time; point it at the one capsys captures.
    stream_handler = handler.logger.registered_handler
    assert isinstance(stream_handler, logging.StreamHandler)
    monkeypatch.setattr(stream_handler, "stream", sys.stdout)

    summary = invoke(put(aws, "incoming/readme.txt", b"drop claims files here\n"))

    assert jobs(aws) == []
    assert summary == {"started": [], "duplicates": [], "ignored": [f"s3://{BUCKET}/incoming/readme.txt"]}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [ignored] = [line for line in lines if str(line.get("message", "")).startswith("ignored ")]
    assert ignored["message"] == (
        f"ignored s3://{BUCKET}/incoming/readme.txt: "
        "not a claims file: the name does not end with .csv, .jsonl, .json, .parquet"
    )
    assert ignored["level"] == "INFO"
    assert ignored["function_name"] == FUNCTION_NAME  # the Lambda context was injected


def test_folder_markers_and_empty_files_are_ignored(aws: dict[str, Any]) -> None:
    marker = invoke(put(aws, "incoming/2026/12/", b""))
    empty = invoke(put(aws, "incoming/2026/12/empty.csv", b""))
    assert jobs(aws) == []
    assert marker["ignored"] == [f"s3://{BUCKET}/incoming/2026/12/"]
    assert empty["ignored"] == [f"s3://{BUCKET}/incoming/2026/12/empty.csv"]


def test_a_parquet_drop_is_sent_whole(aws: dict[str, Any]) -> None:
    summary = invoke(put(aws, "incoming/2026/11/Claims.PARQUET", b"PAR1" + b"\0" * 64 + b"PAR1"))

    [name] = summary["started"]
    described = aws["sagemaker"].describe_transform_job(TransformJobName=name)
    assert described["TransformInput"]["SplitType"] == "None"
    assert described["TransformInput"]["ContentType"] == "application/x-parquet"
    assert described["TransformOutput"]["Accept"] == "application/jsonlines"
    assert described["BatchStrategy"] == "SingleRecord"


def test_settings_and_kms_key_come_from_the_environment(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFORM_INSTANCE_TYPE", "ml.c5.xlarge")
    monkeypatch.setenv("TRANSFORM_INSTANCE_COUNT", "2")
    monkeypatch.setenv(
        "DATA_KMS_KEY_ID", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    )

    [name] = invoke(put(aws, "incoming/b.jsonl", b'{"claim_id": "CLM-1"}\n'))["started"]

    described = aws["sagemaker"].describe_transform_job(TransformJobName=name)
    assert described["TransformResources"] == {"InstanceType": "ml.c5.xlarge", "InstanceCount": 2}
    assert described["TransformOutput"]["KmsKeyId"].endswith(":key/1234abcd-12ab-34cd-56ef-1234567890ab")
    assert described["TransformInput"]["ContentType"] == "application/jsonlines"


def test_an_s3_test_event_and_a_removal_start_nothing(aws: dict[str, Any]) -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-02T09:00:00.000Z"}
    assert invoke(test_event) == {"started": [], "duplicates": [], "ignored": []}
    removal = put(aws, "incoming/gone.csv")
    removal["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert invoke(removal)["ignored"] == [f"s3://{BUCKET}/incoming/gone.csv"]
    assert jobs(aws) == []


def test_a_failed_start_fails_the_invocation_and_a_retry_starts_the_job(aws: dict[str, Any]) -> None:
    event = put(aws, "incoming/retry.csv")
    aws["sagemaker"].delete_endpoint(EndpointName=ENDPOINT)  # the model cannot be found for a while

    with pytest.raises(TransformJobError, match=r"incoming/retry\.csv"):
        invoke(event)
    assert jobs(aws) == []

    aws["sagemaker"].create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=f"{ENDPOINT}-config-7")
    assert len(invoke(event)["started"]) == 1  # the failure left no idempotency record behind
    assert len(jobs(aws)) == 1


# moto's CreateTransformJob overwrites a job of the same name instead of refusing it, so SageMaker's
# duplicate-name answer is played by botocore's Stubber, with the message SageMaker sends.
def _spec() -> TransformJobSpec:
    spec = plan_transform_job(
        BUCKET, "incoming/a.csv", "v1", settings=BatchSettings(), model_name=MODEL, size=10
    )
    assert isinstance(spec, TransformJobSpec)
    return spec


def test_a_job_name_sagemaker_already_has_counts_as_launched() -> None:
    client = boto3.client("sagemaker", region_name=REGION)
    spec = _spec()
    with Stubber(client) as stub:
        stub.add_client_error(
            "create_transform_job",
            service_error_code="ValidationException",
            service_message="Job name must be unique within an AWS account and region, and a job with "
            f"this name already exists (arn:aws:sagemaker:{REGION}:{ACCOUNT}:transform-job/{spec.job_name})",
            http_status_code=400,
        )
        assert SageMakerTransformLauncher(client).launch(spec) == spec.job_name


def test_other_sagemaker_refusals_are_transform_job_errors() -> None:
    client = boto3.client("sagemaker", region_name=REGION)
    spec = _spec()
    with Stubber(client) as stub:
        stub.add_client_error(
            "create_transform_job",
            service_error_code="ResourceLimitExceeded",
            service_message="The account-level service limit 'ml.m5.large for transform job usage' is 0",
            http_status_code=400,
        )
        stub.add_client_error(
            "create_transform_job",
            service_error_code="ValidationException",
            service_message=f"Value '{spec.job_name}' at 'transformJobName' failed to satisfy constraint",
            http_status_code=400,
        )
        launcher = SageMakerTransformLauncher(client)
        with pytest.raises(TransformJobError, match="ResourceLimitExceeded: The account-level service limit"):
            launcher.launch(spec)
        with pytest.raises(TransformJobError, match="ValidationException"):
            launcher.launch(spec)


def test_the_model_is_the_first_variant_of_the_endpoints_config(aws: dict[str, Any]) -> None:
    launcher = SageMakerTransformLauncher(aws["sagemaker"])
    assert launcher.model_name(ENDPOINT) == MODEL
    with pytest.raises(TransformJobError, match="no model found behind endpoint nowhere"):
        launcher.model_name("nowhere")
