"""The hourly drift job in AWS, without SageMaker Model Monitor.

Model Monitor is no longer open to new customers (the availability note on its pages of the
SageMaker developer guide), so a new account may be refused ``CreateMonitoringSchedule``. Instead,
EventBridge Scheduler invokes the drift-trigger Lambda every hour; it starts a plain SageMaker
processing job that runs our drift job (``sagemaker_jobs.monitoring.drift``) in the project image
over the last full hour of the endpoint's data capture. The job keeps Model Monitor's
bring-your-own-container contract (``dataset_source``, ``output_path``, ``start_time``,
``end_time``, ``publish_cloudwatch_metrics``), so it writes Model Monitor's report format and
publishes the metrics the drift alarms watch.

SageMaker writes captured traffic under ``<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/`` (the
data capture page of the developer guide): one hour is one prefix.

**Scaling out** (``instance_count`` above 1): map, then reduce, on SageMaker's own mechanisms.

- *Map*: one processing job on N instances whose capture input is ``ShardedByS3Key`` ("the data
  from Amazon S3 is shared by Amazon S3 key, downloading one shard of data to each processing
  instance": ProcessingS3Input, SageMaker API reference). Each instance bins its shard against the
  baseline and writes its mergeable counts under ``partials/<its host>/`` (the host from
  ``/opt/ml/config/resourceconfig.json``: "Build Your Own Processing Container", developer guide).
  It publishes nothing.
- *Reduce*: SageMaker sends "SageMaker Processing Job State Change" events to EventBridge ("Events
  that Amazon SageMaker AI sends to Amazon EventBridge", developer guide); a rule on the map job's
  name and ``Completed`` invokes the drift trigger, which starts a one-instance processing job over
  the partials. It merges them into the one Model Monitor report, writes the lake and publishes the
  metrics once. Nothing polls: the map job's completion is the signal, and a map job that failed
  (any host exiting non-zero fails the job) starts no reduce.

With one instance there is one job, as before: same request, same outputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

CAPTURE_PREFIX: Final = "monitoring/capture"  # the endpoint config's DestinationS3Uri, in the data bucket
DRIFT_REPORTS_PREFIX: Final = "monitoring/reports/drift"
CHAMPION_MODEL_KEY: Final = "models/current/model.tar.gz"  # the serving model, with its baseline
VARIANT: Final = "AllTraffic"
PROCESSING_ROOT: Final = "/opt/ml/processing"
CAPTURE_ROOT: Final = f"{PROCESSING_ROOT}/input/endpoint"  # dataset_source
PARTIALS_INPUT: Final = f"{PROCESSING_ROOT}/input/partials"  # the reduce job's input
OUTPUT_ROOT: Final = f"{PROCESSING_ROOT}/output"  # output_path
PARTIALS: Final = "partials"  # under the hour's report prefix: one folder per map host
DRIFT_MODULE: Final = "sagemaker_jobs.monitoring.drift"
JOB_NAME_MAX: Final = 63  # CreateProcessingJob's ProcessingJobName (botocore's sagemaker model)
MAX_INSTANCES: Final = 100  # ProcessingClusterConfig.InstanceCount (botocore's sagemaker model)
LAKE_VARIABLES: Final = ("CLAIMS_RISK_LAKE_ROOT", "CLAIMS_RISK_LAKE_DATABASE", "CLAIMS_RISK_LAKE_WORKGROUP")
PHASE_VARIABLE: Final = "CLAIMS_RISK_DRIFT_PHASE"  # map or reduce; absent for the one-instance job
PARTIALS_VARIABLE: Final = "CLAIMS_RISK_DRIFT_PARTIALS"
# The event the reduce waits for (EventBridge's detail-type for SageMaker processing jobs).
PROCESSING_JOB_STATE_CHANGE: Final = "SageMaker Processing Job State Change"
Phase = Literal["map", "reduce"]
_STAMP: Final = re.compile(r"^\d{10}$")


@dataclass(frozen=True)
class DriftJobSettings:
    """What the deployment tells the trigger (the Lambda's environment)."""

    image: str
    role_arn: str
    bucket: str
    endpoint: str
    kms_key_arn: str
    job_prefix: str  # e.g. claims-risk-dev: every job the stack starts carries it
    instance_type: str = "ml.m5.large"  # the stage's (cdk/config.py), through the Lambda's environment
    instance_count: int = 1  # above 1: the map job's instances (then a one-instance reduce)
    volume_gb: int = 20
    max_runtime_s: int = 1800
    # The claims lake the job writes its window and figures to: CLAIMS_RISK_LAKE_ROOT, _DATABASE and
    # _WORKGROUP (shared/settings.py, LakeSettings), as the stage defines them (cdk/config.py).
    lake: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_instance_count(self.instance_count)
        unknown = sorted(set(self.lake) - set(LAKE_VARIABLES))
        if unknown:
            raise ValueError(f"the drift job's lake takes {list(LAKE_VARIABLES)}, not {unknown}")

    @property
    def sharded(self) -> bool:
        return self.instance_count > 1


def check_instance_count(count: int) -> None:
    """Any count SageMaker takes: above 1 the job maps over shards of the hour and a reduce merges
    them (see the module's docstring). Instances beyond the hour's capture objects get no shard and
    only add their start-up (they write empty partials), which the stage's choice has to weigh."""
    if not 1 <= count <= MAX_INSTANCES:
        raise ValueError(
            f"the drift job runs on 1 to {MAX_INSTANCES} instances (SageMaker's ProcessingInstanceCount), "
            f"not {count}"
        )


@dataclass(frozen=True)
class DriftWindow:
    start: dt.datetime  # inclusive, on the hour, UTC
    end: dt.datetime  # exclusive

    @classmethod
    def hour_before(cls, now: dt.datetime) -> DriftWindow:
        """The last full hour before ``now``: the hour SageMaker has finished writing."""
        end = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        return cls(end - dt.timedelta(hours=1), end)

    @classmethod
    def hour_of(cls, stamp: str) -> DriftWindow:
        """The hour a job name's ``yyyymmddhh`` names."""
        start = dt.datetime.strptime(stamp, "%Y%m%d%H").replace(tzinfo=dt.UTC)
        return cls(start, start + dt.timedelta(hours=1))


def capture_uri(settings: DriftJobSettings, window: DriftWindow) -> str:
    return (
        f"s3://{settings.bucket}/{CAPTURE_PREFIX}/{settings.endpoint}/{VARIANT}/{window.start:%Y/%m/%d/%H}/"
    )


def capture_local_path(settings: DriftJobSettings, window: DriftWindow) -> str:
    """Where the hour's capture lands: SageMaker places each object of an S3Prefix input under
    LocalPath by its key after the prefix, so a LocalPath of the capture's own folders keeps the
    layout the job reads the hour from (the lake's partition)."""
    return f"{CAPTURE_ROOT}/{settings.endpoint}/{VARIANT}/{window.start:%Y/%m/%d/%H}"


def reports_uri(settings: DriftJobSettings, window: DriftWindow) -> str:
    return f"s3://{settings.bucket}/{DRIFT_REPORTS_PREFIX}/{settings.endpoint}/{window.start:%Y/%m/%d/%H}"


def partials_uri(settings: DriftJobSettings, window: DriftWindow) -> str:
    return f"{reports_uri(settings, window)}/{PARTIALS}"


def _name_stem(job_prefix: str, phase: Phase | None) -> str:
    """What a job name holds before its hour: ``<prefix>-drift-[map-|reduce-]``, or a digest of the
    prefix when the whole name would pass SageMaker's 63 characters."""
    infix = f"drift-{phase}-" if phase else "drift-"
    stem = f"{job_prefix}-{infix}"
    if len(stem) + len("yyyymmddhh") > JOB_NAME_MAX:
        stem = f"{infix}{hashlib.sha256(job_prefix.encode()).hexdigest()[:8]}-"
    return stem


def job_name(settings: DriftJobSettings, window: DriftWindow, phase: Phase | None = None) -> str:
    """One name per endpoint, hour and phase, so a second trigger of the same hour is refused by
    SageMaker (and a reduce started twice by a repeated event runs once)."""
    return f"{_name_stem(settings.job_prefix, phase)}{window.start:%Y%m%d%H}"


def map_job_prefix(job_prefix: str) -> str:
    """The names of a stage's map jobs start with this: the EventBridge rule that starts the reduce
    matches it (cdk/monitoring.py)."""
    return _name_stem(job_prefix, "map")


def map_job_window(settings: DriftJobSettings, name: str) -> DriftWindow | None:
    """The hour of a map job, from its name; None for any other job."""
    stem = map_job_prefix(settings.job_prefix)
    stamp = name[len(stem) :] if name.startswith(stem) else ""
    return DriftWindow.hour_of(stamp) if _STAMP.match(stamp) else None


def _times(window: DriftWindow) -> dict[str, str]:
    return {
        "start_time": window.start.isoformat().replace("+00:00", "Z"),
        "end_time": window.end.isoformat().replace("+00:00", "Z"),
    }


def _request(
    settings: DriftJobSettings,
    name: str,
    environment: Mapping[str, str],
    job_input: Mapping[str, Any],
    output: Mapping[str, Any],
    instance_count: int,
    phase: str,
) -> dict[str, Any]:
    return {
        "ProcessingJobName": name,
        "RoleArn": settings.role_arn,
        "AppSpecification": {"ImageUri": settings.image, "ContainerEntrypoint": ["job", DRIFT_MODULE]},
        "Environment": dict(environment),
        "ProcessingInputs": [job_input],
        "ProcessingOutputConfig": {"Outputs": [output], "KmsKeyId": settings.kms_key_arn},
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": instance_count,
                "InstanceType": settings.instance_type,
                "VolumeSizeInGB": settings.volume_gb,
                "VolumeKmsKeyId": settings.kms_key_arn,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime_s},
        "Tags": [{"Key": "claims-risk:job", "Value": phase}],
    }


def _capture_input(settings: DriftJobSettings, window: DriftWindow) -> dict[str, Any]:
    return {
        "InputName": "endpoint",
        "S3Input": {
            "S3Uri": capture_uri(settings, window),
            "LocalPath": capture_local_path(settings, window),
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            # On several instances each gets its share of the hour's objects (the map).
            "S3DataDistributionType": "ShardedByS3Key" if settings.sharded else "FullyReplicated",
        },
    }


def drift_job_request(settings: DriftJobSettings, window: DriftWindow) -> dict[str, Any]:
    """The ``CreateProcessingJob`` request of one hour's drift job: the whole job on one instance,
    else the map over ``instance_count`` instances (its reduce: :func:`drift_reduce_request`)."""
    environment = {
        # Model Monitor's bring-your-own-container contract, which the drift job reads.
        "dataset_source": CAPTURE_ROOT,
        "output_path": OUTPUT_ROOT,
        **_times(window),
        "publish_cloudwatch_metrics": "Disabled" if settings.sharded else "Enabled",
        "CLAIMS_RISK_ENDPOINT": settings.endpoint,
        "CLAIMS_RISK_MODEL_URI": f"s3://{settings.bucket}/{CHAMPION_MODEL_KEY}",
        **settings.lake,
    }
    if not settings.sharded:
        return _request(
            settings,
            job_name(settings, window),
            environment,
            _capture_input(settings, window),
            _report_output(settings, window),
            1,
            "drift",
        )
    environment[PHASE_VARIABLE] = "map"
    output = {
        "OutputName": PARTIALS,
        # Each host writes under its own folder (partials/<host>/), so no two upload the same key.
        "S3Output": {
            "S3Uri": partials_uri(settings, window),
            "LocalPath": OUTPUT_ROOT,
            "S3UploadMode": "EndOfJob",
        },
    }
    return _request(
        settings,
        job_name(settings, window, "map"),
        environment,
        _capture_input(settings, window),
        output,
        settings.instance_count,
        "drift-map",
    )


def drift_reduce_request(settings: DriftJobSettings, window: DriftWindow) -> dict[str, Any]:
    """The ``CreateProcessingJob`` request that merges a map job's partials into the hour's report,
    on one instance: the report lands where the one-instance job writes it."""
    if not settings.sharded:
        raise ValueError("a drift job on one instance has no reduce")
    environment = {
        "output_path": OUTPUT_ROOT,  # the reduce reads no capture: no dataset_source
        **_times(window),
        "publish_cloudwatch_metrics": "Enabled",
        "CLAIMS_RISK_ENDPOINT": settings.endpoint,
        PHASE_VARIABLE: "reduce",
        PARTIALS_VARIABLE: PARTIALS_INPUT,
        **settings.lake,
    }
    partials = {
        "InputName": PARTIALS,
        "S3Input": {
            "S3Uri": f"{partials_uri(settings, window)}/",
            "LocalPath": PARTIALS_INPUT,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated",
        },
    }
    return _request(
        settings,
        job_name(settings, window, "reduce"),
        environment,
        partials,
        _report_output(settings, window),
        1,
        "drift-reduce",
    )


def _report_output(settings: DriftJobSettings, window: DriftWindow) -> dict[str, Any]:
    """Where the hour's report goes: the one-instance job and the reduce write the same place."""
    return {
        "OutputName": "report",
        "S3Output": {
            "S3Uri": reports_uri(settings, window),
            "LocalPath": OUTPUT_ROOT,
            "S3UploadMode": "EndOfJob",
        },
    }
