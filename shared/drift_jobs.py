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
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

CAPTURE_PREFIX: Final = "monitoring/capture"  # the endpoint config's DestinationS3Uri, in the data bucket
DRIFT_REPORTS_PREFIX: Final = "monitoring/reports/drift"
CHAMPION_MODEL_KEY: Final = "models/current/model.tar.gz"  # the serving model, with its baseline
VARIANT: Final = "AllTraffic"
PROCESSING_ROOT: Final = "/opt/ml/processing"
DRIFT_MODULE: Final = "sagemaker_jobs.monitoring.drift"
JOB_NAME_MAX: Final = 63  # CreateProcessingJob's ProcessingJobName (botocore's sagemaker model)
LAKE_VARIABLES: Final = ("CLAIMS_RISK_LAKE_ROOT", "CLAIMS_RISK_LAKE_DATABASE", "CLAIMS_RISK_LAKE_WORKGROUP")
# Sharded by S3 key, each instance would see part of the hour and publish its own figures for it.
WHY_ONE_INSTANCE: Final = (
    "its drift figures (PSI, missing rates) compare the whole hour of capture with the baseline, "
    "and it publishes one set of metrics per hour"
)


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
    instance_count: int = 1
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


def check_instance_count(count: int) -> None:
    if count != 1:
        raise ValueError(f"the drift job runs on one instance, not {count}: {WHY_ONE_INSTANCE}")


@dataclass(frozen=True)
class DriftWindow:
    start: dt.datetime  # inclusive, on the hour, UTC
    end: dt.datetime  # exclusive

    @classmethod
    def hour_before(cls, now: dt.datetime) -> DriftWindow:
        """The last full hour before ``now``: the hour SageMaker has finished writing."""
        end = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        return cls(end - dt.timedelta(hours=1), end)


def capture_uri(settings: DriftJobSettings, window: DriftWindow) -> str:
    return (
        f"s3://{settings.bucket}/{CAPTURE_PREFIX}/{settings.endpoint}/{VARIANT}/{window.start:%Y/%m/%d/%H}/"
    )


def job_name(settings: DriftJobSettings, window: DriftWindow) -> str:
    """One name per endpoint and hour, so a second trigger of the same hour is refused by SageMaker."""
    stamp = f"{window.start:%Y%m%d%H}"
    name = f"{settings.job_prefix}-drift-{stamp}"
    if len(name) > JOB_NAME_MAX:
        digest = hashlib.sha256(settings.job_prefix.encode()).hexdigest()[:8]
        name = f"drift-{digest}-{stamp}"
    return name


def drift_job_request(settings: DriftJobSettings, window: DriftWindow) -> dict[str, Any]:
    """The ``CreateProcessingJob`` request of one hour's drift job."""
    source = f"{PROCESSING_ROOT}/input/endpoint"
    output = f"{PROCESSING_ROOT}/output"
    stamp = f"{window.start:%Y/%m/%d/%H}"
    return {
        "ProcessingJobName": job_name(settings, window),
        "RoleArn": settings.role_arn,
        "AppSpecification": {"ImageUri": settings.image, "ContainerEntrypoint": ["job", DRIFT_MODULE]},
        "Environment": {
            # Model Monitor's bring-your-own-container contract, which the drift job reads.
            "dataset_source": source,
            "output_path": output,
            "start_time": window.start.isoformat().replace("+00:00", "Z"),
            "end_time": window.end.isoformat().replace("+00:00", "Z"),
            "publish_cloudwatch_metrics": "Enabled",
            "CLAIMS_RISK_ENDPOINT": settings.endpoint,
            "CLAIMS_RISK_MODEL_URI": f"s3://{settings.bucket}/{CHAMPION_MODEL_KEY}",
            **settings.lake,
        },
        "ProcessingInputs": [
            {
                "InputName": "endpoint",
                "S3Input": {
                    "S3Uri": capture_uri(settings, window),
                    "LocalPath": source,
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "report",
                    "S3Output": {
                        "S3Uri": f"s3://{settings.bucket}/{DRIFT_REPORTS_PREFIX}/{settings.endpoint}/{stamp}",
                        "LocalPath": output,
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ],
            "KmsKeyId": settings.kms_key_arn,
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": settings.instance_count,
                "InstanceType": settings.instance_type,
                "VolumeSizeInGB": settings.volume_gb,
                "VolumeKmsKeyId": settings.kms_key_arn,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime_s},
        "Tags": [{"Key": "claims-risk:job", "Value": "drift"}],
    }
