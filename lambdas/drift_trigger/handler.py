"""The hourly drift trigger: EventBridge Scheduler invokes it with the schedule's time; it starts the
drift job over the last full hour of the endpoint's captured traffic (see shared.drift_jobs), or
says why it did not (nothing was captured that hour).

When the stage runs the drift job on several instances, that job is the map, and an EventBridge rule
invokes this function again with SageMaker's "Processing Job State Change" event once the map job
has completed: it then starts the reduce over the map's partials."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from shared.adapters.artifacts import S3ArtifactStore
from shared.adapters.processing_jobs import SageMakerProcessingLauncher
from shared.drift_jobs import (
    PROCESSING_JOB_STATE_CHANGE,
    DriftJobSettings,
    DriftWindow,
    capture_uri,
    drift_job_request,
    drift_reduce_request,
    job_name,
    map_job_window,
)
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


class ProcessingJobState(BaseModel):
    """The fields of SageMaker's event detail this function reads (the rest is ignored)."""

    model_config = ConfigDict(extra="ignore")

    ProcessingJobName: str
    ProcessingJobStatus: str


class ProcessingJobStateChange(BaseModel):
    """EventBridge's event for a processing job's new status (``source`` aws.sagemaker)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    detail_type: str = Field(alias="detail-type")
    detail: ProcessingJobState


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


def start_reduce(event: ProcessingJobStateChange) -> dict[str, Any]:
    """The reduce of a map job that completed; any other job or status starts nothing (the rule
    matches only completed map jobs: this is the second lock)."""
    settings = _Wiring.settings or DriftTriggerSettings.load().drift_job()
    launcher = _Wiring.launcher or SageMakerProcessingLauncher()
    name, status = event.detail.ProcessingJobName, event.detail.ProcessingJobStatus
    window = map_job_window(settings, name)
    if window is None or status != "Completed" or not settings.sharded:
        logger.info("not a completed map job of this stage: no reduce", extra={"job": name, "status": status})
        return {"started": None, "job": name, "reason": f"{name} ({status}) is not a completed map job"}
    hour = f"{window.start:%Y-%m-%dT%H}:00Z"
    # SageMaker may send an event more than once: the reduce's name is one per hour, so a repeat is
    # refused by SageMaker and the first reduce stands.
    job = launcher.start(drift_reduce_request(settings, window))
    logger.info("drift reduce started", extra={"hour": hour, "map": name, "job": job})
    return {"started": job, "hour": hour, "map": name, "reduce": job_name(settings, window, "reduce")}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if (event or {}).get("detail-type") == PROCESSING_JOB_STATE_CHANGE:
        return start_reduce(ProcessingJobStateChange.model_validate(event))
    return start_drift_job(ScheduledInvocation.model_validate(event or {}))
