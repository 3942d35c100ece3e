"""A completed drop-folder transform job's rows into the claims lake, in AWS: which job writes them.

Offline the drop folder mirrors each file into ``batch_scored`` and ``rejected_rows`` while it scores
it (:class:`shared.lake_writers.BatchMirror`). In AWS a SageMaker batch transform scores the file and
nothing of ours runs when it ends, so the lake gets its rows this way:

1. SageMaker sends "SageMaker Transform Job State Change" to EventBridge ("Events that Amazon
   SageMaker AI sends to Amazon EventBridge", SageMaker developer guide, section "Transform job
   state change": ``detail`` holds ``TransformJobName``, ``TransformJobStatus``, ``TransformInput``,
   ``TransformOutput.S3OutputPath``, ``Environment`` and ``Tags``). A rule (cdk/batch.py) sends the
   *Completed* events of our jobs (``claims-batch-*``, output under this bucket's ``scored/``) to the
   batch trigger Lambda.
2. The trigger (:func:`plan_lake_job`) starts one SageMaker processing job in the project image, the
   lake job, named after the transform job: the same page warns that SageMaker "may send multiple
   events to EventBridge for each state change", and SageMaker refuses a second job of one name, so
   a repeated event starts nothing more. Its request is small: the job asks SageMaker itself
   (``DescribeTransformJob``, ``ListTags``) for the input object, its version and the output folder,
   whose URIs (up to 1024 characters) would not fit a processing job's environment (256).
3. The job (``sagemaker_jobs/processing/batch_lake.py``, :mod:`shared.transform_results`) reads the
   dropped object's version and the transform's ``.out`` and writes both tables through the
   :class:`shared.ports.ClaimsLake` port, in the file's own partition (``batch_id``: the content
   hash, as the drop folder chooses it), so a re-run replaces it.
4. A lake job that fails or stops is announced on the on-call topic (cdk/batch.py); the scored
   output stays under ``scored/`` whatever happens, and :class:`LakeRerun` starts the job again.

Pure planning: no boto3, no pandas (the trigger's bundle imports this module).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.batch_jobs import JOB_NAME_PATTERN, JOB_NAME_PREFIX

LAKE_JOB_PREFIX: Final = "claims-lake-"
LAKE_JOB_MODULE: Final = "sagemaker_jobs.processing.batch_lake"
TRANSFORM_JOB_ENV: Final = "CLAIMS_RISK_TRANSFORM_JOB"  # the job reads which transform to mirror
TRANSFORM_EVENT: Final = "SageMaker Transform Job State Change"
LAKE_VARIABLES: Final = ("CLAIMS_RISK_LAKE_ROOT", "CLAIMS_RISK_LAKE_DATABASE", "CLAIMS_RISK_LAKE_WORKGROUP")
_NAME_MAX: Final = 63  # CreateProcessingJob's ProcessingJobName (botocore's sagemaker model)
MAX_ATTEMPT: Final = 99


@dataclass(frozen=True)
class LakeJobSettings:
    """What the deployment tells the trigger about the lake job (its environment, cdk/batch.py)."""

    image: str
    role_arn: str
    kms_key_arn: str | None
    lake: Mapping[str, str]  # CLAIMS_RISK_LAKE_ROOT, _DATABASE, _WORKGROUP, handed on to the job
    incoming_prefix: str = "incoming/"
    scored_prefix: str = "scored/"
    # One file's rows, read and written in chunks of 50,000: the smallest general-purpose instance
    # holds them; the volume takes the dropped file and its .out side by side.
    instance_type: str = "ml.m5.large"
    volume_gb: int = 30
    max_runtime_s: int = 2 * 3600

    def __post_init__(self) -> None:
        if set(self.lake) != set(LAKE_VARIABLES):
            raise ValueError(f"the lake job needs {list(LAKE_VARIABLES)}, not {sorted(self.lake)}")
        if not self.lake["CLAIMS_RISK_LAKE_ROOT"].startswith("s3://"):
            raise ValueError("CLAIMS_RISK_LAKE_ROOT must be an s3:// prefix for the lake job")


def lake_job_name(transform_job: str, attempt: int = 1) -> str:
    """``claims-batch-<slug>-<hash>`` is mirrored by ``claims-lake-<slug>-<hash>``, and its attempt
    ``n`` > 1 by ``…-<hash>-r<n>``: one name per transform job and attempt (a repeated event is refused
    by SageMaker), the hash kept whole however the slug is cut."""
    if not transform_job.startswith(JOB_NAME_PREFIX) or not JOB_NAME_PATTERN.fullmatch(transform_job):
        raise ValueError(f"{transform_job!r} is not a drop-folder transform job ({JOB_NAME_PREFIX}…)")
    if not 1 <= attempt <= MAX_ATTEMPT:
        raise ValueError(f"an attempt is 1 to {MAX_ATTEMPT}, not {attempt}")
    slug, _, digest = transform_job[len(JOB_NAME_PREFIX) :].rpartition("-")
    suffix = f"-r{attempt}" if attempt > 1 else ""
    room = _NAME_MAX - len(LAKE_JOB_PREFIX) - len(digest) - len(suffix) - 1
    slug = slug[:room].rstrip("-")
    return f"{LAKE_JOB_PREFIX}{slug}-{digest}{suffix}" if slug else f"{LAKE_JOB_PREFIX}{digest}{suffix}"


def lake_job_request(settings: LakeJobSettings, transform_job: str, attempt: int = 1) -> dict[str, Any]:
    """The ``CreateProcessingJob`` request of the lake job that mirrors ``transform_job``."""
    cluster: dict[str, Any] = {
        "InstanceCount": 1,  # one file, one partition: nothing to share out
        "InstanceType": settings.instance_type,
        "VolumeSizeInGB": settings.volume_gb,
    }
    if settings.kms_key_arn:
        cluster["VolumeKmsKeyId"] = settings.kms_key_arn
    return {
        "ProcessingJobName": lake_job_name(transform_job, attempt),
        "RoleArn": settings.role_arn,
        "AppSpecification": {"ImageUri": settings.image, "ContainerEntrypoint": ["job", LAKE_JOB_MODULE]},
        "Environment": {
            TRANSFORM_JOB_ENV: transform_job,
            "INCOMING_PREFIX": settings.incoming_prefix,  # source_file is the path below it
            **settings.lake,
        },
        "ProcessingResources": {"ClusterConfig": cluster},
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime_s},
        "Tags": [
            {"Key": "claims-risk:job", "Value": "batch-lake"},
            {"Key": "transform-job", "Value": transform_job},
        ],
    }


# ---------------------------------------------------------------------------------------------
# What reaches the trigger: SageMaker's event (through the rule), or an operator's re-run.


class _TransformOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    s3_output_path: str = Field(alias="S3OutputPath")


class TransformJobDetail(BaseModel):
    """The event's ``detail``: DescribeTransformJob's fields (only those the trigger reads)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(alias="TransformJobName", min_length=1, max_length=63)
    status: Literal["InProgress", "Completed", "Failed", "Stopping", "Stopped"] = Field(
        alias="TransformJobStatus"
    )
    output: _TransformOutput | None = Field(None, alias="TransformOutput")


class TransformJobStateChange(BaseModel):
    """An EventBridge event of SageMaker's for a transform job (the developer guide's example shape)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    source: Literal["aws.sagemaker"]
    detail_type: Literal["SageMaker Transform Job State Change"] = Field(alias="detail-type")
    detail: TransformJobDetail


class LakeRerun(BaseModel):
    """``{"lake_rerun": {"transform_job": "claims-batch-…", "attempt": 2}}``, invoked by an operator:
    the lake job again (after a failure, or to rewrite a partition), under a name of its own."""

    model_config = ConfigDict(extra="forbid")

    transform_job: str = Field(min_length=1, max_length=63)
    attempt: int = Field(2, ge=2, le=MAX_ATTEMPT)


LAKE_RERUN_KEY: Final = "lake_rerun"


def is_lake_event(event: Mapping[str, Any]) -> bool:
    """Whether the trigger got a transform job's state change or a re-run, not an S3 notification."""
    return event.get("detail-type") == TRANSFORM_EVENT or LAKE_RERUN_KEY in event


@dataclass(frozen=True)
class LakeJobPlan:
    transform_job: str
    attempt: int
    request: dict[str, Any]

    @property
    def job_name(self) -> str:
        return str(self.request["ProcessingJobName"])


@dataclass(frozen=True)
class NoLakeJob:
    transform_job: str | None
    reason: str


def plan_lake_job(event: Mapping[str, Any], settings: LakeJobSettings) -> LakeJobPlan | NoLakeJob:
    """The lake job for a completed transform (or a re-run), or why there is none. Raises pydantic's
    ValidationError for an event of neither shape (a bug of the rule's, never retried into success)."""
    if LAKE_RERUN_KEY in event:
        rerun = LakeRerun.model_validate(event[LAKE_RERUN_KEY])
        name, attempt = rerun.transform_job, rerun.attempt
    else:
        detail = TransformJobStateChange.model_validate(event).detail
        name, attempt = detail.name, 1
        # The rule matches these already; checked again, the trigger never acts on another's job.
        if detail.status != "Completed":
            return NoLakeJob(name, f"the transform job is {detail.status}, not Completed")
        output = detail.output.s3_output_path if detail.output else ""
        if not re.fullmatch(rf"s3://[^/]+/{re.escape(settings.scored_prefix)}.+", output):
            return NoLakeJob(
                name, f"its output {output!r} is not under the drop folder's {settings.scored_prefix}"
            )
    if not name.startswith(JOB_NAME_PREFIX):
        return NoLakeJob(name, f"not a drop-folder transform job (no {JOB_NAME_PREFIX} prefix)")
    return LakeJobPlan(name, attempt, lake_job_request(settings, name, attempt))
