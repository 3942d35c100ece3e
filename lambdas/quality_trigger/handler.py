"""The late-outcomes trigger: a labels file created under ``outcomes/incoming/`` of the data bucket
(S3's "Object Created" event, through an EventBridge rule) starts the quality job that loads its
outcomes into the claims lake and judges the serving model on them (see shared.quality_jobs).

A repeated event starts nothing more: the job is named after the object version, and SageMaker
refuses a second job of one name. An upload of the same file again is a new version: a re-run."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.adapters.processing_jobs import SageMakerProcessingLauncher
from shared.ports import ProcessingJobLauncher
from shared.quality_jobs import NoQualityJob, QualityJobConfig, plan_quality_job
from shared.settings import QualityTriggerSettings

SERVICE = "claims-risk-quality-trigger"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))


class _Wiring:
    """Built from the settings on first use; tests pass fakes."""

    config: QualityJobConfig | None = None
    launcher: ProcessingJobLauncher | None = None


def wire(config: QualityJobConfig | None = None, launcher: ProcessingJobLauncher | None = None) -> None:
    _Wiring.config, _Wiring.launcher = config, launcher


# In Lambda, read once here: a missing setting fails the cold start, naming its variable.
COLD_START_SETTINGS = QualityTriggerSettings.at_cold_start()
if COLD_START_SETTINGS is not None:
    _Wiring.config = COLD_START_SETTINGS.quality_job()


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = _Wiring.config or QualityTriggerSettings.load().quality_job()
    plan = plan_quality_job(event, config)  # another event's shape fails here, naming the field
    if isinstance(plan, NoQualityJob):
        logger.info(f"no quality job for {plan.uri}: {plan.reason}", extra={"object": plan.uri})
        return {"started": None, "labels": plan.uri, "reason": plan.reason}
    launcher = _Wiring.launcher or SageMakerProcessingLauncher()
    job = launcher.start(plan.request)  # its ARN, or its name when an earlier delivery started it
    logger.info(
        f"started {plan.job_name} to judge {plan.uri}",
        extra={"object": plan.uri, "version_id": plan.version_id, "job_name": plan.job_name, "job": job},
    )
    return {"started": job, "job_name": plan.job_name, "labels": plan.uri, "version_id": plan.version_id}
