"""Ports: the interfaces through which handlers and jobs reach outside services.

Each port has an AWS adapter and a local adapter (:mod:`shared.adapters`); unit tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class EndpointError(RuntimeError):
    """The model endpoint failed or could not be reached."""


class EndpointRejectedInput(EndpointError):
    """The endpoint refused the input (its 4xx); the message says why."""


class ModelEndpoint(Protocol):
    """A deployed model that scores claims (SageMaker endpoint, or the local model server)."""

    def invoke(self, claims: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Score claims given as JSON-ready dicts; one prediction dict per claim, in order."""
        ...

    def describe(self) -> str:
        """A short name of the target, for health output and logs."""
        ...


@dataclass(frozen=True)
class RegisteredModelVersion:
    """One version of a registered model, as the registry knows it."""

    name: str
    version: str  # the registry's version number
    model_version: str  # the artifact's own version (its manifest)
    source: str  # URI of the model.tar.gz
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


class ModelRegistry(Protocol):
    """Where trained models are recorded with their lineage, and which one is the champion."""

    def champion(self, name: str) -> RegisteredModelVersion | None:
        """The version the ``champion`` alias points at, or None before the first promotion."""
        ...

    def fetch(self, version: RegisteredModelVersion, into: Path) -> Path:
        """Download the version's model.tar.gz into a folder; the path of the tarball."""
        ...

    def record_run(
        self,
        tarball: Path,
        *,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        attachments: Sequence[Path] = (),
    ) -> str:
        """Track an evaluated challenger (promoted or not) with its artifact and report; the run id."""
        ...

    def register(self, name: str, run_id: str, tags: Mapping[str, str]) -> RegisteredModelVersion:
        """A new version (not yet champion) from a recorded run's model artifact."""
        ...

    def promote(self, name: str, version: str) -> None:
        """Move the ``champion`` alias to this version."""
        ...


class ModelDeployer(Protocol):
    """Puts a model artifact behind the serving endpoint."""

    def deploy(self, tarball: Path) -> str:
        """Serve this artifact; returns where it now serves."""
        ...


class Notifier(Protocol):
    """Tells people what happened (SNS in AWS; a log file and the console locally)."""

    def notify(self, subject: str, message: Mapping[str, Any]) -> None: ...


class ModelCatalogError(RuntimeError):
    """No model card could be read (nothing deployed yet, or the store is unreachable)."""


class ModelCatalog(Protocol):
    """Where the API learns which model serves: its manifest, as the deploy step left it."""

    def current_manifest(self) -> Mapping[str, Any]:
        """The serving model's ``manifest.json`` content; raises :class:`ModelCatalogError`."""
        ...


class PipelineStartError(RuntimeError):
    """The retraining pipeline could not be started."""


class PipelineStarter(Protocol):
    """Starts the retraining pipeline (Step Functions in AWS, a local run here)."""

    def start(self, execution_id: str, inputs: Mapping[str, Any]) -> str:
        """Start a run named ``execution_id`` with these pipeline inputs; returns the execution id."""
        ...
