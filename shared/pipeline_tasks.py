"""The retraining state machine's own tasks: the gates, the registration and the model card.

The same decisions as the local runner's (:mod:`shared.promotion`), over the reports the jobs left
in the artifact store. The pipeline-tasks Lambda parses its payload into these models and calls
these functions through the ports.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.gates import GateConfig
from shared.ports import ArtifactStore, ModelPackageRegistry, ModelPackageRequest, ModelVersionRegistry
from shared.promotion import decide, registered_model_name, registration_record


class GatesTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["gates"] = "gates"
    quality: str = Field(description="URI of the validate step's data_quality.json")
    evaluation: str = Field(description="URI of the evaluate step's evaluation.json")
    gates: GateConfig = Field(default_factory=GateConfig)


class RegisterTask(GatesTask):
    action: Literal["register"] = "register"  # type: ignore[assignment]
    model: str = Field(description="URI of the trained model.tar.gz")
    report: str = Field(description="URI of the evaluation's report.html")
    image: str = Field(description="the serving container image")
    model_package_group: str
    run: str = Field(description="the Step Functions execution name")


class PublishCardTask(BaseModel):
    """After the endpoint serves the new model: its manifest becomes the API's model card."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["publish_card"] = "publish_card"
    model: str = Field(description="URI of the model.tar.gz that now serves")
    card: str = Field(description="where the API reads the serving model's card")
    champion: str = Field(description="where the next run's evaluation finds the model to beat")


def run_publish_card(task: PublishCardTask, store: ArtifactStore) -> dict[str, Any]:
    manifest = json.loads(store.read_tar_member(task.model, "manifest.json"))
    store.copy(task.model, task.champion)
    store.write_json(task.card, manifest)
    return {"card": task.card, "champion": task.champion, "model_version": manifest.get("model_version")}


def run_gates(task: GatesTask, store: ArtifactStore) -> dict[str, Any]:
    decision = decide(store.read_json(task.quality), store.read_json(task.evaluation), task.gates)
    return {
        "passed": decision.passed,
        "summary": decision.summary(),
        "gates": [g.model_dump() for g in decision.gates],
    }


def run_register(
    task: RegisterTask,
    store: ArtifactStore,
    packages: ModelPackageRegistry,
    mlflow: ModelVersionRegistry | None,
) -> dict[str, Any]:
    quality, evaluation = store.read_json(task.quality), store.read_json(task.evaluation)
    decision = decide(quality, evaluation, task.gates)
    if not decision.passed:  # the Choice should never route here; refuse rather than register
        raise ValueError(f"refusing to register a challenger that failed the gates: {decision.summary()}")
    _, metrics, tags = registration_record(evaluation, quality, decision)
    tags = {**tags, "pipeline_run": task.run}
    arn = packages.register(
        ModelPackageRequest(
            group=task.model_package_group,
            image_uri=task.image,
            model_data_uri=task.model,
            evaluation_uri=task.evaluation,
            report_uri=task.report,
            description=f"{tags['family']} model {tags['model_version']}: {decision.summary()}",
            metrics=metrics,
            tags=tags,
        )
    )
    mlflow_version = (
        mlflow.register(registered_model_name(tags["spec"]), task.model, {**tags, "model_package_arn": arn})
        if mlflow is not None
        else None
    )
    return {
        "model_package_arn": arn,
        "model_version": tags["model_version"],
        "mlflow_version": mlflow_version,
        "metrics": metrics,
    }
