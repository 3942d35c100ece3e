"""The retraining state machine's logic, run on a real ASL interpreter (moto's, in-process).

moto runs Pass, Choice, Wait, Succeed and Fail states, Retry and Catch, the JSONPath data flow and
the intrinsic functions, and the SNS task against its own SNS. It cannot run the SageMaker ``.sync``
jobs or the ``aws-sdk:sagemaker`` calls, nor invoke a Lambda without Docker, so those Task states,
and only those, are rewritten by :func:`stand_in` into Pass states that keep the task's ``Parameters``
(so every path the task reads must exist), its ``ResultPath`` and its ``Next``, and return what the
task's ``ResultSelector`` would have produced. A job that fails stays a Task with its Retry and
Catch, pointed at a Lambda that does not exist. The deploy step's ``Wait`` is shortened to 0 s.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import boto3
import pytest
from moto import mock_aws
from moto.sns.models import sns_backends

from step_functions.pipeline import PipelineInputs, prepare_run, step, step_names
from step_functions.state_machine import (
    PLACEHOLDERS,
    SYNC_RESOURCES,
    DeploymentGuardrails,
    definition,
    definition_json,
    step_states,
    substitute,
)
from tests.aws_fakes import offline_credentials

ACCOUNT: Final = "123456789012"
REGION: Final = "eu-west-1"
ENDPOINT: Final = "claims-risk"
BUCKET: Final = "claims-risk-data-test"
MODEL_PACKAGE_ARN: Final = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/claims-risk/7"
GATES_SUMMARY: Final = "all gates passed: PR-AUC 0.412 >= 0.300; challenger beats champion by 0.021"
MISSING_FUNCTION: Final = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:does-not-exist"
GUARDRAILS: Final = DeploymentGuardrails(
    canary_percent=10,
    canary_wait_s=300,
    baking_s=600,
    rollback_alarms=("a", "b"),
    instance_type="ml.m5.large",
    initial_instance_count=1,
    capture_percent=20,
)
POLLS: Final = 200
POLL_S: Final = 0.05

# What each rewritten task hands on: the output of its ResultSelector for a plausible response, or
# None for a task whose result is discarded (ResultPath null). A value with ".$" keys is a template
# evaluated on the state's input (a Pass state's Parameters) rather than a fixed result.
Responses = dict[str, dict[str, Any] | None]
HAPPY: Final[Responses] = {
    "validate": {"name": "claims-risk-run-validate", "status": "Completed"},
    "features": {"name": "claims-risk-run-features", "status": "Completed"},
    "tune": {
        "best_job": "claims-risk-run-tune-007-1a2b3c4d",
        "hyperparameters": {"model_family": "xgboost", "xgb_max_depth": "5", "xgb_eta": "0.05"},
    },
    "train": {
        "name": "claims-risk-run-train",
        "model": f"s3://{BUCKET}/pipeline/runs/run/model/claims-risk-run-train/output/model.tar.gz",
    },
    "evaluate": {"name": "claims-risk-run-evaluate", "status": "Completed"},
    "gates": {"passed": True, "summary": GATES_SUMMARY},
    "register": {"model_package_arn": MODEL_PACKAGE_ARN, "model_version": "7"},
    "deploy: model": None,
    "deploy: endpoint config": None,
    "deploy: does the endpoint exist?": {"names": [ENDPOINT]},
    "deploy: guarded update": None,
    "deploy: create endpoint": None,
    # The endpoint serves the config this run created: the name comes from States.UUID at run time.
    "deploy: status": {"status": "InService", "config.$": "$.deploy.config_name"},
    "deploy: model card": {"card": f"s3://{BUCKET}/models/current/manifest.json"},
    "deploy: autoscaling": None,
    "deploy: scaling policy": None,
    "given package: model data": {
        "model": f"s3://{BUCKET}/pipeline/runs/earlier/model/output/model.tar.gz",
        "model_package_arn": MODEL_PACKAGE_ARN,
        "approval": "Approved",
    },
}
PREPARE: Final = "prepare run"


def prepared(start_input: dict[str, Any]) -> dict[str, Any]:
    """What the prepare task hands on: the real ``prepare_run`` of the input, and the run's id made as
    the state's ResultSelector makes it."""
    selector = definition(GUARDRAILS)["States"][PREPARE]["ResultSelector"]
    return {**prepare_run(start_input), "run": selector["run"]}


def has_paths(value: Any) -> bool:
    """Whether a canned result holds paths or intrinsics (``"key.$"``) anywhere."""
    if isinstance(value, dict):
        return any(str(k).endswith(".$") or has_paths(v) for k, v in value.items())
    return isinstance(value, list) and any(has_paths(v) for v in value)


def is_rewritten(state: Mapping[str, Any]) -> bool:
    """A task moto cannot run: a SageMaker job or SDK call, or a Lambda invocation."""
    resource = str(state.get("Resource", ""))
    return state["Type"] == "Task" and any(
        kind in resource for kind in (":sagemaker:", ":aws-sdk:", "lambda:invoke")
    )


def stand_in(state: Mapping[str, Any], result: dict[str, Any] | None) -> dict[str, Any]:
    """A Pass state in place of a task: same Parameters, ResultPath and Next, a canned result."""
    replacement: dict[str, Any] = {"Type": "Pass", "Comment": f"stand-in for {state['Resource']}"}
    if result is not None and has_paths(result):
        replacement["Parameters"] = result
    else:
        if "Parameters" in state:
            # Evaluated before Result replaces it: a path the task reads that is missing fails the run.
            replacement["Parameters"] = state["Parameters"]
        if result is not None:
            replacement["Result"] = result
    replacement["ResultPath"] = state.get("ResultPath", "$")
    replacement["Next"] = state["Next"]
    return replacement


def failing(state: Mapping[str, Any]) -> dict[str, Any]:
    """The same task, Retry and Catch included, calling a Lambda that does not exist."""
    return {
        **state,
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": MISSING_FUNCTION, "Payload": {}},
    }


def rewrite(
    asl: dict[str, Any], responses: Mapping[str, dict[str, Any] | None], fail: str | None = None
) -> dict[str, Any]:
    """The ASL with every task moto cannot run replaced; everything else untouched but the Wait."""
    rewritten = copy.deepcopy(asl)
    states: dict[str, Any] = rewritten["States"]
    for name, state in states.items():
        if name == fail:
            assert is_rewritten(state), f"{name} is not a task this test can make fail"
            states[name] = failing(state)
        elif is_rewritten(state):
            assert name in responses, f"no stand-in result for task {name!r}"
            states[name] = stand_in(state, responses[name])
        elif state["Type"] == "Wait":
            states[name] = {**state, "Seconds": 0}
    return rewritten


@dataclass(frozen=True)
class Sandbox:
    sfn: Any
    role_arn: str
    values: dict[str, str]


@dataclass(frozen=True)
class Run:
    status: str
    error: str | None
    cause: str | None
    events: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    subjects: list[str | None]

    @property
    def entered(self) -> list[str]:
        """The names of the states entered, in order."""
        return [e["stateEnteredEventDetails"]["name"] for e in self.events if "stateEnteredEventDetails" in e]

    def entered_input(self, state: str) -> dict[str, Any]:
        """The input of the state's first entry."""
        for event in self.events:
            details = event.get("stateEnteredEventDetails", {})
            if details.get("name") == state:
                loaded: dict[str, Any] = json.loads(details["input"])
                return loaded
        raise AssertionError(f"{state!r} was not entered")

    @property
    def last_state(self) -> str:
        return self.entered[-1]

    @property
    def message(self) -> dict[str, Any]:
        assert len(self.messages) == 1, f"expected one notification, got {len(self.messages)}"
        return self.messages[0]


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    offline_credentials(monkeypatch, REGION)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        role_arn = boto3.client("iam").create_role(
            RoleName="claims-risk-pipeline",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": ["states.amazonaws.com", "sagemaker.amazonaws.com"]},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]
        boto3.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        key_arn = boto3.client("kms").create_key(Description="claims-risk")["KeyMetadata"]["Arn"]
        topic_arn = boto3.client("sns").create_topic(Name="claims-risk-retraining")["TopicArn"]
        image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/claims-risk"
        values = {
            "SageMakerRoleArn": role_arn,
            "DataBucket": BUCKET,
            "KmsKeyArn": key_arn,
            "Image": f"{image}:test",
            "TasksFunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:claims-risk-pipeline-tasks",
            "TopicArn": topic_arn,
            "EndpointName": ENDPOINT,
            "ModelPackageGroup": "claims-risk",
        }
        assert set(values) == set(PLACEHOLDERS)
        sfn = boto3.client("stepfunctions")
        yield Sandbox(sfn=sfn, role_arn=role_arn, values=values)
        # No execution may outlive the mock: its next AWS call would leave the process.
        for machine in sfn.list_state_machines()["stateMachines"]:
            running = sfn.list_executions(stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING")
            for execution in running["executions"]:
                sfn.stop_execution(executionArn=execution["executionArn"])


def run(
    sandbox: Sandbox,
    start_input: dict[str, Any] | None = None,
    *,
    responses: Mapping[str, dict[str, Any] | None] = HAPPY,
    fail: str | None = None,
) -> Run:
    """Create the (rewritten) state machine, start it, wait until it ends, and collect what it did."""
    asl = json.loads(substitute(definition_json(GUARDRAILS), sandbox.values))
    if fail != PREPARE:
        responses = {PREPARE: prepared(start_input or {}), **responses}
    machine_arn = sandbox.sfn.create_state_machine(
        name="claims-risk-retraining",
        definition=json.dumps(rewrite(asl, responses, fail)),
        roleArn=sandbox.role_arn,
    )["stateMachineArn"]
    execution_arn = sandbox.sfn.start_execution(
        stateMachineArn=machine_arn, name="run-1", input=json.dumps(start_input or {})
    )["executionArn"]
    described: dict[str, Any] = {}
    for _ in range(POLLS):
        described = sandbox.sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            break
        time.sleep(POLL_S)
    else:
        pytest.fail(f"the execution still runs after {POLLS * POLL_S:.0f} s")
    history = sandbox.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)
    topic = sns_backends[ACCOUNT][REGION].topics[sandbox.values["TopicArn"]]
    return Run(
        status=described["status"],
        error=described.get("error"),
        cause=described.get("cause"),
        events=history["events"],
        messages=[json.loads(sent[1]) for sent in topic.sent_notifications],
        subjects=[sent[2] for sent in topic.sent_notifications],
    )


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    remaining = iter(seen)
    return all(name in remaining for name in wanted)


# --- the definition itself -----------------------------------------------------------------------


def test_steps_appear_in_pipeline_order() -> None:
    assert step_states(definition(GUARDRAILS)) == step_names()


def test_each_job_runs_through_its_sync_integration() -> None:
    states = definition(GUARDRAILS)["States"]
    sync = {name: s["Resource"] for name, s in states.items() if str(s.get("Resource", "")).endswith(".sync")}
    assert set(sync.values()) <= set(SYNC_RESOURCES.values())
    jobs = {name for name in step_names() if step(name).is_job}
    assert set(sync) == jobs
    # Model Monitor's baselining job inside the deploy step, only for accounts that use Model Monitor.
    with_monitor = definition(dataclasses.replace(GUARDRAILS, model_monitor=True))["States"]
    assert with_monitor["deploy: monitoring baseline"]["Resource"] == SYNC_RESOURCES["processing"]
    for name in jobs:
        assert sync[name] == SYNC_RESOURCES[step(name).kind], name
    assert step("tune").kind == "tuning"
    assert step("train").kind == "training"
    assert {step(n).kind for n in ("validate", "features", "evaluate")} == {"processing"}


def test_every_rewritten_task_has_a_happy_result() -> None:
    states = definition(GUARDRAILS)["States"]
    assert {name for name, s in states.items() if is_rewritten(s)} == set(HAPPY) | {PREPARE}


def test_the_rewrite_touches_only_what_moto_cannot_run() -> None:
    asl = definition(GUARDRAILS)
    rewritten = rewrite(asl, {PREPARE: prepared({}), **HAPPY}, fail="train")
    assert rewritten["StartAt"] == asl["StartAt"]
    assert rewritten["States"].keys() == asl["States"].keys()
    for name, state in asl["States"].items():
        new = rewritten["States"][name]
        if is_rewritten(state):
            assert new["Next"] == state["Next"]
            assert new.get("ResultPath", "$") == state.get("ResultPath", "$")
            if name == "train":
                assert new["Type"] == "Task"
                assert (new["Retry"], new["Catch"]) == (state["Retry"], state["Catch"])
            else:
                assert new["Type"] == "Pass"
        elif state["Type"] == "Wait":
            assert new == {**state, "Seconds": 0}
        else:
            assert new == state, name


# --- runs ----------------------------------------------------------------------------------------


def test_happy_path_promotes_through_the_guarded_update(sandbox: Sandbox) -> None:
    result = run(sandbox)

    assert result.status == "SUCCEEDED", result.cause
    assert result.last_state == "promoted"
    assert "deploy: guarded update" in result.entered
    assert "deploy: model card" in result.entered  # the API's card names the model that now serves
    # Autoscaling is (re)registered once the endpoint serves the new model.
    assert is_subsequence(
        ["deploy: serving?", "deploy: autoscaling", "deploy: scaling policy"], result.entered
    )
    assert "deploy: monitoring baseline" not in result.entered  # Model Monitor is off by default
    assert "deploy: create endpoint" not in result.entered
    assert is_subsequence(step_names(), result.entered), result.entered
    assert not any(name.startswith("failed at") for name in result.entered)

    message = result.message
    assert message["gates"] == {"passed": True, "summary": GATES_SUMMARY}
    assert message["register"]["model_package_arn"] == MODEL_PACKAGE_ARN
    run_id = message["run"]["id"]
    assert len(run_id) == 8
    assert message["run"]["execution"] == "run-1"
    assert message["run"]["prefix"] == f"s3://{BUCKET}/pipeline/runs/{run_id}"
    assert message["deploy"]["config_name"] == f"claims-risk-{run_id}"
    assert message["deploy"]["describeEndpoint"] == {
        "status": "InService",
        "config": f"claims-risk-{run_id}",
    }
    assert "failure" not in message
    assert result.subjects == ["claims-risk retraining ended"]


def test_failed_gates_keep_the_champion(sandbox: Sandbox) -> None:
    responses: Responses = {**HAPPY, "gates": {"passed": False, "summary": "PR-AUC 0.21 < 0.30"}}
    result = run(sandbox, responses=responses)

    assert result.status == "SUCCEEDED", result.cause
    assert result.last_state == "not promoted"
    assert "gates passed?" in result.entered
    assert not [name for name in result.entered if name.startswith("deploy") or name == "register"]
    assert result.message["gates"] == {"passed": False, "summary": "PR-AUC 0.21 < 0.30"}
    assert "failure" not in result.message


def test_a_failed_job_stops_the_run_and_says_where(sandbox: Sandbox) -> None:
    result = run(sandbox, fail="train")

    assert result.status == "FAILED"
    assert result.error == "RetrainingFailed"
    assert result.last_state == "run failed"
    assert "failed at train" in result.entered
    for later in ("evaluate", "gates", "register"):
        assert later not in result.entered
    assert not [name for name in result.entered if name.startswith("deploy")]
    # The train task failed once (no retry: the error is not a transient SageMaker one) and was caught.
    failed = [e for e in result.events if e["type"] == "TaskFailed"]
    assert len(failed) == 1
    assert failed[0]["taskFailedEventDetails"]["error"] == "Lambda.ResourceNotFoundException"

    message = result.message
    assert message["failed_step"] == "train"
    assert message["failure"]["Error"] == "Lambda.ResourceNotFoundException"
    assert "does-not-exist" in message["failure"]["Cause"]
    assert "train" not in message.get("jobs", {})
    assert "gates" not in message


def test_an_empty_start_runs_on_the_defaults(sandbox: Sandbox) -> None:
    result = run(sandbox, {})
    inputs = result.message["inputs"]

    assert inputs == PipelineInputs().model_dump(mode="json")
    assert PipelineInputs.model_validate(inputs) == PipelineInputs()
    assert inputs["tuning_trials"] == 20
    assert inputs["cv_folds"] == 5
    assert result.entered_input("validate")["inputs"] == inputs


def test_a_start_overrides_only_what_it_names(sandbox: Sandbox) -> None:
    result = run(sandbox, {"tuning_trials": 5})
    inputs = result.message["inputs"]

    assert inputs == PipelineInputs(tuning_trials=5).model_dump(mode="json")
    assert inputs["cv_folds"] == 5
    assert inputs["gates"] == PipelineInputs().model_dump(mode="json")["gates"]
    # What the tuning job's MaxNumberOfTrainingJobs and the evaluation's --cv-folds read.
    assert result.entered_input("tune")["inputs"]["tuning_trials"] == 5
    assert result.entered_input("evaluate")["inputs"]["cv_folds"] == 5


def test_a_rolled_back_update_fails_the_run(sandbox: Sandbox) -> None:
    responses: Responses = {
        **HAPPY,
        "deploy: status": {"status": "InService", "config": "claims-risk-previous"},
    }
    result = run(sandbox, responses=responses)

    assert result.status == "FAILED"
    assert result.error == "RetrainingFailed"
    assert is_subsequence(
        ["deploy: guarded update", "deploy: status", "deploy: serving?", "deploy: rolled back"],
        result.entered,
    )
    assert is_subsequence(["deploy: rolled back", "failed at deploy", "notify", "run failed"], result.entered)
    message = result.message
    assert message["failed_step"] == "deploy"
    assert message["failure"]["Error"] == "DeploymentRolledBack"
    assert "claims-risk-previous (InService)" in message["failure"]["Cause"]


def test_the_first_deployment_creates_the_endpoint(sandbox: Sandbox) -> None:
    responses: Responses = {**HAPPY, "deploy: does the endpoint exist?": {"names": []}}
    result = run(sandbox, responses=responses)

    assert result.status == "SUCCEEDED", result.cause
    assert result.last_state == "promoted"
    assert "deploy: create endpoint" in result.entered
    assert "deploy: guarded update" not in result.entered


def test_zero_trials_skip_the_tuning_job(sandbox: Sandbox) -> None:
    """SageMaker's MaxNumberOfTrainingJobs is at least 1: 0 trials must not start a tuning job."""
    result = run(sandbox, {"tuning_trials": 0})

    assert result.status == "SUCCEEDED", result.cause
    assert "tune" not in result.entered
    assert is_subsequence(["features", "search?", "tune: skipped", "train"], result.entered)
    assert result.entered_input("train")["jobs"]["tune"]["hyperparameters"] == {}


def test_the_run_inputs_reach_the_jobs(sandbox: Sandbox) -> None:
    """Seed, costs, sample size, tuning budget and overrides are in the state each job reads them from."""
    start = {
        "seed": 11,
        "costs": {"missed_high_risk": 9},
        "tuning_max_rows": 5000,
        "tuning_timeout_s": 900.5,
        "tuning_trials": 3,
        "hyperparameters": {"xgb_max_depth": 6},
    }
    state = run(sandbox, start).entered_input("train")

    assert state["static_hyperparameters"]["seed"] == "11"
    assert state["static_hyperparameters"]["cost_missed_high_risk"] == "9.0"
    assert state["static_hyperparameters"]["cost_needless_review"] == "1.0"  # nested default kept
    assert state["trial_hyperparameters"]["max_rows"] == "5000"
    assert state["tuning"] == {"max_runtime_s": 901, "max_parallel": 2}
    assert state["hyperparameter_overrides"] == {"xgb_max_depth": "6"}


def test_an_approved_model_package_is_deployed_through_the_same_step(sandbox: Sandbox) -> None:
    result = run(sandbox, {"model_package_arn": MODEL_PACKAGE_ARN})

    assert result.status == "SUCCEEDED", result.cause
    assert result.last_state == "promoted"
    assert "validate" not in result.entered and "register" not in result.entered
    assert is_subsequence(
        ["given package: model data", "deploy", "deploy: guarded update", "deploy: autoscaling", "notify"],
        result.entered,
    )
    assert result.message["register"]["model_package_arn"] == MODEL_PACKAGE_ARN


def test_a_model_package_not_approved_is_not_deployed(sandbox: Sandbox) -> None:
    given = {**HAPPY["given package: model data"], "approval": "PendingManualApproval"}  # type: ignore[dict-item]
    responses: Responses = {**HAPPY, "given package: model data": given}
    result = run(sandbox, {"model_package_arn": MODEL_PACKAGE_ARN}, responses=responses)

    assert result.status == "FAILED"
    assert not [name for name in result.entered if name.startswith("deploy")]
    assert result.message["failure"]["Error"] == "ModelPackageNotApproved"


def test_a_bad_input_fails_at_prepare_and_notifies(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="tuning_trails"):  # what the prepare task raises
        prepare_run({"tuning_trails": 5})
    result = run(sandbox, {"tuning_trails": 5}, fail=PREPARE)

    assert result.status == "FAILED"
    assert is_subsequence(["failed at prepare run", "notify", "run failed"], result.entered)
    assert "validate" not in result.entered
    assert result.subjects == ["claims-risk retraining ended"]
