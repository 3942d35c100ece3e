"""``claims-risk aws smoke``, offline: botocore's Stubber plays CloudFormation, Cognito, API Gateway,
Step Functions and SageMaker; moto plays S3 (with a stand-in for the transform job that writes the
outputs the real one writes); a local HTTP server on 127.0.0.1 plays Cognito's token endpoint and
the API. A fake clock stands for time, so no test waits or depends on timing.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from click.testing import CliRunner
from moto import mock_aws

from local import aws_smoke
from local.aws_smoke import Clients, SmokeOptions, SmokeRun, render, run_smoke
from local.cli import main
from shared.auth import PREDICT
from shared.ml.batch_scoring import LINE_CSV_COLUMNS
from shared.schema import EXAMPLE_CLAIM
from tests.aws_fakes import ACCOUNT, REGION, offline_credentials

STACK = "ClaimsRisk-test"
BUCKET = "claimsrisk-test-data"
POOL = f"{REGION}_AbCdEf123"
CLIENT_ID = "6v1claimsystemclient"
SECRET = "s3cr3t-of-the-claims-system"
KEY_ID = "k3y1d"
KEY_VALUE = "api-key-value-0123456789"
TOKEN = "eyJ.access.token"
MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:ClaimsRiskPipeline"
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
POLL = 15.0


# ---------------------------------------------------------------------------------------------
# The token endpoint and the API, on 127.0.0.1.


@dataclass
class FakeWeb:
    """What the fake token endpoint and API answer, and the requests they saw."""

    token_status: int = 200
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/prod/"  # API Gateway's stage URL ends with a slash

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth2/token"

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        self.seen.append((method, path, headers, body))
        basic = "Basic " + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
        if (method, path) == ("POST", "/oauth2/token"):
            form = urllib.parse.parse_qs(body.decode())
            if self.token_status != 200 or headers.get("authorization") != basic:
                return 400, {"error": "invalid_client"}
            assert form == {"grant_type": ["client_credentials"], "scope": [PREDICT]}
            return 200, {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        if (method, path) == ("GET", "/prod/health"):
            return 200, {"status": "healthy", "version": "1.0.0", "dependencies": {"model_endpoint": "e"}}
        if (method, path) == ("POST", "/prod/api/v1/predict"):
            if headers.get("authorization") != f"Bearer {TOKEN}" or headers.get("x-api-key") != KEY_VALUE:
                return 401, {"error": {"code": "unauthorized", "message": "no"}}
            claim = json.loads(body)
            return 200, {
                "claim_id": claim["claim_id"],
                "risk_level": "low",
                "risk_score": 0.08,
                "confidence": 0.92,
                "risk_factors": [{"factor": "claim_history", "importance": 0.41}],
                "model_version": "20261125.064008-xgboost-3c6d9b33",
            }
        return 404, {"error": {"code": "not_found", "message": path}}


@pytest.fixture
def web(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWeb]:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 is reached directly
    fake = FakeWeb()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            # Header names are case-insensitive (urllib sends "X-api-key"): kept in lower case here.
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, document = fake.answer(self.command, self.path, headers, body)
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Correlation-Id", "corr-123")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve  # noqa: N815 (http.server's names)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows what failed
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ---------------------------------------------------------------------------------------------
# AWS: stubbed clients, moto's S3, and a fake clock whose sleep lets the fake transform job run.


@dataclass
class World:
    clients: Clients
    stubs: dict[str, Stubber]
    transform_runs: bool = True
    now: float = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        if self.transform_runs:
            fake_transform_job(self.clients.s3)


def fake_transform_job(s3: Any) -> None:
    """What the trigger's job leaves: ``scored/<path>/<name>.out`` (the inference script's CSV, one line
    per row) and a part under ``rejected/<path>/`` for the rows that broke a rule."""
    for listed in s3.list_objects_v2(Bucket=BUCKET, Prefix="incoming/").get("Contents", []):
        key = listed["Key"]
        relative, name = key.removeprefix("incoming/"), key.rsplit("/", 1)[-1]
        rows = list(
            csv.DictReader(io.StringIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()))
        )
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(LINE_CSV_COLUMNS)
        rejected = []
        for row in rows:
            if float(row["claim_amount"]) <= 0:
                reason = "claim_amount: must be greater than 0"
                writer.writerow([row["claim_id"], "", "", "", "", "", reason])
                rejected.append({"claim_id": row["claim_id"], "reason": reason})
            else:
                writer.writerow([row["claim_id"], "low", 0.08, 0.92, "v1", "[]", ""])
        s3.put_object(Bucket=BUCKET, Key=f"scored/{relative}/{name}.out", Body=out.getvalue().encode())
        if rejected:
            body = "".join(json.dumps(r) + "\n" for r in rejected).encode()
            s3.put_object(Bucket=BUCKET, Key=f"rejected/{relative}/part-0.jsonl", Body=body)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    offline_credentials(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        stubbed = {
            name: boto3.client(service, region_name=REGION)  # type: ignore[call-overload]
            for name, service in (
                ("cloudformation", "cloudformation"),
                ("cognito", "cognito-idp"),
                ("apigateway", "apigateway"),
                ("stepfunctions", "stepfunctions"),
                ("sagemaker", "sagemaker"),
            )
        }
        stubs = {name: Stubber(client) for name, client in stubbed.items()}
        for stub in stubs.values():
            stub.activate()
        yield World(Clients(s3=s3, **stubbed), stubs)
        for stub in stubs.values():
            stub.deactivate()


def outputs(web: FakeWeb, *, without: str | None = None) -> list[dict[str, str]]:
    values = {
        "ApiUrl": web.api_url,
        "TokenUrl": web.token_url,
        "UserPoolId": POOL,
        "ClaimsSystemClientId": CLIENT_ID,
        "ClaimsSystemApiKeyId": KEY_ID,
        "StateMachineArn": MACHINE,
        "DataBucket": BUCKET,
        "OnCallTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:on-call",
    }
    return [{"OutputKey": k, "OutputValue": v} for k, v in values.items() if k != without]


def expect_credentials(world: World, web: FakeWeb, *, without: str | None = None) -> None:
    world.stubs["cloudformation"].add_response(
        "describe_stacks",
        {
            "Stacks": [
                {
                    "StackName": STACK,
                    "CreationTime": NOW,
                    "StackStatus": "UPDATE_COMPLETE",
                    "Outputs": outputs(web, without=without),
                }
            ]
        },
        {"StackName": STACK},
    )
    world.stubs["apigateway"].add_response(
        "get_api_key",
        {"id": KEY_ID, "name": "claimsrisk-test-claims-system", "enabled": True, "value": KEY_VALUE},
        {"apiKey": KEY_ID, "includeValue": True},
    )
    world.stubs["cognito"].add_response(
        "describe_user_pool_client",
        {"UserPoolClient": {"UserPoolId": POOL, "ClientId": CLIENT_ID, "ClientSecret": SECRET}},
        {"UserPoolId": POOL, "ClientId": CLIENT_ID},
    )


def history_event(number: int, kind: str, previous: int | None = None, **details: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"timestamp": NOW, "type": kind, "id": number, **details}
    if previous is not None:
        event["previousEventId"] = previous
    return event


def entered(number: int, previous: int, kind: str, name: str) -> dict[str, Any]:
    return history_event(number, kind, previous, stateEnteredEventDetails={"name": name})


def expect_execution(world: World, status: str, events: list[dict[str, Any]], **ended: Any) -> str:
    """StartExecution with {}, one look while it runs, one at its end, then its history."""
    execution = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:ClaimsRiskPipeline:smoke-test-run"
    sfn = world.stubs["stepfunctions"]
    sfn.add_response(
        "start_execution",
        {"executionArn": execution, "startDate": NOW},
        {"stateMachineArn": MACHINE, "name": "smoke-test-run", "input": "{}"},
    )
    described = {"executionArn": execution, "stateMachineArn": MACHINE, "startDate": NOW}
    sfn.add_response("describe_execution", {**described, "status": "RUNNING"}, {"executionArn": execution})
    sfn.add_response(
        "describe_execution", {**described, "status": status, **ended}, {"executionArn": execution}
    )
    sfn.add_response(
        "get_execution_history", {"events": events}, {"executionArn": execution, "maxResults": 1000}
    )
    return execution


def smoke(world: World, **options: Any) -> aws_smoke.SmokeReport:
    run = SmokeRun(
        STACK,
        world.clients,
        SmokeOptions(poll_s=POLL, **options),
        sleep=world.sleep,
        clock=world.clock,
        run_id="test-run",
    )
    report = run_smoke(run)
    for stub in world.stubs.values():
        stub.assert_no_pending_responses()  # every AWS call the test expected was made
    return report


def by_name(report: aws_smoke.SmokeReport) -> dict[str, aws_smoke.CheckResult]:
    return {r.name: r for r in report.results}


# ---------------------------------------------------------------------------------------------


def test_a_working_stack_passes_every_check_each_reported_with_its_time(world: World, web: FakeWeb) -> None:
    expect_credentials(world, web)
    expect_execution(
        world,
        "SUCCEEDED",
        [
            history_event(1, "ExecutionStarted"),
            entered(2, 1, "TaskStateEntered", "validate"),
            history_event(3, "TaskStateExited", 2),
            entered(4, 3, "SucceedStateEntered", "promoted"),
            history_event(5, "ExecutionSucceeded", 4),
        ],
    )

    report = smoke(world)

    results = by_name(report)
    assert [r.name for r in report.results] == [
        "stack",
        "api key",
        "token",
        "health",
        "predict",
        "pipeline",
        "batch",
    ]
    assert report.ok and report.exit_code == 0, [render(r) for r in report.results]
    assert results["pipeline"].seconds == POLL  # one look while running, one poll later it had ended
    assert results["pipeline"].detail == "smoke-test-run SUCCEEDED, ended in state 'promoted'"
    assert results["batch"].seconds == POLL
    assert results["stack"].seconds == 0.0
    assert results["predict"].detail == "CLM-2024-001: low (0.080), model 20261125.064008-xgboost-3c6d9b33"
    assert render(results["pipeline"]) == (
        "✔ pipeline      15.0s  smoke-test-run SUCCEEDED, ended in state 'promoted'"
    )
    assert "healthy" in results["health"].detail and results["token"].ok

    # The API was called as the claims system calls it: a bearer token, the key, the example claim.
    [predict] = [s for s in web.seen if s[1] == "/prod/api/v1/predict"]
    assert predict[2]["authorization"] == f"Bearer {TOKEN}" and predict[2]["x-api-key"] == KEY_VALUE
    assert json.loads(predict[3]) == EXAMPLE_CLAIM
    assert all(s[2]["user-agent"].startswith("claims-risk-smoke/") for s in web.seen)

    # The dropped file: under incoming/smoke/, its columns reversed, one good and one bad claim.
    body = world.clients.s3.get_object(Bucket=BUCKET, Key="incoming/smoke/test-run.csv")["Body"].read()
    header, *rows = list(csv.reader(io.StringIO(body.decode())))
    assert header == list(reversed(list(EXAMPLE_CLAIM)))
    assert [row[header.index("claim_id")] for row in rows] == ["SMOKE-test-run-OK", "SMOKE-test-run-BAD"]
    assert "scored/smoke/test-run.csv/test-run.csv.out" in results["batch"].detail
    assert "SMOKE-test-run-BAD rejected: claim_amount" in results["batch"].detail


def test_a_failed_execution_fails_the_run_and_names_the_state_that_failed(world: World, web: FakeWeb) -> None:
    expect_credentials(world, web)
    # train failed; its Catch sent the run to notify, then to the Fail state (as step_functions/ builds it).
    expect_execution(
        world,
        "FAILED",
        [
            history_event(1, "ExecutionStarted"),
            entered(2, 1, "TaskStateEntered", "train"),
            history_event(3, "TaskScheduled", 2),
            history_event(4, "TaskStarted", 3),
            history_event(
                5,
                "TaskFailed",
                4,
                taskFailedEventDetails={
                    "resource": "createTrainingJob.sync",
                    "resourceType": "sagemaker",
                    "error": "SageMaker.AmazonSageMakerException",
                    "cause": "ResourceLimitExceeded: ml.m5.xlarge for training job usage is 0",
                },
            ),
            entered(6, 5, "TaskStateEntered", "notify"),
            history_event(7, "TaskStateExited", 6),
            entered(8, 7, "FailStateEntered", "failed"),
            history_event(9, "ExecutionFailed", 8, executionFailedEventDetails={"error": "PipelineFailed"}),
        ],
        error="PipelineFailed",
    )

    report = smoke(world, skip=frozenset({"batch"}))

    pipeline = by_name(report)["pipeline"]
    assert not pipeline.ok and report.exit_code == 1
    assert pipeline.detail == (
        "smoke-test-run FAILED in state 'train' (TaskFailed): SageMaker.AmazonSageMakerException: "
        "ResourceLimitExceeded: ml.m5.xlarge for training job usage is 0"
    )
    assert pipeline.seconds == POLL
    assert by_name(report)["batch"].skipped and by_name(report)["predict"].ok  # the others still ran


def test_a_missing_output_is_named_and_fails_the_command(
    world: World, web: FakeWeb, monkeypatch: pytest.MonkeyPatch
) -> None:
    expect_credentials(world, web, without="StateMachineArn")
    monkeypatch.setattr(Clients, "from_session", classmethod(lambda cls, profile, region: world.clients))

    answer = CliRunner().invoke(main, ["aws", "smoke", "--stack", STACK, "--skip", "batch"])

    assert answer.exit_code == 1, answer.output
    # The report on stdout; the "… waiting" notes (stderr) are mixed in by CliRunner: left out here.
    lines = [line for line in answer.output.splitlines() if not line.startswith("…")]
    assert lines[0].startswith("✘ stack ") and lines[0].endswith("missing outputs: StateMachineArn")
    [pipeline] = [line for line in lines if line.startswith("✘ pipeline")]
    assert pipeline.endswith(f"the stack {STACK} has no output StateMachineArn")
    assert any(line.startswith("✔ predict ") for line in lines)
    assert any(line.startswith("- batch ") and "skipped" in line for line in lines)
    assert lines[-1] == f"{STACK}: failed: stack, pipeline"
    assert len(lines) == 8
    for line in lines[:-1]:  # every check: its mark, its name, its time, what it found
        assert re.fullmatch(r"[✔✘-] [a-z ]+ +\d+\.\ds  \S.*", line), line


def test_the_json_report_lists_every_check_with_ok_and_seconds(
    world: World, web: FakeWeb, monkeypatch: pytest.MonkeyPatch
) -> None:
    expect_credentials(world, web)
    monkeypatch.setattr(Clients, "from_session", classmethod(lambda cls, profile, region: world.clients))

    args = ["aws", "smoke", "--stack", STACK, "--skip", "pipeline", "--skip", "batch", "--json"]
    answer = CliRunner().invoke(main, args)

    assert answer.exit_code == 0, answer.output
    report = json.loads(answer.output)
    assert report["ok"] is True and report["stack"] == STACK
    assert [(c["name"], c["ok"]) for c in report["checks"]] == [
        ("stack", True),
        ("api key", True),
        ("token", True),
        ("health", True),
        ("predict", True),
        ("pipeline", True),
        ("batch", True),
    ]
    assert all(isinstance(c["seconds"], float) and c["detail"] for c in report["checks"])


def test_a_refused_token_is_reported_and_the_calls_that_need_it_are_not_made(
    world: World, web: FakeWeb
) -> None:
    expect_credentials(world, web)
    web.token_status = 400

    report = smoke(world, skip=frozenset({"pipeline", "batch"}))

    results = by_name(report)
    assert results["token"].detail == (
        'the token endpoint refused: HTTP 400 (correlation id corr-123): {"error": "invalid_client"}'
    )
    assert results["predict"].detail == "not run: no token (see above)"
    assert results["health"].ok  # public: no token needed
    assert not any(s[1] == "/prod/api/v1/predict" for s in web.seen)
    assert report.exit_code == 1


def test_a_drop_that_is_never_scored_times_out_with_what_sagemaker_says(world: World, web: FakeWeb) -> None:
    expect_credentials(world, web)
    world.transform_runs = False
    world.stubs["sagemaker"].add_response(
        "describe_transform_job",
        {
            "TransformJobName": "claims-batch-test-run-0123456789ab",
            "TransformJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:transform-job/claims-batch-test-run",
            "TransformJobStatus": "Failed",
            "FailureReason": "ClientError: See job logs for more information",
            "ModelName": "claims-risk-model",
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/k"}}
            },
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "CreationTime": NOW,
        },
        {"TransformJobName": ANY},
    )

    report = smoke(world, skip=frozenset({"pipeline"}), batch_timeout_s=100.0)

    batch = by_name(report)["batch"]
    assert not batch.ok and report.exit_code == 1
    assert batch.seconds == 100.0  # waited to the timeout, in polls of 15 s, and no longer
    assert batch.detail.startswith(
        "nothing under scored/smoke/test-run.csv/ and rejected/smoke/test-run.csv/ after 100 s; "
    )
    assert batch.detail.endswith("is Failed: ClientError: See job logs for more information")
