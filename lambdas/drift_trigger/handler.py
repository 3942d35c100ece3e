"""The hourly drift trigger: EventBridge Scheduler invokes it with the schedule's time; it starts the
drift job over the last full hour of the endpoint's captured traffic (see shared.drift_jobs), or
says why it did not (nothing was captured that hour)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from shared.adapters.artifacts import S3ArtifactStore
from shared.adapters.processing_jobs import SageMakerProcessingLauncher
from shared.drift_jobs import DriftJobSettings, DriftWindow, capture_uri, drift_job_request
from shared.ports import ArtifactStore, ProcessingJobLauncher

SERVICE = "claims-risk-drift-trigger"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))

# The deployment's settings (cdk/monitoring.py sets each); a missing one fails the cold start by name.
SETTINGS_FROM_ENV = {
    "image": "CLAIMS_RISK_IMAGE_URI",
    "role_arn": "CLAIMS_RISK_SAGEMAKER_ROLE_ARN",
    "bucket": "CLAIMS_RISK_DATA_BUCKET",
    "endpoint": "SAGEMAKER_ENDPOINT_NAME",
    "kms_key_arn": "CLAIMS_RISK_KMS_KEY_ARN",
    "job_prefix": "CLAIMS_RISK_JOB_PREFIX",
}


class ScheduledInvocation(BaseModel):
    """What the schedule sends: its own time (``<aws.scheduler.scheduled-time>``)."""

    model_config = ConfigDict(extra="ignore")

    scheduled_time: dt.datetime | None = Field(default=None, description="defaults to now")


def settings_from(env: dict[str, str]) -> DriftJobSettings:
    missing = [name for name in SETTINGS_FROM_ENV.values() if not env.get(name)]
    if missing:
        raise RuntimeError(f"the drift trigger is missing its settings: {', '.join(missing)}")
    values = {field: env[name] for field, name in SETTINGS_FROM_ENV.items()}
    return DriftJobSettings(
        image=values["image"],
        role_arn=values["role_arn"],
        bucket=values["bucket"],
        endpoint=values["endpoint"],
        kms_key_arn=values["kms_key_arn"],
        job_prefix=values["job_prefix"],
    )


class _Wiring:
    """Built from the environment on first use; tests pass fakes."""

    settings: DriftJobSettings | None = None
    store: ArtifactStore | None = None
    launcher: ProcessingJobLauncher | None = None


def wire(
    settings: DriftJobSettings | None = None,
    store: ArtifactStore | None = None,
    launcher: ProcessingJobLauncher | None = None,
) -> None:
    _Wiring.settings, _Wiring.store, _Wiring.launcher = settings, store, launcher


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # in Lambda: a missing setting fails the cold start
    _Wiring.settings = settings_from(dict(os.environ))


def start_drift_job(invocation: ScheduledInvocation) -> dict[str, Any]:
    settings = _Wiring.settings or settings_from(dict(os.environ))
    store = _Wiring.store or S3ArtifactStore()
    launcher = _Wiring.launcher or SageMakerProcessingLauncher()
    window = DriftWindow.hour_before(invocation.scheduled_time or dt.datetime.now(dt.UTC))
    source = capture_uri(settings, window)
    hour = f"{window.start:%Y-%m-%dT%H}:00Z"
    if not store.exists_under(source):
        logger.info("no captured traffic in the hour: no drift job", extra={"hour": hour, "source": source})
        return {"started": None, "hour": hour, "reason": f"nothing captured under {source}"}
    job = launcher.start(drift_job_request(settings, window))
    logger.info("drift job started", extra={"hour": hour, "job": job})
    return {"started": job, "hour": hour}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return start_drift_job(ScheduledInvocation.model_validate(event or {}))
