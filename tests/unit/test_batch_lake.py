"""Which lake job a completed drop-folder transform gets, and the trigger starting it (with fakes).

The events under tests/unit/events/ are the examples of "Events that Amazon SageMaker AI sends to
Amazon EventBridge" (https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html,
sections "SageMaker transform job state change" and "SageMaker processing job state change"), with
this system's names and values in their fields.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import botocore.session
import pytest
from botocore.validate import ParamValidator
from pydantic import ValidationError

from lambdas.batch_trigger import handler
from shared.batch_jobs import job_name
from shared.batch_lake import (
    LAKE_JOB_MODULE,
    LAKE_VARIABLES,
    TRANSFORM_JOB_ENV,
    LakeJobPlan,
    LakeJobSettings,
    NoLakeJob,
    is_lake_event,
    lake_job_name,
    lake_job_request,
    plan_lake_job,
)
from shared.settings import BatchTriggerSettings, SettingsError
from tests.aws_fakes import FakeLambdaContext

EVENTS: Final = Path(__file__).parent / "events"
ACCOUNT: Final = "123456789012"
KEY: Final = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
LAKE: Final = {
    "CLAIMS_RISK_LAKE_ROOT": "s3://claims-risk-data/lake/",
    "CLAIMS_RISK_LAKE_DATABASE": "claims_risk_dev",
    "CLAIMS_RISK_LAKE_WORKGROUP": "claims-risk-dev",
}
SETTINGS: Final = LakeJobSettings(
    image=f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/claims-risk:abc",
    role_arn=f"arn:aws:iam::{ACCOUNT}:role/claims-risk-sagemaker",
    kms_key_arn=KEY,
    lake=LAKE,
)
NAME_PATTERN: Final = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # ProcessingJobName's


def completed_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "sagemaker_transform_job_state_change.json").read_text())
    return event


def sagemaker_shape_errors(operation: str, request: Mapping[str, Any]) -> list[str]:
    """botocore's own check of a request (types, required members), as a client makes it."""
    model = botocore.session.get_session().get_service_model("sagemaker").operation_model(operation)
    assert model.input_shape is not None
    report = ParamValidator().validate(dict(request), model.input_shape)
    return [report.generate_report()] if report.has_errors() else []


# -- names ----------------------------------------------------------------------------------------


def test_the_lake_job_is_named_after_its_transform_job_and_attempt() -> None:
    transform = job_name("claims-risk-data", "incoming/2026/12/march claims.csv", "v1")
    first, second = lake_job_name(transform), lake_job_name(transform, 2)
    assert first == "claims-lake-" + transform.removeprefix("claims-batch-")
    assert second == f"{first}-r2" and lake_job_name(transform) == first  # the same, every time
    other = job_name("claims-risk-data", "incoming/2026/12/march claims.csv", "v2")
    assert lake_job_name(other) != first  # another version of the file: another job


def test_a_long_slug_is_cut_and_the_hash_that_tells_files_apart_is_kept() -> None:
    transform = job_name("b", "incoming/" + "very-long-file-name-" * 5 + ".csv", "v1")
    digest = transform.rsplit("-", 1)[1]
    for attempt in (1, 2, 99):
        name = lake_job_name(transform, attempt)
        assert len(name) <= 63 and NAME_PATTERN.fullmatch(name), name
        assert digest in name
    with pytest.raises(ValueError, match="not a drop-folder transform job"):
        lake_job_name("someone-elses-job")
    with pytest.raises(ValueError, match="attempt"):
        lake_job_name(transform, 100)


# -- the request ----------------------------------------------------------------------------------


def test_the_request_runs_the_lake_module_in_the_project_image_with_the_lake_and_the_job() -> None:
    transform = "claims-batch-claims-0a1b2c3d4e5f"
    request = lake_job_request(SETTINGS, transform)
    assert not sagemaker_shape_errors("CreateProcessingJob", request)
    assert request["AppSpecification"] == {
        "ImageUri": SETTINGS.image,
        "ContainerEntrypoint": ["job", LAKE_JOB_MODULE],
    }
    assert request["Environment"] == {TRANSFORM_JOB_ENV: transform, "INCOMING_PREFIX": "incoming/", **LAKE}
    # botocore's ProcessingEnvironmentValue: at most 256 characters (a 1024-character URI would not fit).
    assert all(len(v) <= 256 for v in request["Environment"].values())
    cluster = request["ProcessingResources"]["ClusterConfig"]
    assert cluster["InstanceCount"] == 1 and cluster["VolumeKmsKeyId"] == KEY
    assert request["RoleArn"] == SETTINGS.role_arn
    assert {"Key": "transform-job", "Value": transform} in request["Tags"]


def test_settings_refuse_a_lake_outside_s3_or_a_missing_variable() -> None:
    with pytest.raises(ValueError, match="s3://"):
        LakeJobSettings("i", "r", None, {**LAKE, "CLAIMS_RISK_LAKE_ROOT": "/data/lake"})
    with pytest.raises(ValueError, match="needs"):
        LakeJobSettings("i", "r", None, {k: LAKE[k] for k in LAKE_VARIABLES[:2]})


# -- which events start a job -------------------------------------------------------------------


def test_the_documented_completed_event_plans_the_job_of_that_transform() -> None:
    event = completed_event()
    assert is_lake_event(event)
    plan = plan_lake_job(event, SETTINGS)
    assert isinstance(plan, LakeJobPlan)
    assert plan.transform_job == event["detail"]["TransformJobName"] and plan.attempt == 1
    assert plan.job_name == "claims-lake-claims-0a1b2c3d4e5f"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"TransformJobStatus": "Failed"}, "Failed, not Completed"),
        ({"TransformOutput": {"S3OutputPath": "s3://claims-risk-data/reports/x/"}}, "not under"),
        ({"TransformJobName": "someone-elses-job"}, "not a drop-folder transform job"),
    ],
)
def test_other_transform_events_start_nothing_and_say_why(change: dict[str, Any], reason: str) -> None:
    event = completed_event()
    event["detail"].update(change)
    plan = plan_lake_job(event, SETTINGS)
    assert isinstance(plan, NoLakeJob) and reason in plan.reason


def test_an_event_of_another_shape_is_refused_loudly() -> None:
    event = completed_event()
    del event["detail"]["TransformJobName"]
    with pytest.raises(ValidationError, match="TransformJobName"):
        plan_lake_job(event, SETTINGS)
    assert not is_lake_event({"Records": []})  # an S3 notification is the drop's


def test_a_rerun_names_its_attempt() -> None:
    plan = plan_lake_job({"lake_rerun": {"transform_job": "claims-batch-claims-0a1b2c3d4e5f"}}, SETTINGS)
    assert isinstance(plan, LakeJobPlan) and plan.job_name.endswith("-r2") and plan.attempt == 2
    third = plan_lake_job({"lake_rerun": {"transform_job": "claims-batch-x-0a1b", "attempt": 3}}, SETTINGS)
    assert isinstance(third, LakeJobPlan) and third.job_name == "claims-lake-x-0a1b-r3"
    with pytest.raises(ValidationError):
        plan_lake_job({"lake_rerun": {"transform_job": "claims-batch-x-0a1b", "attempt": 1}}, SETTINGS)


# -- the trigger ----------------------------------------------------------------------------------


class FakeLauncher:
    """SageMaker's CreateProcessingJob as the launcher sees it: a second job of one name is refused,
    which the real launcher answers with the name (shared/adapters/processing_jobs.py)."""

    def __init__(self) -> None:
        self.started: dict[str, dict[str, Any]] = {}

    def start(self, request: Mapping[str, Any]) -> str:
        name = str(request["ProcessingJobName"])
        if name in self.started:
            return name
        self.started[name] = copy.deepcopy(dict(request))
        return f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:processing-job/{name}"


@pytest.fixture
def trigger(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLauncher]:
    for name, value in {
        "CLAIMS_RISK_IMAGE_URI": SETTINGS.image,
        "CLAIMS_RISK_SAGEMAKER_ROLE_ARN": SETTINGS.role_arn,
        "DATA_KMS_KEY_ID": KEY,
        **LAKE,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    launcher = FakeLauncher()
    handler.reset_wiring()
    handler.use_processing_launcher(launcher)
    yield launcher
    handler.reset_wiring()


def invoke(event: dict[str, Any]) -> Any:
    return handler.lambda_handler(event, FakeLambdaContext("claims-risk-batch-trigger"))


def test_the_trigger_starts_one_lake_job_however_often_sagemaker_sends_the_event(
    trigger: FakeLauncher,
) -> None:
    first = invoke(completed_event())
    again = invoke(completed_event())  # "SageMaker AI may send multiple events ... for each state change"
    assert first["lake_job"] == again["lake_job"] == "claims-lake-claims-0a1b2c3d4e5f"
    assert first["job"].endswith(":processing-job/claims-lake-claims-0a1b2c3d4e5f")
    assert again["job"] == "claims-lake-claims-0a1b2c3d4e5f"  # the one already started
    [request] = trigger.started.values()
    assert request == lake_job_request(
        LakeJobSettings(SETTINGS.image, SETTINGS.role_arn, KEY, LAKE), "claims-batch-claims-0a1b2c3d4e5f"
    )


def test_the_trigger_answers_a_failed_transform_with_no_job(trigger: FakeLauncher) -> None:
    event = completed_event()
    event["detail"]["TransformJobStatus"] = "Stopped"
    answer = invoke(event)
    assert answer["lake_job"] is None and "Stopped" in answer["reason"] and not trigger.started


def test_a_rerun_through_the_trigger_starts_the_next_attempt(trigger: FakeLauncher) -> None:
    answer = invoke({"lake_rerun": {"transform_job": "claims-batch-claims-0a1b2c3d4e5f", "attempt": 2}})
    assert answer["lake_job"] == "claims-lake-claims-0a1b2c3d4e5f-r2" and list(trigger.started) == [
        "claims-lake-claims-0a1b2c3d4e5f-r2"
    ]


def test_without_the_lake_settings_the_trigger_fails_naming_them(
    trigger: FakeLauncher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAIMS_RISK_IMAGE_URI")
    monkeypatch.delenv("CLAIMS_RISK_LAKE_DATABASE")
    with pytest.raises(SettingsError, match="missing CLAIMS_RISK_IMAGE_URI, CLAIMS_RISK_LAKE_DATABASE"):
        invoke(completed_event())
    assert not trigger.started
    monkeypatch.setenv("CLAIMS_RISK_LAKE_ROOT", "lake/")
    with pytest.raises(SettingsError, match=r"invalid CLAIMS_RISK_LAKE_ROOT \(must be an s3:// prefix\)"):
        BatchTriggerSettings.load()
