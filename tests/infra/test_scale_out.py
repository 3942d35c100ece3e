"""Scale-out per stage (issue 13, point 7): cdk/config.py is the one definition of each SageMaker
job's instances and of the batch transform's settings; the state machine, the batch trigger's and
the drift trigger's environments follow it, and every request built from it is one SageMaker takes.

Checked against AWS's own definitions:
- botocore's sagemaker service model: CreateProcessingJob (ProcessingClusterConfig,
  ProcessingS3Input.S3DataDistributionType), CreateTrainingJob / CreateHyperParameterTuningJob
  (ResourceConfig), CreateTransformJob (TransformResources, MaxConcurrentTransforms, MaxPayloadInMB,
  BatchStrategy);
- CreateTransformJob's page: "The value of MaxPayloadInMB cannot be greater than 100 MB. If you specify
  the MaxConcurrentTransforms parameter, the value of (MaxConcurrentTransforms * MaxPayloadInMB) also
  cannot exceed 100 MB" (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html);
- the batch transform guide: "If you have one input file but initialize multiple compute instances,
  only one instance processes the input file and the rest of the instances are idle"
  (https://docs.aws.amazon.com/sagemaker/latest/dg/batch-transform.html);
- Step Functions' SageMaker integration passes a ``.sync`` task's Parameters as the API's request
  (https://docs.aws.amazon.com/step-functions/latest/dg/connect-sagemaker.html), so the resolved
  Parameters are validated as CreateProcessingJob / CreateTrainingJob requests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from cdk.config import STAGES, StageConfig, stage_config
from cdk.endpoint import guardrails
from shared.adapters.transform_jobs import SageMakerTransformLauncher
from shared.batch_jobs import MAX_PAYLOAD_TOTAL_MB, TransformJobSpec, plan_transform_job
from shared.drift_jobs import DriftWindow, drift_job_request
from shared.request_limits import MIB
from shared.settings import BatchTriggerSettings, DriftTriggerSettings
from step_functions import pipeline, state_machine
from step_functions.pipeline import STEPS, JobResources, job_resources
from step_functions.state_machine import definition, substitute
from tests.infra import asl
from tests.infra.conftest import Synthesized
from tests.infra.test_aws_conformance import Deployment, request_errors

JOB_OPERATIONS: Final = {
    "processing": "CreateProcessingJob",
    "training": "CreateTrainingJob",
    "tuning": "CreateHyperParameterTuningJob",
}
VALUES: Final = {
    "SageMakerRoleArn": "arn:aws:iam::123456789012:role/claims-risk-sagemaker",
    "DataBucket": "claims-risk-data",
    "KmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-000000000000",
    "Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/claims-risk:1",
    "TasksFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:tasks",
    "TopicArn": "arn:aws:sns:eu-west-1:123456789012:on-call",
    "EndpointName": "claims-risk",
    "ModelPackageGroup": "claims-risk-dev-models",
}
# The data a job state sees once the run is prepared and its earlier jobs are done.
RUN_DATA: Final = {
    "inputs": {
        "spec": "claims",
        "seed": 0,
        "cv_folds": 5,
        "tuning_trials": 4,
        "source": "",
        "replay_days": 7,
    },
    "run": {"id": "0a1b2c3d", "prefix": "s3://claims-risk-data/pipeline/runs/0a1b2c3d"},
    "tuning": {"max_parallel": 2, "max_runtime_s": 600},
    "trial_hyperparameters": {"seed": "0"},
    "static_hyperparameters": {"seed": "0"},
    "hyperparameter_overrides": {},
    "jobs": {
        "tune": {"hyperparameters": {"xgb_eta": "0.1"}},
        "train": {"model": "s3://claims-risk-data/pipeline/runs/0a1b2c3d/model/model.tar.gz"},
    },
}


def job_requests(asl_document: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Step name → (operation, the request its .sync task sends), Parameters resolved as Step Functions
    does."""
    runtime = asl.Runtime(context={"Execution": {"Name": "run-1"}}, uuid=lambda: "0a1b2c3d-4e5f")
    found = {}
    for step in STEPS:
        if step.is_job:
            parameters = asl_document["States"][step.name]["Parameters"]
            found[step.name] = (JOB_OPERATIONS[step.kind], asl.apply_template(parameters, RUN_DATA, runtime))
    return found


def cluster_of(operation: str, request: dict[str, Any]) -> dict[str, Any]:
    if operation == "CreateProcessingJob":
        cluster: dict[str, Any] = request["ProcessingResources"]["ClusterConfig"]
    elif operation == "CreateTrainingJob":
        cluster = request["ResourceConfig"]
    else:
        cluster = request["TrainingJobDefinition"]["ResourceConfig"]
    return cluster


def machine(s: Synthesized) -> dict[str, Any]:
    return Deployment(s).definition


# -- the pipeline's jobs ---------------------------------------------------------------------------


def test_every_job_runs_where_its_stage_says_and_sagemaker_takes_the_request(
    synthesized: Synthesized,
) -> None:
    config = stage_config(synthesized.stage)
    for name, (operation, request) in job_requests(machine(synthesized)).items():
        wanted = config.jobs[name]
        cluster = cluster_of(operation, request)
        assert (cluster["InstanceType"], cluster["InstanceCount"], cluster["VolumeSizeInGB"]) == (
            wanted.instance_type,
            wanted.instance_count,
            wanted.volume_gb,
        ), name
        assert not request_errors("sagemaker", operation, request), name


def test_on_one_instance_every_input_is_copied_whole(synthesized: Synthesized) -> None:
    for name, (operation, request) in job_requests(machine(synthesized)).items():
        if operation == "CreateProcessingJob":
            for given in request["ProcessingInputs"]:
                assert given["S3Input"]["S3DataDistributionType"] == "FullyReplicated", (name, given)


@pytest.fixture
def validate_reads_raw_by_shard(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A validate step whose script could work on its share of the raw files (ours cannot yet)."""
    steps = tuple(
        dataclasses.replace(s, shardable_inputs=("raw",)) if s.name == "validate" else s for s in STEPS
    )
    monkeypatch.setattr(pipeline, "STEPS", steps)
    monkeypatch.setattr(state_machine, "STEPS", steps)
    yield


@pytest.mark.usefixtures("validate_reads_raw_by_shard")
def test_a_job_that_reads_by_shard_gets_its_input_split_by_s3_key_on_several_instances() -> None:
    stage = dict(stage_config("prod").jobs, validate=JobResources("ml.m5.xlarge", instance_count=4))
    document = json.loads(substitute(json.dumps(definition(guardrails(stage_config("prod")), stage)), VALUES))
    operation, request = job_requests(document)["validate"]
    inputs = {i["InputName"]: i["S3Input"]["S3DataDistributionType"] for i in request["ProcessingInputs"]}
    assert inputs == {"raw": "ShardedByS3Key"}
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 4
    assert not request_errors("sagemaker", operation, request)


def test_a_job_that_needs_all_its_data_refuses_several_instances() -> None:
    for name in ("validate", "features", "evaluate", "train", "tune"):
        with pytest.raises(ValueError, match=f"step {name} cannot run on 3 instances: "):
            job_resources({name: JobResources("ml.m5.xlarge", instance_count=3)})
    with pytest.raises(ValueError, match="no job steps named \\['gates'\\]"):
        job_resources({"gates": JobResources("ml.m5.xlarge")})


def test_sagemakers_bounds_on_a_jobs_resources_hold() -> None:
    # botocore's sagemaker model: ProcessingInstanceCount 1 to 100, ProcessingVolumeSizeInGB 1 to 16384.
    for bad in ({"instance_count": 0}, {"instance_count": 101}, {"volume_gb": 0}, {"volume_gb": 16385}):
        with pytest.raises(ValueError):
            JobResources("ml.m5.large", **bad)


# -- the batch transform ---------------------------------------------------------------------------


class RecordingClient:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def create_transform_job(self, **request: Any) -> dict[str, str]:
        self.requests.append(request)
        name = request["TransformJobName"]
        return {"TransformJobArn": f"arn:aws:sagemaker:eu-west-1:123456789012:transform-job/{name}"}


def transform_request(environment: dict[str, str], key: str) -> dict[str, Any]:
    """The CreateTransformJob request the batch trigger sends for ``key``, with this environment."""
    settings = BatchTriggerSettings.model_validate(environment).batch_settings()
    plan = plan_transform_job("claims-risk-data", key, "v1", settings=settings, model_name="claims-risk-0a1b")
    assert isinstance(plan, TransformJobSpec), plan
    client = RecordingClient()
    SageMakerTransformLauncher(client).launch(plan)
    [request] = client.requests
    return request


def test_the_batch_triggers_jobs_take_the_stages_settings(synthesized: Synthesized) -> None:
    config = stage_config(synthesized.stage)
    environment = Deployment(synthesized).function_environment("lambdas.batch_trigger.handler.lambda_handler")
    assert {k: environment[k] for k in config.transform_environment()} == config.transform_environment()
    for key, strategy in (
        ("incoming/a.csv", config.transform_batch_strategy),
        ("incoming/a.parquet", "SingleRecord"),
    ):
        request = transform_request(environment, key)
        assert request["TransformResources"] == {
            "InstanceType": config.transform_instance_type,
            "InstanceCount": config.transform_instance_count,
        }
        assert (request["MaxConcurrentTransforms"], request["MaxPayloadInMB"], request["BatchStrategy"]) == (
            config.transform_max_concurrent,
            config.transform_max_payload_mb,
            strategy,
        )
        assert not request_errors("sagemaker", "CreateTransformJob", request), key


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stages_transform_fits_sagemakers_limits_and_the_model_servers(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = stage_config(stage)
    assert config.transform_max_concurrent * config.transform_max_payload_mb <= MAX_PAYLOAD_TOTAL_MB
    assert config.transform_instance_count == 1  # one object per job: more instances would idle
    # In a transform job the model server takes a mini-batch of up to this many bytes (MB read as MiB,
    # the larger reading, so the check holds whichever SageMaker means).
    from sagemaker_jobs.inference import model_server

    monkeypatch.setenv("CLAIMS_RISK_REJECTED_S3_URI", "s3://claims-risk-data/rejected/a.csv/")
    assert config.transform_max_payload_mb * MIB <= model_server.largest_body()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"transform_max_concurrent": 20, "transform_max_payload_mb": 6}, "at most 100 MB in flight"),
        ({"transform_max_payload_mb": 101}, "must be 1 to 100"),
        ({"transform_max_payload_mb": 0}, "must be 1 to 100"),
        ({"transform_instance_count": 2}, "which SageMaker gives to one instance"),
        ({"transform_batch_strategy": "Whole"}, "must be one of MultiRecord, SingleRecord"),
        ({"jobs": {"validate": JobResources("ml.m5.large")}}, "jobs must set"),
        (
            {"jobs": dict(stage_config("dev").jobs, evaluate=JobResources("ml.m5.large", instance_count=2))},
            "step evaluate cannot run on 2 instances: its metrics",
        ),
    ],
)
def test_a_stage_sagemaker_would_refuse_or_that_idles_instances_fails(
    change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        dataclasses.replace(stage_config("dev"), **change)


# -- the drift job ---------------------------------------------------------------------------------


def test_the_drift_job_runs_where_its_stage_says(synthesized: Synthesized) -> None:
    config = stage_config(synthesized.stage)
    environment = Deployment(synthesized).function_environment("lambdas.drift_trigger.handler.lambda_handler")
    assert {k: environment[k] for k in config.drift_environment()} == config.drift_environment()
    settings = DriftTriggerSettings.model_validate(environment).drift_job()
    request = drift_job_request(settings, DriftWindow.hour_before(dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)))
    cluster = request["ProcessingResources"]["ClusterConfig"]
    assert (cluster["InstanceType"], cluster["InstanceCount"], cluster["VolumeSizeInGB"]) == (
        config.drift_job.instance_type,
        config.drift_job.instance_count,
        config.drift_job.volume_gb,
    )
    assert not request_errors("sagemaker", "CreateProcessingJob", request)


# -- one definition: a change in cdk/config.py is a change in the template -------------------------


@pytest.fixture(scope="module")
def changed() -> tuple[StageConfig, Deployment]:
    """The dev stack synthesized with other scale-out settings (without cdk-nag: only the values count)."""
    import aws_cdk as cdk

    from app import cdk_json_context
    from cdk.stack import ClaimsRiskStack

    os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")
    dev = stage_config("dev")
    config = dataclasses.replace(
        dev,
        jobs=dict(
            dev.jobs,
            evaluate=JobResources("ml.c5.4xlarge", volume_gb=64),
            train=JobResources("ml.m5.4xlarge"),
        ),
        drift_job=JobResources("ml.m5.xlarge", volume_gb=40),
        transform_instance_type="ml.c5.2xlarge",
        transform_max_concurrent=4,
        transform_max_payload_mb=25,
        transform_batch_strategy="SingleRecord",
    )
    outdir = tempfile.mkdtemp(prefix="cdk-scale-out-")
    app = cdk.App(context=cdk_json_context(), outdir=outdir)
    ClaimsRiskStack(app, "ClaimsRisk-dev", config=config)
    app.synth()
    return config, Deployment(Synthesized("dev", Path(outdir)))


def test_changing_the_config_changes_the_template(
    changed: tuple[StageConfig, Deployment], synthesized_stages: dict[str, Synthesized]
) -> None:
    config, deployment = changed
    before = job_requests(machine(synthesized_stages["dev"]))
    after = job_requests(deployment.definition)
    assert cluster_of(*after["evaluate"])["InstanceType"] == "ml.c5.4xlarge"
    assert cluster_of(*after["evaluate"])["VolumeSizeInGB"] == 64
    assert cluster_of(*after["train"])["InstanceType"] == "ml.m5.4xlarge"
    assert cluster_of(*after["validate"]) == cluster_of(*before["validate"])  # unchanged stays
    batch = deployment.function_environment("lambdas.batch_trigger.handler.lambda_handler")
    assert {k: batch[k] for k in config.transform_environment()} == {
        "TRANSFORM_INSTANCE_TYPE": "ml.c5.2xlarge",
        "TRANSFORM_INSTANCE_COUNT": "1",
        "TRANSFORM_MAX_CONCURRENT": "4",
        "TRANSFORM_MAX_PAYLOAD_MB": "25",
        "TRANSFORM_BATCH_STRATEGY": "SingleRecord",
    }
    request = transform_request(batch, "incoming/a.jsonl")
    assert (request["MaxConcurrentTransforms"], request["MaxPayloadInMB"], request["BatchStrategy"]) == (
        4,
        25,
        "SingleRecord",
    )
    assert not request_errors("sagemaker", "CreateTransformJob", request)
    drift = deployment.function_environment("lambdas.drift_trigger.handler.lambda_handler")
    settings = DriftTriggerSettings.model_validate(drift).drift_job()
    cluster = drift_job_request(
        settings, DriftWindow.hour_before(dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC))
    )["ProcessingResources"]["ClusterConfig"]
    assert (cluster["InstanceType"], cluster["VolumeSizeInGB"]) == ("ml.m5.xlarge", 40)
