"""The retraining state machine's Lambda tasks: ``prepare``, ``gates``, ``register`` and
``publish_card`` (see shared.pipeline_tasks)."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field, TypeAdapter

from shared.adapters.artifacts import S3ArtifactStore
from shared.adapters.model_packages import MlflowRestRegistry, SageMakerModelPackages
from shared.pipeline_tasks import (
    GatesTask,
    PrepareTask,
    PublishCardTask,
    RegisterTask,
    run_gates,
    run_publish_card,
    run_register,
)
from shared.ports import ArtifactStore, ModelPackageRegistry, ModelVersionRegistry
from shared.settings import PipelineTasksSettings
from step_functions.pipeline import prepare_run

# In Lambda, read once here: a missing setting fails the cold start, naming its variable.
COLD_START_SETTINGS = PipelineTasksSettings.at_cold_start()

logger = Logger(service="claims-risk-pipeline-tasks")
tracer = Tracer(service="claims-risk-pipeline-tasks")
# The payload's "action" says which task it is.
AnyTask = PrepareTask | GatesTask | RegisterTask | PublishCardTask
TASKS: TypeAdapter[AnyTask] = TypeAdapter(Annotated[AnyTask, Field(discriminator="action")])


@cache
def artifact_store() -> ArtifactStore:
    return S3ArtifactStore()


@cache
def model_packages() -> ModelPackageRegistry:
    return SageMakerModelPackages()


@cache
def mlflow_registry() -> ModelVersionRegistry | None:
    """Only when the deployment names a tracking server (it costs money while it runs)."""
    settings = COLD_START_SETTINGS or PipelineTasksSettings.load()
    if not settings.mlflow_tracking_uri:
        return None
    return MlflowRestRegistry(settings.mlflow_tracking_uri, settings.required("aws_region"))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = TASKS.validate_python(event)  # a bad payload fails the state, whose Catch notifies on-call
    if isinstance(task, PrepareTask):
        result = prepare_run(task.input)  # a bad input fails here, naming the field, before any job
    elif isinstance(task, RegisterTask):
        result = run_register(task, artifact_store(), model_packages(), mlflow_registry())
    elif isinstance(task, PublishCardTask):
        result = run_publish_card(task, artifact_store())
    else:
        result = run_gates(task, artifact_store(), model_packages(), mlflow_registry())
    logger.info("pipeline task done", extra={"action": task.action, "result": result})
    return result
