"""``claims-risk aws smoke --stack ClaimsRisk-<stage>``: is a deployed stack really working?

What a user runs after ``cdk deploy``. It reads the stack's outputs, gets a token as the claims
system does (client credentials at ``TokenUrl``, the usage plan's API key), calls ``/health``,
scores the example claim, starts the retraining state machine with ``{}`` and follows it to the
end, then drops a small CSV into ``incoming/`` and waits for its ``scored/`` and ``rejected/``
outputs. Each check is reported with its time; the exit code is 1 when any check failed.

Operator tooling for this machine's CLI only: the product never imports it. Every AWS call goes
through the clients in :class:`Clients` (tests pass stubbed ones), HTTP through the standard library.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import click

# The stack's outputs the checks read (cdk/stack.py's CfnOutput ids).
API_URL: Final = "ApiUrl"
TOKEN_URL: Final = "TokenUrl"
USER_POOL: Final = "UserPoolId"
CLIENT_ID: Final = "ClaimsSystemClientId"
API_KEY_ID: Final = "ClaimsSystemApiKeyId"
STATE_MACHINE: Final = "StateMachineArn"
DATA_BUCKET: Final = "DataBucket"
NEEDED_OUTPUTS: Final = (API_URL, TOKEN_URL, USER_POOL, CLIENT_ID, API_KEY_ID, STATE_MACHINE, DATA_BUCKET)
# CloudFormation's stack states in which the stack as deployed is the one last asked for.
_DEPLOYED: Final = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})
# DescribeExecution's status while the run goes on (botocore's stepfunctions model, ExecutionStatus).
_RUNNING: Final = "RUNNING"
USER_AGENT: Final = "claims-risk-smoke/1"  # WAF's common rule set blocks requests without one
SMOKE_FOLDER: Final = "smoke/"  # below incoming/, scored/ and rejected/
SKIPPABLE: Final = ("health", "predict", "pipeline", "batch")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    seconds: float
    detail: str
    skipped: bool = False


@dataclass(frozen=True)
class SmokeOptions:
    http_timeout_s: float = 30.0
    pipeline_timeout_s: float = 3 * 3600.0  # tuning across three families takes the better part of it
    batch_timeout_s: float = 45 * 60.0  # a transform job spends minutes getting its instances
    poll_s: float = 15.0
    skip: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Clients:
    """The AWS clients the checks use; :meth:`from_session` builds real ones."""

    cloudformation: Any
    cognito: Any
    apigateway: Any
    stepfunctions: Any
    s3: Any
    sagemaker: Any

    @classmethod
    def from_session(cls, profile: str | None = None, region: str | None = None) -> Clients:
        import boto3  # only when the command runs: the CLI starts without it

        session = boto3.Session(profile_name=profile, region_name=region)
        return cls(
            cloudformation=session.client("cloudformation"),
            cognito=session.client("cognito-idp"),
            apigateway=session.client("apigateway"),
            stepfunctions=session.client("stepfunctions"),
            s3=session.client("s3"),
            sagemaker=session.client("sagemaker"),
        )


class CheckFailed(Exception):
    """The check ran and found the system wrong; the message says what."""


class NotRun(Exception):
    """An earlier check this one needs did not give what it needs."""


@dataclass
class SmokeRun:
    """What the checks share: the stack's outputs, then the credentials."""

    stack: str
    clients: Clients
    options: SmokeOptions = field(default_factory=SmokeOptions)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    run_id: str = field(
        default_factory=lambda: f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    )
    outputs: dict[str, str] | None = None
    token: str | None = None
    api_key: str | None = None

    def output(self, name: str) -> str:
        if self.outputs is None:
            raise NotRun("the stack's outputs could not be read")
        if not self.outputs.get(name):
            raise CheckFailed(f"the stack {self.stack} has no output {name}")
        return self.outputs[name]

    def credentials(self) -> dict[str, str]:
        if self.token is None or self.api_key is None:
            missing = " and ".join(n for n, v in (("token", self.token), ("api key", self.api_key)) if not v)
            raise NotRun(f"no {missing} (see above)")
        return {"Authorization": f"Bearer {self.token}", "x-api-key": self.api_key}

    def wait_until(self, deadline: float, done: Callable[[], bool]) -> bool:
        """Poll ``done`` every ``poll_s`` until it holds (True) or ``deadline`` passes (False)."""
        while True:
            if done():
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(min(self.options.poll_s, max(deadline - self.clock(), 0.0)))


Check = Callable[[SmokeRun], str]


def timed(name: str, check: Check, run: SmokeRun) -> CheckResult:
    """Run one check: its time, and its failure (any error) as the result's detail."""
    started = run.clock()

    def result(ok: bool, detail: str) -> CheckResult:
        return CheckResult(name, ok, round(run.clock() - started, 3), detail)

    try:
        return result(True, check(run))
    except NotRun as why:
        return result(False, f"not run: {why}")
    except CheckFailed as failure:
        return result(False, str(failure))
    except Exception as error:  # any error is this check's failure; the others still run
        return result(False, f"{type(error).__name__}: {error}")


# ---------------------------------------------------------------------------------------------
# HTTP, with the standard library.


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise CheckFailed(f"HTTP {self.status} with a body that is not JSON: {self.excerpt()}") from None

    def excerpt(self) -> str:
        return self.body[:300].decode("utf-8", errors="replace")

    def failure(self, what: str) -> CheckFailed:
        correlation = self.headers.get("X-Correlation-Id") or self.headers.get("x-amzn-RequestId")
        where = f" (correlation id {correlation})" if correlation else ""
        return CheckFailed(f"{what}: HTTP {self.status}{where}: {self.excerpt()}")


def http(
    method: str,
    url: str,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> HttpAnswer:
    if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise CheckFailed(f"not an HTTP URL: {url!r}")
    request = urllib.request.Request(
        url, data=body, method=method, headers={"User-Agent": USER_AGENT, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # the scheme is checked above
            return HttpAnswer(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:  # an answer all the same: its status and body are the news
        with error:
            return HttpAnswer(error.code, dict(error.headers.items()), error.read())


def api_url(run: SmokeRun, path: str) -> str:
    # ApiUrl is the stage's URL and ends with a slash (API Gateway's RestApi.url).
    return run.output(API_URL).rstrip("/") + "/" + path.lstrip("/")


# ---------------------------------------------------------------------------------------------
# The checks, in the order they run.


def check_stack(run: SmokeRun) -> str:
    """DescribeStacks: the stack is deployed and has every output the other checks read."""
    [stack] = run.clients.cloudformation.describe_stacks(StackName=run.stack)["Stacks"]
    run.outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}
    status = str(stack.get("StackStatus", ""))
    missing = [name for name in NEEDED_OUTPUTS if not run.outputs.get(name)]
    problems = []
    if status not in _DEPLOYED:
        problems.append(f"status {status}: {stack.get('StackStatusReason') or 'no reason given'}")
    if missing:
        problems.append(f"missing outputs: {', '.join(missing)}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"{status}, {len(run.outputs)} outputs"


def check_api_key(run: SmokeRun) -> str:
    """GetApiKey with its value: the claims system's usage-plan key."""
    key = run.clients.apigateway.get_api_key(apiKey=run.output(API_KEY_ID), includeValue=True)
    if not key.get("enabled", False):
        raise CheckFailed(f"the API key {key.get('name', key.get('id'))} is disabled")
    if not key.get("value"):
        raise CheckFailed("GetApiKey returned no value (is apigateway:GET on the key allowed?)")
    run.api_key = str(key["value"])
    return f"key {key.get('name', key.get('id'))} enabled"


def check_token(run: SmokeRun) -> str:
    """The client-credentials grant at TokenUrl, with the machine client's id and secret.

    Cognito's token endpoint (https://docs.aws.amazon.com/cognito/latest/developerguide/token-endpoint.html):
    a form-encoded POST, the client authenticated with HTTP Basic (id:secret).
    """
    from shared.auth import PREDICT

    client_id = run.output(CLIENT_ID)
    described = run.clients.cognito.describe_user_pool_client(
        UserPoolId=run.output(USER_POOL), ClientId=client_id
    )["UserPoolClient"]
    secret = described.get("ClientSecret")
    if not secret:
        raise CheckFailed(f"the app client {client_id} has no secret: it cannot use client credentials")
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")
    answer = http(
        "POST",
        run.output(TOKEN_URL),
        timeout=run.options.http_timeout_s,
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        body=urllib.parse.urlencode({"grant_type": "client_credentials", "scope": PREDICT}).encode(),
    )
    if answer.status != 200:
        raise answer.failure("the token endpoint refused")
    granted = answer.json()
    if not granted.get("access_token"):
        raise CheckFailed(f"the token endpoint answered without an access token: {answer.excerpt()}")
    run.token = str(granted["access_token"])
    return f"access token for {granted.get('scope', PREDICT)}, valid {granted.get('expires_in', '?')} s"


def check_health(run: SmokeRun) -> str:
    answer = http("GET", api_url(run, "health"), timeout=run.options.http_timeout_s)
    if answer.status != 200:
        raise answer.failure("GET /health")
    health = answer.json()
    detail = f"{health.get('status')}, version {health.get('version')}, {health.get('dependencies', {})}"
    if health.get("status") != "healthy":
        raise CheckFailed(detail)
    return detail


def check_predict(run: SmokeRun) -> str:
    """POST /api/v1/predict with the example claim, as the claims system calls it."""
    from shared.schema import EXAMPLE_CLAIM

    headers = {**run.credentials(), "Content-Type": "application/json"}
    answer = http(
        "POST",
        api_url(run, "api/v1/predict"),
        timeout=run.options.http_timeout_s,
        headers=headers,
        body=json.dumps(EXAMPLE_CLAIM).encode(),
    )
    if answer.status != 200:
        raise answer.failure("POST /api/v1/predict")
    prediction = answer.json()
    score = prediction.get("risk_score")
    if (
        prediction.get("claim_id") != EXAMPLE_CLAIM["claim_id"]
        or prediction.get("risk_level") not in ("low", "high")
        or not isinstance(score, int | float)
        or not 0 <= score <= 1
        or not prediction.get("risk_factors")
    ):
        raise CheckFailed(f"not a prediction of {EXAMPLE_CLAIM['claim_id']}: {answer.excerpt()}")
    return (
        f"{prediction['claim_id']}: {prediction['risk_level']} ({score:.3f}), "
        f"model {prediction.get('model_version')}"
    )


def check_pipeline(run: SmokeRun) -> str:
    """StartExecution with ``{}`` (what the console's start does), then DescribeExecution until it ends."""
    machine = run.output(STATE_MACHINE)
    sfn = run.clients.stepfunctions
    # An execution name is 1 to 80 characters (botocore's stepfunctions model, Name).
    started = sfn.start_execution(stateMachineArn=machine, name=f"smoke-{run.run_id}"[:80], input="{}")
    execution = started["executionArn"]
    deadline = run.clock() + run.options.pipeline_timeout_s
    described: dict[str, Any] = {}

    def ended() -> bool:
        described.update(sfn.describe_execution(executionArn=execution))
        return described.get("status") != _RUNNING

    name = execution.rsplit(":", 1)[-1]
    if not run.wait_until(deadline, ended):
        raise CheckFailed(
            f"{name} still RUNNING after {run.options.pipeline_timeout_s:.0f} s (left running; "
            "--pipeline-timeout waits longer)"
        )
    status = described.get("status")
    last_state, failure = execution_story(sfn, execution)
    if status != "SUCCEEDED":
        why = failure or _error_text(described.get("error"), described.get("cause"))
        raise CheckFailed(f"{name} {status}{why}")
    return f"{name} SUCCEEDED" + (f", ended in state '{last_state}'" if last_state else "")


def execution_story(sfn: Any, execution: str) -> tuple[str | None, str]:
    """From GetExecutionHistory: the last state entered, and the last state that failed with its
    error and cause. A Catch may have sent the run on to notify and Fail, and a Retry may have
    recovered an earlier failure: the last failure before the end is the one that ended the run."""
    events = list(_history(sfn, execution))
    by_id = {event["id"]: event for event in events}
    last_state = None
    for event in events:
        if event["type"].endswith("StateEntered"):
            last_state = event.get("stateEnteredEventDetails", {}).get("name")
    for event in reversed(events):
        kind = event["type"]
        if kind.startswith("Execution") or not kind.endswith(("Failed", "TimedOut", "Aborted")):
            continue
        details: dict[str, Any] = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
        state = _entered_state(event, by_id)
        where = f" in state '{state}'" if state else ""
        return last_state, f"{where} ({kind}){_error_text(details.get('error'), details.get('cause'))}"
    return last_state, ""


def _history(sfn: Any, execution: str) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        page = sfn.get_execution_history(
            executionArn=execution, maxResults=1000, **({"nextToken": token} if token else {})
        )
        yield from page.get("events", [])
        token = page.get("nextToken")
        if not token:
            return


def _entered_state(event: dict[str, Any], by_id: Mapping[int, dict[str, Any]]) -> str | None:
    """The state a history event belongs to: back along previousEventId to its ``…StateEntered``."""
    current: dict[str, Any] | None = event
    for _ in range(len(by_id)):
        if current is None:
            return None
        if current["type"].endswith("StateEntered"):
            name = current.get("stateEnteredEventDetails", {}).get("name")
            return str(name) if name else None
        current = by_id.get(current.get("previousEventId", -1))
    return None


def _error_text(error: Any, cause: Any) -> str:
    text = ": ".join(str(p) for p in (error, cause) if p)
    return f": {text[:500]}" if text else ""


def smoke_file(run_id: str) -> tuple[bytes, list[str]]:
    """A small claims CSV (the example claim and one that breaks a rule), its columns reversed: the
    trigger passes a CSV's own column order to the job. The claim ids, in the file's order."""
    from shared.schema import EXAMPLE_CLAIM

    good = {**EXAMPLE_CLAIM, "claim_id": f"SMOKE-{run_id}-OK"}
    bad = {**EXAMPLE_CLAIM, "claim_id": f"SMOKE-{run_id}-BAD", "claim_amount": -1}
    columns = list(reversed(list(EXAMPLE_CLAIM)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[claim[c] for c in columns] for claim in (good, bad)])
    return out.getvalue().encode(), [good["claim_id"], bad["claim_id"]]


def check_batch(run: SmokeRun) -> str:
    """Drop a file under incoming/ and wait for the transform job's scored/ and rejected/ outputs."""
    from shared.batch_jobs import job_name

    bucket, s3 = run.output(DATA_BUCKET), run.clients.s3
    name = f"{run.run_id}.csv"
    key = f"incoming/{SMOKE_FOLDER}{name}"
    body, claim_ids = smoke_file(run.run_id)
    put = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/csv")
    # Where the trigger sends the outputs (shared/batch_jobs.py): the input's path below each folder.
    prefixes = {folder: f"{folder}/{SMOKE_FOLDER}{name}/" for folder in ("scored", "rejected")}
    found: dict[str, list[str]] = {}

    def arrived() -> bool:
        for folder, prefix in prefixes.items():
            if not found.get(folder):
                listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
                found[folder] = [o["Key"] for o in listed.get("Contents", [])]
        return all(found.get(folder) for folder in prefixes)

    if not run.wait_until(run.clock() + run.options.batch_timeout_s, arrived):
        missing = " and ".join(f"{prefixes[f]}" for f in prefixes if not found.get(f))
        job = job_name(bucket, key, put.get("VersionId"))
        raise CheckFailed(
            f"nothing under {missing} after {run.options.batch_timeout_s:.0f} s; {_job(run, job)}"
        )
    [scored_key, *_] = [k for k in found["scored"] if k.endswith(".out")] or found["scored"]
    text = s3.get_object(Bucket=bucket, Key=scored_key)["Body"].read().decode("utf-8")
    rows = {r["claim_id"]: r for r in csv.DictReader(io.StringIO(text))}
    ok_row, bad_row = rows.get(claim_ids[0]), rows.get(claim_ids[1])
    if (
        not ok_row
        or ok_row.get("risk_level") not in ("low", "high")
        or not bad_row
        or not bad_row.get("error")
    ):
        raise CheckFailed(f"{scored_key} does not hold one score and one rejection: {text[:300]!r}")
    return (
        f"{key} → {scored_key} ({claim_ids[0]}: {ok_row['risk_level']}; {claim_ids[1]} rejected: "
        f"{bad_row['error'][:80]}), {len(found['rejected'])} part(s) under {prefixes['rejected']}"
    )


def _job(run: SmokeRun, name: str) -> str:
    """What SageMaker says of the transform job the trigger should have started (DescribeTransformJob)."""
    try:
        job = run.clients.sagemaker.describe_transform_job(TransformJobName=name)
    except Exception as error:  # a diagnosis only: say what was found, never fail on it
        return f"no transform job {name} ({type(error).__name__}): see the batch trigger's logs"
    reason = f": {job['FailureReason']}" if job.get("FailureReason") else ""
    return f"transform job {name} is {job.get('TransformJobStatus')}{reason}"


STEPS: Final[tuple[tuple[str, Check], ...]] = (
    ("stack", check_stack),
    ("api key", check_api_key),
    ("token", check_token),
    ("health", check_health),
    ("predict", check_predict),
    ("pipeline", check_pipeline),
    ("batch", check_batch),
)


@dataclass(frozen=True)
class SmokeReport:
    stack: str
    run_id: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "run_id": self.run_id,
            "ok": self.ok,
            "checks": [asdict(r) for r in self.results],
        }


def run_smoke(
    run: SmokeRun,
    *,
    on_start: Callable[[str], None] = lambda _: None,
    on_result: Callable[[CheckResult], None] = lambda _: None,
) -> SmokeReport:
    """Every check in order; a check that fails does not stop the ones after it."""
    results: list[CheckResult] = []
    for name, check in STEPS:
        if name in run.options.skip:
            result = CheckResult(name, True, 0.0, "skipped (--skip)", skipped=True)
        else:
            on_start(name)
            result = timed(name, check, run)
        results.append(result)
        on_result(result)
    return SmokeReport(run.stack, run.run_id, tuple(results))


_NAME_WIDTH: Final = max(len(name) for name, _ in STEPS)


def render(result: CheckResult) -> str:
    mark = "-" if result.skipped else ("✔" if result.ok else "✘")
    return f"{mark} {result.name:<{_NAME_WIDTH}} {result.seconds:>9.1f}s  {result.detail}"


# ---------------------------------------------------------------------------------------------
# The command: ``claims-risk aws smoke``; local/cli.py registers the group.


@click.group(help="Commands against a deployed stack in AWS (credentials from the usual AWS settings).")
def aws() -> None:
    pass


@aws.command(help="Check a deployed stack end to end: token, API, pipeline and drop folder.")
@click.option("--stack", required=True, help="the CloudFormation stack, e.g. ClaimsRisk-dev")
@click.option("--region", default=None, help="default: the AWS settings' region")
@click.option("--profile", default=None, help="an AWS profile")
@click.option(
    "--http-timeout",
    type=click.FloatRange(min=1),
    default=SmokeOptions.http_timeout_s,
    show_default=True,
    help="seconds for each HTTP call",
)
@click.option(
    "--pipeline-timeout",
    type=click.FloatRange(min=1),
    default=SmokeOptions.pipeline_timeout_s,
    show_default=True,
    help="seconds to follow the state machine's run (left running after)",
)
@click.option(
    "--batch-timeout",
    type=click.FloatRange(min=1),
    default=SmokeOptions.batch_timeout_s,
    show_default=True,
    help="seconds to wait for the dropped file's scored/ and rejected/ outputs",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.1),
    default=SmokeOptions.poll_s,
    show_default=True,
    help="seconds between two looks at the run or the outputs",
)
@click.option("--skip", multiple=True, type=click.Choice(SKIPPABLE), help="leave a check out (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def smoke(
    stack: str,
    region: str | None,
    profile: str | None,
    http_timeout: float,
    pipeline_timeout: float,
    batch_timeout: float,
    poll: float,
    skip: Sequence[str],
    as_json: bool,
) -> None:
    options = SmokeOptions(http_timeout, pipeline_timeout, batch_timeout, poll, frozenset(skip))
    run = SmokeRun(stack, Clients.from_session(profile, region), options)
    quiet = as_json

    def started(name: str) -> None:
        if not quiet and name in ("pipeline", "batch"):
            click.echo(f"… {name}: waiting (up to {_timeout_of(name, options):.0f} s)", err=True)

    def finished(result: CheckResult) -> None:
        if not quiet:
            click.echo(render(result))

    report = run_smoke(run, on_start=started, on_result=finished)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        failed = [r.name for r in report.results if not r.ok]
        click.echo(f"{stack}: " + ("every check passed" if not failed else f"failed: {', '.join(failed)}"))
    raise SystemExit(report.exit_code)


def _timeout_of(name: str, options: SmokeOptions) -> float:
    return options.pipeline_timeout_s if name == "pipeline" else options.batch_timeout_s
