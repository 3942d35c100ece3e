"""In AWS, a dropped file's scored and rejected rows reach the claims lake: once, in the file's own
partition, replaced by a re-run, and the same rows the local drop folder writes for the same file.

Everything runs in process against moto (S3, Glue, SageMaker, DynamoDB): the trigger starts the
transform job for the dropped CSV; the transform itself is played as SageMaker runs it (the file cut
into mini-batches at line ends, each through the inference script with the job's environment, the
answers assembled into ``<file>.out``); SageMaker's Completed event (the developer guide's example
shape, "Events that Amazon SageMaker AI sends to Amazon EventBridge") goes to the trigger, which
starts the lake job; the lake job's module then runs with that job's environment, through the real
AWS adapters (awswrangler writing Parquet to moto's S3 and registering the partitions in its Glue).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import awswrangler as wr
import boto3
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from lambdas.batch_trigger import handler
from sagemaker_jobs.inference import inference
from sagemaker_jobs.processing import batch_lake
from shared.adapters.lake import LocalLake
from shared.adapters.processing_jobs import SageMakerProcessingLauncher
from shared.ml.model import RiskModel
from shared.ml.synthetic import generate_claims, write_claims

# The trigger's moto account (the fixture ``aws``, which pytest finds by this import) and helpers.
from tests.integration.test_batch_trigger import BUCKET, REGION, aws, invoke, put  # noqa: F401
from tests.integration.test_dropbox_lake import drop, watch_once

KEY: Final = "incoming/2026/12/claims.csv"
DATABASE: Final = "claims_risk_dev"
LAKE: Final = {
    "CLAIMS_RISK_LAKE_ROOT": f"s3://{BUCKET}/lake/",
    "CLAIMS_RISK_LAKE_DATABASE": DATABASE,
    "CLAIMS_RISK_LAKE_WORKGROUP": "claims-risk-dev",
}
LINES_PER_MINI_BATCH: Final = 40
SCORED: Final = ["row_number", "claim_id", "risk_level", "risk_score", "confidence", "model_version"]


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """300 generated claims as CSV, the 7th with an amount no claim has."""
    path = write_claims(generate_claims(300, seed=21), tmp_path_factory.mktemp("claims") / "claims.csv")
    header, *lines = path.read_bytes().splitlines()
    cells = lines[6].split(b",")
    cells[header.split(b",").index(b"claim_amount")] = b"-40"
    lines[6] = b",".join(cells)
    return b"\n".join([header, *lines]) + b"\n"


class RecordingLauncher(SageMakerProcessingLauncher):
    """The real launcher against moto's SageMaker, which keeps no job's Environment (kept here) and,
    unlike SageMaker, takes a second job of one name: that refusal is SageMaker's, added here in its
    words ("Job name must be unique within an AWS account and region ...")."""

    def __init__(self) -> None:
        client = boto3.client("sagemaker", region_name=REGION)
        event = "before-parameter-build.sagemaker.CreateProcessingJob"
        client.meta.events.register(event, self._refuse_a_second)
        super().__init__(client)
        self.requests: list[dict[str, Any]] = []

    def _refuse_a_second(self, params: dict[str, Any], **_: Any) -> None:
        name = params["ProcessingJobName"]
        if any(r["ProcessingJobName"] == name for r in self.requests[:-1]):
            message = (
                "Job name must be unique within an AWS account and region, and a job with this name "
                f"already exists (arn:aws:sagemaker:{REGION}:123456789012:processing-job/{name})"
            )
            error = {"Error": {"Code": "ValidationException", "Message": message}}
            raise ClientError(error, "CreateProcessingJob")  # type: ignore[arg-type]

    def start(self, request: Mapping[str, Any]) -> str:
        self.requests.append(copy.deepcopy(dict(request)))
        return super().start(request)


@pytest.fixture
def lake_account(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingLauncher]:  # noqa: F811
    """The trigger as deployed for the lake job, and the stage's Glue database."""
    for name, value in {
        "CLAIMS_RISK_IMAGE_URI": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/claims-risk:abc",
        "CLAIMS_RISK_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/claims-risk-sagemaker",
        **LAKE,
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("glue", region_name=REGION).create_database(DatabaseInput={"Name": DATABASE})
    launcher = RecordingLauncher()
    handler.use_processing_launcher(launcher)
    yield launcher
    handler.use_processing_launcher(None)


def play_transform(
    job: Mapping[str, Any], body: bytes, model: RiskModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SageMaker's part: mini-batches of whole lines through the inference script with the job's
    environment; each answer followed by a line end (AssembleWith=Line); the .out written once whole."""
    with monkeypatch.context() as patch:
        for variable, value in job["Environment"].items():
            patch.setenv(variable, value)
        lines = body.splitlines(keepends=True)
        answers = []
        for start in range(0, len(lines), LINES_PER_MINI_BATCH):
            batch = b"".join(lines[start : start + LINES_PER_MINI_BATCH])
            content_type, accept = job["TransformInput"]["ContentType"], job["TransformOutput"]["Accept"]
            answer, _ = inference.handle(model, batch, content_type, accept)
            answers.append(answer + b"\n")
    output = job["TransformOutput"]["S3OutputPath"] + KEY.rsplit("/", 1)[-1] + ".out"
    bucket, key = output.removeprefix("s3://").split("/", 1)
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=b"".join(answers))


def completed_event(job: Mapping[str, Any], tags: list[dict[str, str]]) -> dict[str, Any]:
    """SageMaker's event for the job, in the developer guide's shape: ``detail`` is the job's
    description (times as text) with its tags as a map."""
    detail = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in job.items()}
    detail.pop("ResponseMetadata", None)
    return {
        "version": "0",
        "id": "844e2571-85d4-695f-b930-0153b71dcb42",
        "detail-type": "SageMaker Transform Job State Change",
        "source": "aws.sagemaker",
        "account": "123456789012",
        "time": "2026-12-01T09:26:13Z",
        "region": REGION,
        "resources": [job["TransformJobArn"]],
        "detail": {**detail, "Tags": {t["Key"]: t["Value"] for t in tags}},
    }


def run_lake_job(request: Mapping[str, Any], work: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """The processing job's container: its entry point with the request's environment."""
    with monkeypatch.context() as patch:
        for variable, value in request["Environment"].items():
            patch.setenv(variable, value)
        return batch_lake.main(["--work-dir", str(work)])


def lake_table(table: str) -> pd.DataFrame:
    frame: pd.DataFrame = wr.s3.read_parquet(f"s3://{BUCKET}/lake/{table}/", dataset=True)
    return frame.sort_values("row_number").reset_index(drop=True)


def partition_objects(table: str) -> list[str]:
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET, Prefix=f"lake/{table}/")
    return [o["Key"] for o in listed.get("Contents", [])]


@pytest.mark.slow
def test_a_completed_transform_lands_in_the_lake_once_and_a_rerun_replaces_it(
    lake_account: RecordingLauncher,
    aws: dict[str, Any],  # noqa: F811
    content: bytes,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    [transform] = invoke(put(aws, KEY, content))["started"]
    job = aws["sagemaker"].describe_transform_job(TransformJobName=transform)
    play_transform(job, content, RiskModel.load(model_dir), monkeypatch)

    tags = aws["sagemaker"].list_tags(ResourceArn=job["TransformJobArn"])["Tags"]
    event = completed_event(job, tags)
    first, repeated = invoke(event), invoke(event)  # SageMaker may send an event more than once
    assert (
        first["lake_job"] == repeated["lake_job"] == "claims-lake-" + transform.removeprefix("claims-batch-")
    )
    assert repeated["job"] == first["lake_job"]  # SageMaker refused the second: the first stands
    request = lake_account.requests[0]
    assert run_lake_job(request, tmp_path / "first", monkeypatch) == 0

    batch_id = hashlib.sha256(content).hexdigest()[:32]  # the drop folder's partition for these bytes
    scored, rejected = lake_table("batch_scored"), lake_table("rejected_rows")
    assert len(scored) == 299 and set(scored["batch_id"]) == {batch_id}
    assert set(scored["source_file"]) == {"2026/12/claims.csv"}
    [refused] = rejected.to_dict("records")
    data_lines = content.decode().splitlines()[1:]
    assert (
        refused["row_number"] == 7 and refused["raw"] == data_lines[6] and "claim_amount" in refused["reason"]
    )
    assert (refused["stage"], refused["batch_id"]) == ("batch", batch_id)
    glue = boto3.client("glue", region_name=REGION)
    assert {t["Name"] for t in glue.get_tables(DatabaseName=DATABASE)["TableList"]} >= {
        "batch_scored",
        "rejected_rows",
    }

    # A re-run (an operator's, through the trigger) replaces the partitions: one copy of each row.
    before = partition_objects("batch_scored")
    rerun = invoke({"lake_rerun": {"transform_job": transform}})
    assert rerun["lake_job"] == f"{first['lake_job']}-r2"
    assert run_lake_job(lake_account.requests[-1], tmp_path / "again", monkeypatch) == 0
    assert len(lake_table("batch_scored")) == 299 and len(lake_table("rejected_rows")) == 1
    assert len(partition_objects("batch_scored")) == len(before) == 1

    # The same file through the local drop folder: the same rows in the same partition.
    local = LocalLake(tmp_path / "local-lake")
    drop(tmp_path / "dropbox", "claims.csv", content)
    [summary] = watch_once(tmp_path / "dropbox", model_dir, local)
    assert summary["lake"] == {"batch_id": batch_id, "batch_scored": 299, "rejected_rows": 1}
    local_scored = local.query("SELECT * FROM batch_scored ORDER BY row_number")
    pd.testing.assert_frame_equal(scored[SCORED], local_scored[SCORED], check_dtype=False)
    factors = [json.loads(f) for f in scored["risk_factors"]]
    assert factors == [json.loads(f) for f in local_scored["risk_factors"]]
    local_rejected = local.query("SELECT row_number, claim_id, reason, raw FROM rejected_rows")
    assert local_rejected.to_dict("records") == [
        {k: refused[k] for k in ("row_number", "claim_id", "reason", "raw")}
    ]


def test_a_lake_job_that_cannot_write_fails_and_the_scored_output_stays(
    lake_account: RecordingLauncher,
    aws: dict[str, Any],  # noqa: F811
    content: bytes,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [transform] = invoke(put(aws, KEY, content))["started"]
    job = aws["sagemaker"].describe_transform_job(TransformJobName=transform)
    out_key = job["TransformOutput"]["S3OutputPath"].removeprefix(f"s3://{BUCKET}/") + "claims.csv.out"
    aws["s3"].put_object(Bucket=BUCKET, Key=out_key, Body=b"truncated\n")  # not the file's answers
    answer = invoke(
        completed_event(job, aws["sagemaker"].list_tags(ResourceArn=job["TransformJobArn"])["Tags"])
    )
    request = handler._Wiring.processing.requests[0]  # type: ignore[union-attr]
    assert answer["lake_job"] == request["ProcessingJobName"]
    assert run_lake_job(request, tmp_path, monkeypatch) == batch_lake.EXIT_NOT_WRITTEN
    assert "FAILED" in capsys.readouterr().err  # the job ends Failed: EventBridge tells on-call
    assert partition_objects("batch_scored") == []  # nothing half-written
    assert aws["s3"].get_object(Bucket=BUCKET, Key=out_key)["Body"].read() == b"truncated\n"
