"""The model registry on MLflow: tracking runs, registered model versions and the ``champion`` alias.

Locally the tracking URI is a sqlite file in the data folder, with artifacts beside it; in the cloud it
is a tracking server (for example SageMaker's managed MLflow, with the ``sagemaker-mlflow`` plugin).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

from shared.ports import (
    ChallengerRecord,
    ChallengerRegistration,
    ModelRegistry,
    RegisteredModelVersion,
)

CHAMPION_ALIAS: Final = "champion"
DEFAULT_EXPERIMENT: Final = "claims-risk"
MODEL_ARTIFACT_PATH: Final = "model"
_MAX_PARAM_LENGTH: Final = 6000  # MLflow's limit on a param value


def default_artifact_root(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite-backed store live beside the database, not in the working directory."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return (Path(tracking_uri[len(prefix) :]).parent / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides where artifacts go


def ensure_experiment(tracking_uri: str, name: str = DEFAULT_EXPERIMENT) -> str:
    """The experiment's id, creating it with the right artifact location the first time."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=default_artifact_root(tracking_uri)))


class MlflowModelRegistry:
    """:class:`shared.ports.ModelRegistry` over an MLflow tracking and registry URI."""

    def __init__(self, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _version(self, name: str, raw: Any) -> RegisteredModelVersion:
        tags = dict(raw.tags or {})
        return RegisteredModelVersion(
            name=name,
            version=str(raw.version),
            model_version=tags.get("model_version", ""),
            source=str(raw.source),
            aliases=tuple(getattr(raw, "aliases", ()) or ()),
            tags=tags,
        )

    def champion(self, name: str) -> RegisteredModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            raw = self.client.get_model_version_by_alias(name, CHAMPION_ALIAS)
        except MlflowException:  # no such model, or no alias yet
            return None
        return self._version(name, raw)

    def fetch(self, version: RegisteredModelVersion, into: Path) -> Path:
        from mlflow.artifacts import download_artifacts

        into.mkdir(parents=True, exist_ok=True)
        local = Path(download_artifacts(artifact_uri=version.source, dst_path=str(into)))
        tarballs = sorted(local.rglob("*.tar.gz")) if local.is_dir() else [local]
        if not tarballs:
            raise FileNotFoundError(f"{name_of(version)} has no model.tar.gz at {version.source}")
        return tarballs[0]

    def record_run(
        self,
        tarball: Path,
        *,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        attachments: Sequence[Path] = (),
    ) -> str:
        from mlflow.entities import Metric, Param, RunTag

        experiment_id = ensure_experiment(self.tracking_uri, self.experiment)
        run = self.client.create_run(
            experiment_id, run_name=f"evaluate {tags.get('model_version', tarball.name)}", tags=dict(tags)
        )
        run_id = str(run.info.run_id)
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        self.client.log_artifact(run_id, str(tarball), MODEL_ARTIFACT_PATH)
        for path in attachments:
            self.client.log_artifact(run_id, str(path), "evaluation")
        self.client.set_terminated(run_id)
        return run_id

    def register(self, name: str, run_id: str, tags: Mapping[str, str]) -> RegisteredModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, description="claims risk triage model")
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}"
        raw = self.client.create_model_version(name, source, run_id=run_id, tags=dict(tags))
        return self._version(name, raw)

    def promote(self, name: str, version: str) -> None:
        self.client.set_registered_model_alias(name, CHAMPION_ALIAS, version)


def name_of(version: RegisteredModelVersion) -> str:
    return f"{version.name} v{version.version}"


class MlflowChallengers:
    """:class:`shared.ports.ChallengerRegistry` on a :class:`shared.ports.ModelRegistry` (MLflow):
    every challenger is a tracking run with its model, report, evaluation and gates; registering
    makes a new version of the registered model from that run."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def track(self, challenger: ChallengerRecord) -> str:
        return self.registry.record_run(
            _path(challenger.model_uri),
            params=challenger.params,
            metrics=challenger.metrics,
            tags=challenger.tags,
            attachments=[
                _path(uri) for uri in (challenger.report_uri, challenger.evaluation_uri, challenger.gates_uri)
            ],
        )

    def register(self, challenger: ChallengerRecord, tracked: str) -> ChallengerRegistration:
        version = self.registry.register(challenger.name, tracked, challenger.tags)
        details = {"source": version.source, "run_id": tracked}
        return ChallengerRegistration(version.name, version.version, tracked, details)


def _path(uri: str) -> Path:
    """A local artifact's path from its ``file://`` URI or plain path (MLflow logs files)."""
    return Path(urlparse(uri).path if uri.startswith("file://") else uri)
