"""The hourly drift trigger: EventBridge Scheduler invokes it with the schedule's time; it starts the
drift job over the last full hour of the endpoint's captured traffic (see shared.drift_jobs), or
says why it did not (nothing was captured that hour)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from shared.adapters.artifacts import S3ArtifactStore
from shared.adapters.processing_jobs import SageMakerProcessingLauncher
from shared.drift_jobs import DriftJobSettings, DriftWindow, capture_uri, drift_job_request
from shared.ports import ArtifactStore, ProcessingJobLauncher
from shared.settings import DriftTriggerSettings

SERVICE = "claims-risk-drift-trigger"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))

# The deployment's settings (cdk/monitoring.py sets each), field by field, with their variables.
SETTINGS_FROM_ENV = DriftTriggerSettings.variables()


class ScheduledInvocation(BaseModel):
    """What the schedule sends: its own time (``<aws.scheduler.scheduled-time>``)."""

    model_config = ConfigDict(extra="ignore")

    scheduled_time: dt.datetime | None = Field(default=None, description="defaults to now")


class _Wiring:
    """Built from the settings on first use; tests pass fakes."""

    settings: DriftJobSettings | None = None
    store: ArtifactStore | None = None
    launcher: ProcessingJobLauncher | None = None


def wire(
    settings: DriftJobSettings | None = None,
    store: ArtifactStore | None = None,
    launcher: ProcessingJobLauncher | None = None,
) -> None:
    _Wiring.settings, _Wiring.store, _Wiring.launcher = settings, store, launcher


# In Lambda, read once here: a missing setting fails the cold start, naming its variable.
COLD_START_SETTINGS = DriftTriggerSettings.at_cold_start()
if COLD_START_SETTINGS is not None:
    _Wiring.settings = COLD_START_SETTINGS.drift_job()


def start_drift_job(invocation: ScheduledInvocation) -> dict[str, Any]:
    settings = _Wiring.settings or DriftTriggerSettings.load().drift_job()
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
