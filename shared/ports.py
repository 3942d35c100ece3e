"""Ports: the interfaces through which handlers and jobs reach outside services.

Each port has an AWS adapter and a local adapter (:mod:`shared.adapters`); unit tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # only for annotations: the API Lambda's bundle need not ship the batch domain
    import pandas as pd

    from shared.batch_jobs import TransformJobSpec
    from shared.lake import LakeTable


class EndpointError(RuntimeError):
    """The model endpoint failed or could not be reached."""


class EndpointRejectedInput(EndpointError):
    """The endpoint refused the input (its 4xx); the message says why."""


class EndpointUnavailable(EndpointError):
    """The endpoint cannot take requests now (down, restarting, throttled): worth a retry shortly."""


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


class RuntimeProcesses(Protocol):
    """The processes a runtime keeps alive beside the API (the local supervisor's children); AWS
    runs managed services and wires none."""

    def states(self) -> Mapping[str, str]:
        """Each process's name and state ("running", "restarting", ...)."""
        ...


class PipelineStartError(RuntimeError):
    """The retraining pipeline could not be started."""


class PipelineStarter(Protocol):
    """Starts the retraining pipeline (Step Functions in AWS, a local run here)."""

    def start(self, execution_id: str, inputs: Mapping[str, Any]) -> str:
        """Start a run named ``execution_id`` with these pipeline inputs; returns the execution id."""
        ...


class ArtifactStore(Protocol):
    """Where the pipeline's jobs leave their JSON reports (S3 in AWS, a folder here)."""

    def read_json(self, uri: str) -> dict[str, Any]:
        """The JSON object at ``uri``; raises ``FileNotFoundError`` naming it when absent."""
        ...

    def read_tar_member(self, uri: str, name: str) -> bytes:
        """The shallowest file called ``name`` inside the .tar.gz at ``uri``, read as a stream."""
        ...

    def write_json(self, uri: str, document: Mapping[str, Any]) -> None: ...

    def copy(self, source: str, target: str) -> None: ...

    def write_bytes(self, uri: str, body: bytes) -> None: ...

    def read_bytes(self, uri: str) -> bytes:
        """The object at ``uri``; raises ``FileNotFoundError`` naming it when absent."""
        ...

    def exists_under(self, prefix_uri: str) -> bool:
        """Whether any object lies under ``prefix_uri`` (an S3 prefix or a folder)."""
        ...


class ProcessingJobLauncher(Protocol):
    """Starts SageMaker processing jobs outside the state machine (the hourly drift job)."""

    def start(self, request: Mapping[str, Any]) -> str:
        """Start the job from a ``CreateProcessingJob`` request; its ARN, or its name when a job of
        that name already exists (a second trigger of the same hour)."""
        ...


@dataclass(frozen=True)
class ModelPackageRequest:
    """A gated model version to record in the model registry, with what it is judged by."""

    group: str
    image_uri: str
    model_data_uri: str
    evaluation_uri: str
    report_uri: str
    description: str
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    # SageMaker's ModelApprovalStatus: "Rejected" for a challenger the gates stopped,
    # "PendingManualApproval" for one that passed until the register step approves it.
    approval: str = "Approved"


class ModelPackageRegistry(Protocol):
    """The model registry of the cloud (SageMaker model packages), approved on passing the gates."""

    def register(self, request: ModelPackageRequest) -> str:
        """Create the version; returns its ARN."""
        ...

    def approve(self, arn: str, request: ModelPackageRequest) -> None:
        """Approve a version created earlier, keeping the request's description and metadata."""
        ...


class ModelVersionRegistry(Protocol):
    """An MLflow model registry reached without the mlflow package (the Lambda's side)."""

    def register(self, name: str, source: str, tags: Mapping[str, str]) -> str:
        """A new version of ``name`` from the artifact at ``source``; its version number."""
        ...


@dataclass(frozen=True)
class ChallengerRecord:
    """An evaluated challenger as a registry records it, whether the gates passed it or not."""

    name: str  # the registered model (one per feature spec)
    model_uri: str  # its model.tar.gz
    evaluation_uri: str  # evaluation.json, with the gate decision
    report_uri: str  # report.html, with the gates section
    gates_uri: str  # gates.json
    passed: bool
    summary: str  # the gates' verdict in a sentence
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]  # lineage, the decision and the pipeline run


@dataclass(frozen=True)
class ChallengerRegistration:
    """A challenger that became a registered version."""

    name: str  # the registered model, or the model package group
    version: str  # the registry's version number
    tracked: str  # what tracking returned: an MLflow run id, a model package ARN
    details: Mapping[str, str] = field(default_factory=dict)  # what else this registry names it by


class ChallengerRegistry(Protocol):
    """Where every evaluated challenger is tracked and a gated one becomes a registered version
    (MLflow runs and model versions locally; SageMaker model packages in AWS)."""

    def track(self, challenger: ChallengerRecord) -> str:
        """Record the challenger, promoted or not, with its report; an id to register it by."""
        ...

    def register(self, challenger: ChallengerRecord, tracked: str) -> ChallengerRegistration:
        """Make the tracked challenger (which passed the gates) a registered version."""
        ...


class TransformJobError(RuntimeError):
    """A batch transform job could not be started, or the serving model could not be found."""


class TransformJobLauncher(Protocol):
    """Starts batch scoring jobs (SageMaker batch transform) with the model that serves the API."""

    def launch(self, spec: TransformJobSpec) -> str:
        """Start the job; its ARN, or its name when a job of that name already exists."""
        ...

    def model_name(self, endpoint_name: str) -> str:
        """The model now serving behind an endpoint; raises :class:`TransformJobError`."""
        ...


class ObjectHeadReader(Protocol):
    """Reads the first bytes of a dropped file (the batch trigger checks a CSV's header with them)."""

    def read_head(self, bucket: str, key: str, version_id: str | None, limit: int) -> bytes:
        """At most ``limit`` bytes from the start of the object (this version when given); raises
        ``FileNotFoundError`` when it is gone and :class:`TransformJobError` when it cannot be read now."""
        ...


@dataclass(frozen=True)
class MetricDatum:
    """One measurement: CloudWatch's shape, so the local sink and CloudWatch hold the same thing."""

    name: str
    value: float
    dimensions: Mapping[str, str] = field(default_factory=dict)
    unit: str = "None"
    timestamp: float | None = None  # seconds since the epoch; None means now


class MetricsPublisher(Protocol):
    """Where jobs publish metrics (CloudWatch in AWS, a JSON Lines file here)."""

    def publish(self, namespace: str, metrics: Sequence[MetricDatum]) -> None: ...


class LakePartitionWriter(Protocol):
    """One partition being replaced, chunk by chunk (for writers that are handed their rows)."""

    def write(self, frame: pd.DataFrame) -> None: ...

    def commit(self) -> int:
        """The partition now holds what was written; the rows."""
        ...

    def abort(self) -> None:
        """Give up: nothing half-written stays visible as the partition's rows."""
        ...


class ClaimsLake(Protocol):
    """The claims lake (:mod:`shared.lake`): Parquet tables under S3 with Glue and Athena in AWS,
    under a folder with DuckDB here; the same tables and the same SQL (Athena's dialect)."""

    def describe(self) -> str: ...

    def tables(self) -> list[str]: ...

    def partitions(self, table: str) -> list[dict[str, str]]:
        """The partitions a table holds, each as its key → value."""
        ...

    def write(self, table: LakeTable, partition: Mapping[str, str], frames: Iterable[pd.DataFrame]) -> int:
        """Replace the partition's rows with these (streamed chunk by chunk); the rows written."""
        ...

    def open_partition(self, table: LakeTable, partition: Mapping[str, str]) -> LakePartitionWriter:
        """The same, for rows that are handed over one chunk at a time."""
        ...

    def query(self, sql: str) -> pd.DataFrame:
        """A small answer, whole; raises :class:`shared.lake.LakeError`."""
        ...

    def query_chunks(self, sql: str, chunk_rows: int = ...) -> Iterator[pd.DataFrame]:
        """A large answer, chunk by chunk."""
        ...
