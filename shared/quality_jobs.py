"""Late outcomes in AWS: a labels file dropped under ``outcomes/incoming/`` starts the quality job.

Offline, ``claims-risk monitor quality --labels <file>`` loads the outcomes into the claims lake,
judges the model on them and sets the ``model-quality`` alarm. In AWS the same sequence
(:func:`shared.ml.quality.judge_outcomes`) runs this way:

1. The data bucket sends its events to EventBridge. S3's "Object Created" event ("EventBridge event
   message structure", Amazon S3 user guide,
   https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html: ``detail.bucket.name``,
   ``detail.object.key``, ``size``, ``version-id``, ``sequencer``) is matched by a rule on this
   bucket and the key prefix (cdk/quality.py), which invokes the quality trigger Lambda.
2. The trigger (:func:`plan_quality_job`) starts one SageMaker processing job in the project image,
   named after the object version: EventBridge delivers at least once, and SageMaker refuses a
   second job of one name, so a repeated event starts nothing more. A new upload of the file is a
   new version, hence a re-run.
3. The job (``sagemaker_jobs/monitoring/quality.py``) reads that version (not a newer upload), loads
   its outcomes into the lake through the :class:`shared.ports.ClaimsLake` port in the file's own
   partition (its content hash: a re-run replaces it), queries the quality figures in Athena, writes
   ``monitoring_metrics`` and publishes the metrics the ``model-quality`` alarm watches.
4. A job that fails (a file that is not a labels CSV, claims the lake never saw) or stops is
   announced on the on-call topic with its exit message; the file stays where it was dropped and
   nothing of it was kept in the lake.

The object key can be up to 1024 characters and a processing job's environment values only 256
(botocore's sagemaker model, ``ProcessingEnvironmentValue``): a long key is handed on in parts.

Pure planning: no boto3, no pandas (the trigger's bundle imports this module).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field

from shared.batch_lake import LAKE_VARIABLES

OUTCOMES_PREFIX: Final = "outcomes/incoming/"
QUALITY_JOB_MODULE: Final = "sagemaker_jobs.monitoring.quality"
QUALITY_JOB_INFIX: Final = "-quality-"
OBJECT_CREATED: Final = "Object Created"
# What the job reads (besides CLAIMS_RISK_LAKE_* and publish_cloudwatch_metrics).
BUCKET_ENV: Final = "CLAIMS_RISK_OUTCOMES_BUCKET"
KEY_ENV: Final = "CLAIMS_RISK_OUTCOMES_KEY"  # its first 256 characters; then _KEY_2, _KEY_3, _KEY_4
VERSION_ENV: Final = "CLAIMS_RISK_OUTCOMES_VERSION"
MODEL_CARD_ENV: Final = "CLAIMS_RISK_MODEL_CARD_S3"
ENDPOINT_ENV: Final = "CLAIMS_RISK_ENDPOINT"
ENV_VALUE_MAX: Final = 256  # ProcessingEnvironmentValue (botocore's sagemaker model)
KEY_PARTS: Final = 4  # an S3 key is at most 1024 bytes, so at most 1024 characters
_NAME_MAX: Final = 63  # ProcessingJobName
_DIGEST: Final = 16
_NAME: Final = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # ProcessingJobName's pattern


@dataclass(frozen=True)
class QualityJobConfig:
    """What the deployment tells the trigger (its environment, cdk/quality.py)."""

    image: str
    role_arn: str
    kms_key_arn: str
    bucket: str  # the data bucket: labels are taken from it only
    endpoint: str  # the metrics' Endpoint dimension: the alarm's
    job_prefix: str  # e.g. claims-risk-dev: the trigger may start <prefix>-quality-* only
    model_card_uri: str  # the serving model's manifest: its test figures are the baseline
    lake: Mapping[str, str]  # CLAIMS_RISK_LAKE_ROOT, _DATABASE, _WORKGROUP, handed on to the job
    outcomes_prefix: str = OUTCOMES_PREFIX
    # A labels file and a few Athena queries: the smallest processing instance holds them.
    instance_type: str = "ml.t3.medium"
    volume_gb: int = 10
    max_runtime_s: int = 1800

    def __post_init__(self) -> None:
        if set(self.lake) != set(LAKE_VARIABLES):
            raise ValueError(f"the quality job needs {list(LAKE_VARIABLES)}, not {sorted(self.lake)}")
        if not self.lake["CLAIMS_RISK_LAKE_ROOT"].startswith("s3://"):
            raise ValueError("CLAIMS_RISK_LAKE_ROOT must be an s3:// prefix for the quality job")
        if not self.model_card_uri.startswith(f"s3://{self.bucket}/"):
            raise ValueError(f"the model card must be in the data bucket, not {self.model_card_uri!r}")
        if not self.outcomes_prefix.endswith("/"):
            raise ValueError(f"the outcomes prefix is a folder ending in '/', not {self.outcomes_prefix!r}")
        # The digest alone must fit after the stage's prefix, or IAM's <prefix>-quality-* misses.
        if len(self.job_prefix) + len(QUALITY_JOB_INFIX) + _DIGEST > _NAME_MAX:
            raise ValueError(f"the job prefix {self.job_prefix!r} leaves no room for a quality job's name")


def spread(name: str, value: str) -> dict[str, str]:
    """``value`` as environment variables of at most 256 characters: ``NAME``, then ``NAME_2``..."""
    parts = [value[i : i + ENV_VALUE_MAX] for i in range(0, len(value), ENV_VALUE_MAX)] or [""]
    if len(parts) > KEY_PARTS:
        raise ValueError(f"{name}: {len(value)} characters, more than {KEY_PARTS * ENV_VALUE_MAX}")
    return {name if i == 0 else f"{name}_{i + 1}": part for i, part in enumerate(parts)}


def quality_job_name(job_prefix: str, bucket: str, key: str, version: str) -> str:
    """``<prefix>-quality-<file name>-<digest>``: one name per object version (the digest), the
    file's name as room allows so the console says which file a job judged."""
    digest = hashlib.sha256(f"{bucket}\n{key}\n{version}".encode()).hexdigest()[:_DIGEST]
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    room = _NAME_MAX - len(job_prefix) - len(QUALITY_JOB_INFIX) - _DIGEST - 1
    slug = slug[: max(room, 0)].strip("-")
    name = (
        f"{job_prefix}{QUALITY_JOB_INFIX}{slug}-{digest}"
        if slug
        else f"{job_prefix}{QUALITY_JOB_INFIX}{digest}"
    )
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a processing job name SageMaker takes")
    return name


def quality_job_request(config: QualityJobConfig, key: str, version: str | None, name: str) -> dict[str, Any]:
    """The ``CreateProcessingJob`` request of the job that judges one labels file's version."""
    environment = {
        BUCKET_ENV: config.bucket,
        **spread(KEY_ENV, key),
        **(spread(VERSION_ENV, version) if version else {}),
        MODEL_CARD_ENV: config.model_card_uri,
        ENDPOINT_ENV: config.endpoint,
        # Model Monitor's name for it, which the metrics adapter reads (shared/adapters/metrics.py).
        "publish_cloudwatch_metrics": "Enabled",
        **config.lake,
    }
    return {
        "ProcessingJobName": name,
        "RoleArn": config.role_arn,
        "AppSpecification": {"ImageUri": config.image, "ContainerEntrypoint": ["job", QUALITY_JOB_MODULE]},
        "Environment": environment,
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 1,  # one file, one partition
                "InstanceType": config.instance_type,
                "VolumeSizeInGB": config.volume_gb,
                "VolumeKmsKeyId": config.kms_key_arn,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": config.max_runtime_s},
        "Tags": [{"Key": "claims-risk:job", "Value": "model-quality"}],
    }


# ---------------------------------------------------------------------------------------------
# What reaches the trigger: S3's event through EventBridge (the user guide's "Object created" shape).


class _Bucket(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=3, max_length=63)


class _Object(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    key: str = Field(min_length=1)
    size: int | None = None
    version_id: str | None = Field(None, alias="version-id")  # absent for an unversioned bucket
    sequencer: str | None = None


class _Detail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bucket: _Bucket
    object: _Object


class ObjectCreated(BaseModel):
    """An EventBridge event of S3's for a new object (``source`` aws.s3, ``detail-type`` Object Created)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    source: Literal["aws.s3"]
    detail_type: Literal["Object Created"] = Field(alias="detail-type")
    detail: _Detail

    @property
    def key(self) -> str:
        # Keys arrive URL-encoded, as Powertools' S3EventBridgeNotificationObject decodes them too.
        return unquote_plus(self.detail.object.key)


@dataclass(frozen=True)
class QualityJobPlan:
    uri: str
    version_id: str | None
    request: dict[str, Any]

    @property
    def job_name(self) -> str:
        return str(self.request["ProcessingJobName"])


@dataclass(frozen=True)
class NoQualityJob:
    uri: str
    reason: str


def plan_quality_job(event: Mapping[str, Any], config: QualityJobConfig) -> QualityJobPlan | NoQualityJob:
    """The quality job for a labels file created under the outcomes prefix, or why there is none.
    Raises pydantic's ValidationError for an event of another shape (the rule's bug, not the file's)."""
    created = ObjectCreated.model_validate(event)
    bucket, key = created.detail.bucket.name, created.key
    uri = f"s3://{bucket}/{key}"
    # The rule matches these already; checked again, the trigger never judges another's object.
    if bucket != config.bucket:
        return NoQualityJob(uri, f"not this stack's data bucket ({config.bucket})")
    if not key.startswith(config.outcomes_prefix):
        return NoQualityJob(uri, f"not under {config.outcomes_prefix}")
    if key.endswith("/"):
        return NoQualityJob(uri, "a folder marker, not a file")
    found = created.detail.object
    # An unversioned bucket sends no version: the sequencer then tells one upload from the next.
    version = found.version_id or f"sequencer-{found.sequencer or created.id}"
    name = quality_job_name(config.job_prefix, bucket, key, version)
    return QualityJobPlan(uri, found.version_id, quality_job_request(config, key, found.version_id, name))
