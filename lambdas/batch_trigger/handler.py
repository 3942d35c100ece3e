"""The drop-folder trigger: each claims file created under ``incoming/`` starts one SageMaker batch
transform job, scored by the model that serves the API.

S3 event notifications arrive at least once, so each object version starts its job at most once:
the start is idempotent on (bucket, key, version) in DynamoDB, and the job name is derived from the
same triple, so SageMaker itself refuses a second job should the idempotency record be gone.

A CSV's header is checked against the serving model's feature spec (published by the deploy step,
read once per invocation), and a file refused for its content gets a note under ``rejected/``
saying why (see :mod:`shared.batch_jobs`); the file itself is left where it was dropped.

When one of those jobs completes, EventBridge sends SageMaker's state-change event here too, and
the trigger starts the lake job that writes the file's scored and rejected rows into the claims lake
(:mod:`shared.batch_lake`); an operator's ``{"lake_rerun": {...}}`` starts it again.
"""

import datetime as dt
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict, cast
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.adapters.artifacts import S3ArtifactStore
from shared.adapters.object_heads import S3ObjectHeads
from shared.adapters.processing_jobs import SageMakerProcessingLauncher
from shared.adapters.transform_jobs import SageMakerTransformLauncher
from shared.batch_jobs import (
    BatchSettings,
    NotAClaimsFile,
    inspect_claims_file,
    plan_transform_job,
    s3_uri,
    serving_spec,
    write_refusal_note,
)
from shared.batch_lake import NoLakeJob, is_lake_event, plan_lake_job
from shared.ports import (
    ArtifactStore,
    ObjectHeadReader,
    ProcessingJobLauncher,
    TransformJobError,
    TransformJobLauncher,
)
from shared.settings import BatchTriggerSettings

if TYPE_CHECKING:  # the spec module loads with the first CSV only
    from shared.feature_spec import FeatureSpec

SERVICE = "claims-risk-batch-trigger"
# S3 redelivers within hours and Lambda retries async events for up to 6 hours; days cover both.
IDEMPOTENCY_EXPIRY_S = 3 * 24 * 3600

# In Lambda, read once here: a missing setting fails the cold start, naming its variable.
COLD_START_SETTINGS = BatchTriggerSettings.at_cold_start()


def function_settings() -> BatchTriggerSettings:
    """The cold start's settings; outside Lambda, the environment's now (tests change it per case)."""
    return COLD_START_SETTINGS or BatchTriggerSettings.load()


logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))
metrics = Metrics(namespace=function_settings().metrics_namespace, service=SERVICE)


class Summary(TypedDict):
    started: list[str]  # jobs this invocation started
    duplicates: list[str]  # jobs an earlier delivery of the same object version started
    ignored: list[str]  # objects that are not claims files


class LakeJobAnswer(TypedDict):
    transform_job: str | None
    lake_job: str | None  # None: no lake job for this event (``reason`` says why)
    job: str | None  # its ARN, or its name when an earlier event had started it already
    reason: str | None


def _on_replay(response: Any, idempotent_data: DataRecord) -> Any:
    # Powertools calls this only when it answers from the idempotency store instead of running.
    return {**response, "replayed": True} if isinstance(response, dict) else response


# Only the object version is the key: size and sequencer ride along but a redelivery has the same ones.
idempotency_config = IdempotencyConfig(
    event_key_jmespath="[bucket, key, version_id]",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=IDEMPOTENCY_EXPIRY_S,
    response_hook=_on_replay,
)


class _Wiring:
    """The launcher, the header reader and the store of specs and notes, built from the environment
    on first use; tests pass fakes."""

    launcher: TransformJobLauncher | None = None
    heads: ObjectHeadReader | None = None
    artifacts: ArtifactStore | None = None
    processing: ProcessingJobLauncher | None = None


def use_launcher(launcher: TransformJobLauncher | None) -> None:
    _Wiring.launcher = launcher


def launcher() -> TransformJobLauncher:
    if _Wiring.launcher is None:
        _Wiring.launcher = SageMakerTransformLauncher()
    return _Wiring.launcher


def object_heads() -> ObjectHeadReader:
    if _Wiring.heads is None:
        _Wiring.heads = S3ObjectHeads()
    return _Wiring.heads


def use_artifacts(store: ArtifactStore | None) -> None:
    _Wiring.artifacts = store


def artifacts() -> ArtifactStore:
    """Where the serving model's spec is read and refusal notes are written (the data bucket)."""
    if _Wiring.artifacts is None:
        _Wiring.artifacts = S3ArtifactStore()
    return _Wiring.artifacts


def use_processing_launcher(launcher: ProcessingJobLauncher | None) -> None:
    _Wiring.processing = launcher


def processing_launcher() -> ProcessingJobLauncher:
    """Starts the lake jobs (SageMaker CreateProcessingJob)."""
    if _Wiring.processing is None:
        _Wiring.processing = SageMakerProcessingLauncher()
    return _Wiring.processing


def reset_wiring() -> None:
    """Forget the clients (tests start a fresh moto account each time)."""
    use_launcher(None)
    use_artifacts(None)
    use_processing_launcher(None)
    _Wiring.heads = None
    idempotent_start.cache_clear()


@functools.cache
def idempotent_start() -> Callable[..., dict[str, Any]]:
    """``start_job`` behind the DynamoDB idempotency store; built on first use, when the env is set."""
    store = DynamoDBPersistenceLayer(table_name=function_settings().required("idempotency_table"))
    wrapped = idempotent_function(
        start_job, data_keyword_argument="source", persistence_store=store, config=idempotency_config
    )
    return cast(Callable[..., dict[str, Any]], wrapped)


@tracer.capture_method
def start_job(*, source: dict[str, Any], settings: BatchSettings) -> dict[str, Any]:
    """Plan and launch the job for one object version; runs once per version while its record lives."""
    model = launcher().model_name(function_settings().required("endpoint_name"))
    plan = plan_transform_job(
        source["bucket"],
        source["key"],
        source["version_id"],
        settings=settings,
        model_name=model,
        size=source["size"],
        csv_columns=source.get("csv_columns"),
    )
    if isinstance(plan, NotAClaimsFile):  # the handler checked already; kept for the type
        raise TransformJobError(f"{plan.uri} is not a claims file: {plan.reason}")
    job = launcher().launch(plan)
    metrics.add_metric(name="BatchJobsStarted", unit=MetricUnit.Count, value=1)
    logger.info(
        f"started {plan.job_name} for {plan.input_uri}",
        extra={
            "object": plan.input_uri,
            "version_id": source["version_id"],
            "job_name": plan.job_name,
            "job": job,
            "model_name": model,
            "content_type": plan.content_type,
            "output": plan.output_uri,
        },
    )
    return {"job_name": plan.job_name, "job": job}


@tracer.capture_method
def start_lake_job(event: dict[str, Any]) -> LakeJobAnswer:
    """The lake job of a completed transform job (or an operator's re-run). A repeated event is
    answered with the job already started: its name is the transform job's (shared/batch_lake.py)."""
    plan = plan_lake_job(event, function_settings().lake_job_settings())
    if isinstance(plan, NoLakeJob):
        logger.info(
            f"no lake job for {plan.transform_job}: {plan.reason}",
            extra={"transform_job": plan.transform_job, "reason": plan.reason},
        )
        return {"transform_job": plan.transform_job, "lake_job": None, "job": None, "reason": plan.reason}
    job = processing_launcher().start(plan.request)
    metrics.add_metric(name="BatchLakeJobsStarted", unit=MetricUnit.Count, value=1)
    logger.info(
        f"started {plan.job_name} to write {plan.transform_job}'s rows into the claims lake",
        extra={"transform_job": plan.transform_job, "lake_job": plan.job_name, "job": job},
    )
    return {"transform_job": plan.transform_job, "lake_job": plan.job_name, "job": job, "reason": None}


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Summary | LakeJobAnswer:
    if is_lake_event(event):  # EventBridge: a transform job completed; or a re-run
        return start_lake_job(event)
    idempotency_config.register_lambda_context(context)
    summary: Summary = {"started": [], "duplicates": [], "ignored": []}
    if not event.get("Records"):
        # S3 sends an s3:TestEvent without records when the notification is configured.
        logger.info("no records in the event", extra={"event_type": event.get("Event")})
        return summary
    settings = function_settings().batch_settings()
    # Read at the first CSV, then kept for this invocation only: a new deployment's spec counts from
    # the next one, and JSON Lines or Parquet drops never read it.
    header_spec = functools.cache(load_header_spec)
    failures: list[str] = []
    for record in S3Event(event).records:
        bucket = record.s3.bucket.name
        s3_object = record.s3.get_object
        key = unquote_plus(s3_object.key)  # per record the key is still URL-encoded ('+' for spaces)
        uri = s3_uri(bucket, key)
        if not record.event_name.startswith("ObjectCreated:"):
            ignore(summary, uri, f"event {record.event_name} is not an object creation")
            continue
        try:
            # A CSV's header is read and checked here: the job needs its column order (issue 11).
            found = inspect_claims_file(
                bucket,
                key,
                s3_object.size,
                s3_object.version_id,
                settings=settings,
                heads=object_heads(),
                spec=header_spec,
            )
            if isinstance(found, NotAClaimsFile):
                if found.refused:  # its sender expects an answer: a note under rejected/, file kept
                    at = dt.datetime.now(dt.UTC)
                    write_refusal_note(artifacts(), found, s3_object.version_id, settings=settings, at=at)
                ignore(summary, uri, found.reason, refused=found.refused)
                continue
            source = {
                "bucket": bucket,
                "key": key,
                # Unversioned buckets send no version: the sequencer then tells one PUT from the next.
                "version_id": s3_object.version_id or f"sequencer-{s3_object.sequencer}",
                "size": s3_object.size,
                "csv_columns": list(found.csv_columns) if found.csv_columns else None,
            }
            answer = idempotent_start()(source=source, settings=settings)
        except TransformJobError as error:
            # The other records still go; failing the invocation at the end lets Lambda retry this one.
            logger.error(f"could not start a job for {uri}", extra={"object": uri, "reason": str(error)})
            failures.append(uri)
            continue
        if answer.get("replayed"):
            logger.info(f"{answer['job_name']} already started for {uri}", extra={"object": uri})
            metrics.add_metric(name="BatchDuplicateEvents", unit=MetricUnit.Count, value=1)
            summary["duplicates"].append(answer["job_name"])
        else:
            summary["started"].append(answer["job_name"])
    if failures:
        raise TransformJobError(f"no job started for {', '.join(failures)}")
    return summary


def load_header_spec() -> "FeatureSpec":
    """The serving model's spec, or the default claims spec (and a log line) when none is published."""
    uri = function_settings().model_spec_s3
    found = serving_spec(artifacts(), uri)
    if uri is not None and found.published_at is None:
        logger.warning(
            f"no model spec at {uri} yet (no model deployed?): CSV headers are checked against the "
            "default claims spec",
            extra={"spec": found.spec.name, "spec_uri": uri},
        )
    return found.spec


def ignore(summary: Summary, uri: str, reason: str, *, refused: bool = False) -> None:
    if refused:  # a claims file by its name that cannot be scored: its sender expects an answer
        logger.warning(f"refused {uri}: {reason}", extra={"object": uri, "reason": reason})
        metrics.add_metric(name="BatchFilesRefused", unit=MetricUnit.Count, value=1)
    else:
        logger.info(f"ignored {uri}: {reason}", extra={"object": uri, "reason": reason})
        metrics.add_metric(name="BatchFilesIgnored", unit=MetricUnit.Count, value=1)
    summary["ignored"].append(uri)
