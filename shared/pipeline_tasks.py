"""The retraining state machine's own tasks: the gates, the registration and the model card.

The gates and the registration are :mod:`shared.challengers`' functions, the very ones the local
runner calls: this module turns the state machine's payloads into a :class:`ChallengerRun` and
SageMaker's model registry into the :class:`shared.ports.ChallengerRegistry` port. The
pipeline-tasks Lambda parses its payload into these models and calls these functions.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.challengers import REGISTRATION, ChallengerRun, judge_challenger, register_challenger
from shared.gates import GateConfig
from shared.ports import (
    ArtifactStore,
    ChallengerRecord,
    ChallengerRegistration,
    ModelPackageRegistry,
    ModelPackageRequest,
    ModelVersionRegistry,
)

# Where the evaluate step leaves its reports in a run folder (the state machine's layout and the
# local runner's): the run folder and the report follow from the evaluation's URI.
EVALUATION_SUFFIX: Final = "/evaluation/evaluation.json"
# The model archive's spec file: shared.ml.model.SPEC_FILE, which this Lambda's light bundle cannot import.
SPEC_FILE: Final = "feature_spec.json"


class ChallengerTask(BaseModel):
    """What the gates and register tasks are given: where the run's reports lie."""

    model_config = ConfigDict(extra="forbid")

    quality: str = Field(description="URI of the validate step's data_quality.json")
    evaluation: str = Field(description="URI of the evaluate step's evaluation.json")
    gates: GateConfig = Field(default_factory=GateConfig)
    model: str | None = Field(default=None, description="URI of the trained model.tar.gz")
    report: str | None = Field(
        default=None, description="URI of the evaluate step's report.html (default: beside evaluation)"
    )
    image: str | None = Field(default=None, description="the serving container image")
    model_package_group: str | None = None
    run: str | None = Field(
        default=None, description="the Step Functions execution name (default: the run folder's name)"
    )
    run_folder: str | None = Field(
        default=None,
        description="URI of the run folder the gates and register steps write under "
        f"(default: the one holding {EVALUATION_SUFFIX.lstrip('/')})",
    )

    def challenger_run(self) -> ChallengerRun:
        folder = self.run_folder
        if folder is None:
            if not self.evaluation.endswith(EVALUATION_SUFFIX):
                raise ValueError(f"name the run_folder: {self.evaluation} is not <run>{EVALUATION_SUFFIX}")
            folder = self.evaluation.removesuffix(EVALUATION_SUFFIX)
        return ChallengerRun(
            folder=folder,
            name=self.run or folder.rstrip("/").rsplit("/", 1)[-1],
            quality=self.quality,
            evaluation=self.evaluation,
            report=self.report or self.evaluation.rsplit("/", 1)[0] + "/report.html",
            model=self.model,
        )


class GatesTask(ChallengerTask):
    """The challenger is tracked in the model registry only when the payload names the model, the
    image and the model package group; otherwise the register step tracks it (rejected ones are
    then not tracked)."""

    action: Literal["gates"] = "gates"


class RegisterTask(ChallengerTask):
    action: Literal["register"] = "register"
    model: str = Field(description="URI of the trained model.tar.gz")
    report: str = Field(
        description="URI of the evaluation's report.html (the package links the gates step's copy)"
    )
    image: str = Field(description="the serving container image")
    model_package_group: str
    run: str = Field(description="the Step Functions execution name")


class PublishCardTask(BaseModel):
    """After the endpoint serves the new model: its manifest becomes the API's model card, and its
    feature spec the one the batch trigger checks dropped CSV headers against."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["publish_card"] = "publish_card"
    model: str = Field(description="URI of the model.tar.gz that now serves")
    card: str = Field(description="where the API reads the serving model's card")
    champion: str = Field(description="where the next run's evaluation finds the model to beat")
    spec: str | None = Field(
        default=None,
        description=f"where the batch trigger reads the serving model's {SPEC_FILE} (the state machine "
        "always names it; a payload without it, from a run started before it did, publishes none)",
    )


def run_publish_card(task: PublishCardTask, store: ArtifactStore) -> dict[str, Any]:
    # Everything is read and checked before anything is written: a bad archive publishes nothing.
    manifest = json.loads(store.read_tar_member(task.model, "manifest.json"))
    spec = (task.spec, _model_spec(task.model, store)) if task.spec else None
    store.copy(task.model, task.champion)
    if spec is not None:  # before the card: whoever sees the new card also finds the new spec
        store.write_bytes(*spec)
    store.write_json(task.card, manifest)
    return {
        "card": task.card,
        "champion": task.champion,
        "spec": task.spec,
        "model_version": manifest.get("model_version"),
    }


def _model_spec(model: str, store: ArtifactStore) -> bytes:
    """The archive's feature spec, checked as the batch trigger will parse it. An archive without one
    (every archive the training job writes has one) was trained on the default claims spec: that is
    published then, so no earlier model's spec is left to stand for this one."""
    from shared.feature_spec import FeatureSpec, claims_spec

    try:
        body = store.read_tar_member(model, SPEC_FILE)
    except FileNotFoundError:
        return claims_spec().to_json().encode()
    try:
        FeatureSpec.model_validate_json(body)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"the {SPEC_FILE} in {model} is not a feature spec: {error}") from None
    return body


class ModelPackageChallengers:
    """:class:`shared.ports.ChallengerRegistry` on SageMaker's model registry: every challenger
    becomes a version of the model package group, "Rejected" when the gates stopped it and
    "PendingManualApproval" when they passed it; registering approves it (and, with a tracking
    server, adds the version to MLflow's registry too)."""

    def __init__(
        self, packages: ModelPackageRegistry, mlflow: ModelVersionRegistry | None, *, group: str, image: str
    ) -> None:
        self.packages, self.mlflow, self.group, self.image = packages, mlflow, group, image

    def _request(self, challenger: ChallengerRecord, approval: str) -> ModelPackageRequest:
        tags = challenger.tags
        return ModelPackageRequest(
            group=self.group,
            image_uri=self.image,
            model_data_uri=challenger.model_uri,
            evaluation_uri=challenger.evaluation_uri,
            report_uri=challenger.report_uri,
            description=f"{tags['family']} model {tags['model_version']}: {challenger.summary}",
            metrics=challenger.metrics,
            tags=tags,
            approval=approval,
        )

    def track(self, challenger: ChallengerRecord) -> str:
        approval = "PendingManualApproval" if challenger.passed else "Rejected"
        return self.packages.register(self._request(challenger, approval))

    def register(self, challenger: ChallengerRecord, tracked: str) -> ChallengerRegistration:
        self.packages.approve(tracked, self._request(challenger, "Approved"))
        details = {"model_package_arn": tracked}
        if self.mlflow is not None:
            tags = {**challenger.tags, "model_package_arn": tracked}
            details["mlflow_version"] = self.mlflow.register(challenger.name, challenger.model_uri, tags)
        return ChallengerRegistration(self.group, tracked.rsplit("/", 1)[-1], tracked, details)


def _challengers(
    task: ChallengerTask, packages: ModelPackageRegistry, mlflow: ModelVersionRegistry | None
) -> ModelPackageChallengers | None:
    if task.image is None or task.model_package_group is None:
        return None
    return ModelPackageChallengers(packages, mlflow, group=task.model_package_group, image=task.image)


def run_gates(
    task: GatesTask,
    store: ArtifactStore,
    packages: ModelPackageRegistry,
    mlflow: ModelVersionRegistry | None,
) -> dict[str, Any]:
    outcome = judge_challenger(task.challenger_run(), task.gates, store, _challengers(task, packages, mlflow))
    return outcome.result()


def run_register(
    task: RegisterTask,
    store: ArtifactStore,
    packages: ModelPackageRegistry,
    mlflow: ModelVersionRegistry | None,
) -> dict[str, Any]:
    registry = ModelPackageChallengers(packages, mlflow, group=task.model_package_group, image=task.image)
    outcome = register_challenger(task.challenger_run(), store, registry)
    return {
        "model_package_arn": outcome.registration.tracked,
        "model_version": outcome.challenger.tags["model_version"],
        "mlflow_version": outcome.registration.details.get("mlflow_version"),
        "metrics": dict(outcome.challenger.metrics),
        "registration": task.challenger_run().uri(REGISTRATION),
    }


class PrepareTask(BaseModel):
    """The state machine's first state: the execution's input, to check and complete (the handler
    hands it to :func:`step_functions.pipeline.prepare_run`, whose answer becomes the state)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["prepare"] = "prepare"
    input: dict[str, Any] = Field(default_factory=dict, description="the execution's input, as started")
