"""In AWS, a labels file dropped under outcomes/incoming/ reaches the claims lake once, its figures
reach CloudWatch, and the model-quality alarm fires when quality dropped; a bad file is refused,
with its reason, and nothing of it is kept.

In process against moto (S3, SageMaker, CloudWatch): the labels file is put in the versioned data
bucket; S3's "Object Created" event (the shape of "EventBridge event message structure",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html) goes to the quality trigger,
which starts the job through the real launcher; the job's module then runs with that job's
environment (its lake a local folder, DuckDB standing in for Athena: tests/infra covers the Athena
side), reading the dropped version from S3 and publishing through the CloudWatch adapter. moto
evaluates no alarm: shared/alarm_evaluation.py evaluates the alarm's one definition over the
datapoints CloudWatch then holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import boto3
import pytest
from moto import mock_aws

from lambdas.quality_trigger import handler
from sagemaker_jobs.monitoring import quality as quality_job
from shared.adapters.lake import LocalLake
from shared.alarm_evaluation import Datapoint, evaluate
from shared.alarms import QUALITY_DROP_METRIC, QUALITY_NAMESPACE, alarm
from shared.capture import CapturePolicy, CaptureWriter
from shared.lake_writers import ingest_capture
from shared.quality_jobs import OUTCOMES_PREFIX, QualityJobConfig
from tests.aws_fakes import FakeLambdaContext, offline_credentials
from tests.integration.test_batch_lake_aws import RecordingLauncher
from tests.integration.test_model_quality import DAY1, DAY2, scored_day

REGION: Final = "eu-west-1"
ACCOUNT: Final = "123456789012"
BUCKET: Final = "claims-risk-data"
ENDPOINT: Final = "claims-risk"
CARD: Final = "models/current/manifest.json"
KEY: Final = f"{OUTCOMES_PREFIX}2026-03/investigations closed.csv"
CONFIG: Final = QualityJobConfig(
    image=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/claims-risk:abc",
    role_arn=f"arn:aws:iam::{ACCOUNT}:role/claims-risk-sagemaker",
    kms_key_arn=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    bucket=BUCKET,
    endpoint=ENDPOINT,
    job_prefix="claims-risk-dev",
    model_card_uri=f"s3://{BUCKET}/{CARD}",
    lake={
        "CLAIMS_RISK_LAKE_ROOT": f"s3://{BUCKET}/lake/",
        "CLAIMS_RISK_LAKE_DATABASE": "claims_risk_dev",
        "CLAIMS_RISK_LAKE_WORKGROUP": "claims-risk-dev",
    },
)
MANIFEST: Final = {
    "model_version": "m1",
    "metrics": {"test": {"precision": 0.80, "recall": 0.90, "false_negative_rate": 0.10, "roc_auc": 0.89}},
}


@pytest.fixture(scope="module")
def predictions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """Two days of captured predictions: day one as tested (recall 0.90), day two with half the
    high-risk claims missed (recall 0.50) once their outcomes are known."""
    capture = tmp_path_factory.mktemp("capture")
    writer = CaptureWriter(capture, CapturePolicy())
    labels = scored_day(writer, DAY1, "a", tp=36, fn=4, fp=9, tn=51)
    labels |= scored_day(writer, DAY2, "b", tp=20, fn=20, fp=5, tn=55)
    writer.close()
    return capture, labels


@pytest.fixture
def account(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, predictions: tuple[Path, dict[str, int]]
) -> Iterator[tuple[RecordingLauncher, LocalLake]]:
    """moto's S3 (the versioned data bucket, the serving model's card), SageMaker and CloudWatch; the
    trigger wired as deployed; a lake holding the endpoint's captured predictions."""
    offline_credentials(monkeypatch, REGION)
    for name in ("AWS_LAMBDA_FUNCTION_NAME", "publish_cloudwatch_metrics"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=BUCKET, Key=CARD, Body=json.dumps(MANIFEST).encode())
        lake = LocalLake(tmp_path / "lake")
        ingest_capture(predictions[0], lake)  # in AWS the hourly drift job flattens the capture
        launcher = RecordingLauncher()
        handler.wire(CONFIG, launcher)
        yield launcher, lake
        handler.wire()


def drop(body: bytes, key: str = KEY) -> dict[str, Any]:
    """Upload a labels file; S3's event for it, as EventBridge hands it to the trigger."""
    answer = boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key, Body=body)
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": "2026-12-01T09:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{BUCKET}"],
        "detail": {
            "version": "0",
            "bucket": {"name": BUCKET},
            "object": {
                "key": key.replace(" ", "+"),  # S3 sends keys URL-encoded
                "size": len(body),
                "etag": answer["ETag"].strip('"'),
                "version-id": answer["VersionId"],
                "sequencer": "617f08299329d189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": ACCOUNT,
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }


def labels_csv(labels: dict[str, int]) -> bytes:
    return ("claim_id,outcome\n" + "".join(f"{k},{v}\n" for k, v in labels.items())).encode()


def run_job(
    launcher: RecordingLauncher, lake: LocalLake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[int, str]:
    """The module SageMaker would run for the trigger's last request, with that request's environment
    (the lake a local folder instead of Athena): its exit code and exit message."""
    request = launcher.requests[-1]
    message = tmp_path / "output" / "message"
    message.parent.mkdir(parents=True, exist_ok=True)
    message.unlink(missing_ok=True)
    with monkeypatch.context() as patch:
        for name, value in request["Environment"].items():
            patch.setenv(name, value)
        patch.setenv("CLAIMS_RISK_LAKE_ROOT", str(lake.root))
        patch.delenv("CLAIMS_RISK_LAKE_DATABASE")
        code = quality_job.main([], message=message)
    return code, message.read_text(encoding="utf-8") if message.exists() else ""


def trigger(event: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = handler.lambda_handler(event, FakeLambdaContext("claims-risk-quality-trigger"))
    return answer


def published(name: str) -> list[Datapoint]:
    """What CloudWatch holds of a quality metric for the endpoint, one datapoint a minute."""
    now = dt.datetime.now(dt.UTC)
    answer = boto3.client("cloudwatch", region_name=REGION).get_metric_statistics(
        Namespace=QUALITY_NAMESPACE,
        MetricName=name,
        Dimensions=[{"Name": "Endpoint", "Value": ENDPOINT}],
        StartTime=now - dt.timedelta(hours=1),
        EndTime=now + dt.timedelta(minutes=5),
        Period=60,
        Statistics=["Maximum"],
    )
    points = sorted(answer["Datapoints"], key=lambda p: p["Timestamp"])
    return [Datapoint(p["Timestamp"].timestamp(), p["Maximum"]) for p in points]


def test_a_dropped_labels_file_is_loaded_once_judged_and_sets_off_the_alarm(
    account: tuple[RecordingLauncher, LocalLake],
    predictions: tuple[Path, dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    launcher, lake = account
    body = labels_csv(predictions[1])
    event = drop(body)
    first, again = trigger(event), trigger(event)  # EventBridge delivers at least once
    assert first["job_name"] == again["job_name"] and again["started"] == first["job_name"]
    assert [r["ProcessingJobName"] for r in launcher.requests] == [first["job_name"]] * 2  # refused once
    assert first["labels"] == f"s3://{BUCKET}/{KEY}"
    # A newer upload under the same key must not be what this job reads.
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=KEY, Body=b"claim_id,outcome\n")

    code, message = run_job(launcher, lake, monkeypatch, tmp_path)
    assert (code, message) == (0, "")
    load_id = hashlib.sha256(body).hexdigest()[:32]
    assert lake.partitions("outcomes") == [{"load_id": load_id}]
    loaded = lake.query("SELECT count(*) AS n, min(source_file) AS source FROM outcomes")
    assert loaded.to_dict("records") == [{"n": 200, "source": KEY}]
    runs = lake.partitions("monitoring_metrics")
    assert runs == [{"kind": "quality", "run_id": f"outcomes-{load_id}"}]

    [drop_point] = published(QUALITY_DROP_METRIC)
    assert drop_point.value == pytest.approx(0.90 - 0.50)  # day two's recall fell 0.40
    [recall] = published("quality_recall")
    assert recall.value == 0.5
    definition = alarm("model-quality")  # judged once its minute has passed, as CloudWatch does
    assert evaluate(definition, [drop_point], drop_point.timestamp + definition.period_s).state == "ALARM"

    # The same file uploaded again (a new version) is a re-run: its partitions replaced, not doubled.
    rerun = trigger(drop(body))
    assert rerun["job_name"] != first["job_name"]
    assert run_job(launcher, lake, monkeypatch, tmp_path) == (0, "")
    assert lake.partitions("outcomes") == [{"load_id": load_id}]
    assert lake.query("SELECT count(*) AS n FROM outcomes")["n"].tolist() == [200]
    assert lake.partitions("monitoring_metrics") == runs


def test_corrected_outcomes_clear_the_alarm(
    account: tuple[RecordingLauncher, LocalLake],
    predictions: tuple[Path, dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """On review, most of day two's missed claims were fine after all: recall is back within 0.10 of
    the test figure; the drop published is below the threshold and the alarm goes back to OK."""
    launcher, lake = account
    fixed = {**predictions[1], **{f"b-fn-{i}": 0 for i in range(2, 20)}}
    trigger(drop(labels_csv(fixed), f"{OUTCOMES_PREFIX}2026-03/reviewed.csv"))
    assert run_job(launcher, lake, monkeypatch, tmp_path) == (0, "")
    [drop_point] = published(QUALITY_DROP_METRIC)
    assert drop_point.value <= alarm("model-quality").threshold
    definition = alarm("model-quality")
    judged_at = drop_point.timestamp + definition.period_s
    assert evaluate(definition, [drop_point], judged_at, current="ALARM").state == "OK"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"claim_id,outcome\nX-1,1\nX-2,0\nX-3,1\n", "none of its 3 claims (e.g. X-1, X-2, X-3)"),
        (b"claim_id,reviewer,note\na-tp-0,ann,fine\n", "which column is the outcome"),
        (b"policy,outcome\nP-1,1\n", "a claim_id column"),
        (b"PAR1\x15\x04\x15\x00\xff\xfe\x00\x00", "not UTF-8 text"),
        (b"claim_id,outcome\na-tp-0,maybe\n", "line 2: an outcome is 1/0"),
    ],
    ids=["unknown-claims", "no-outcome-column", "no-claim-id", "not-csv", "bad-outcome"],
)
def test_a_bad_labels_file_is_refused_with_its_reason_and_nothing_is_kept(
    account: tuple[RecordingLauncher, LocalLake],
    predictions: tuple[Path, dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    body: bytes,
    said: str,
) -> None:
    launcher, lake = account
    # A good file first: what the lake holds must survive the bad one untouched.
    trigger(drop(labels_csv(predictions[1])))
    assert run_job(launcher, lake, monkeypatch, tmp_path)[0] == 0
    before = lake.query("SELECT load_id, claim_id, outcome FROM outcomes ORDER BY 1, 2")
    metrics_before = len(published(QUALITY_DROP_METRIC))

    bad_key = f"{OUTCOMES_PREFIX}2026-03/bad.csv"
    trigger(drop(body, bad_key))
    code, message = run_job(launcher, lake, monkeypatch, tmp_path)
    assert code == quality_job.EXIT_REFUSED
    assert said in message and bad_key in message and "Nothing of the file was kept" in message
    assert len(message.encode()) <= quality_job.MESSAGE_BYTES
    assert lake.query("SELECT load_id, claim_id, outcome FROM outcomes ORDER BY 1, 2").equals(before)
    assert len(published(QUALITY_DROP_METRIC)) == metrics_before  # no verdict from a refused file
    stored = boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key=bad_key)
    assert stored["Body"].read() == body  # the file stays where it was dropped


def test_a_job_that_cannot_read_the_models_card_fails_saying_so(
    account: tuple[RecordingLauncher, LocalLake],
    predictions: tuple[Path, dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    launcher, lake = account
    boto3.client("s3", region_name=REGION).delete_object(Bucket=BUCKET, Key=CARD)
    trigger(drop(labels_csv(predictions[1])))
    code, message = run_job(launcher, lake, monkeypatch, tmp_path)
    assert code == quality_job.EXIT_FAILED
    assert CARD in message and "Upload the file again once the cause is fixed" in message
    assert lake.partitions("outcomes") == []  # the baseline is read before anything is written
