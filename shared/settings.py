"""Every setting the Lambda functions read, in one typed place (issue 11, point 13).

Each field names its environment variable, its default and, in its description, where it applies:
``Lambda`` (the deployed function; cdk/ sets the variable), ``local`` (the embedded runtime and the
tests) or ``job`` (a SageMaker job or the model server).

In Lambda (``AWS_LAMBDA_FUNCTION_NAME`` is set) a handler loads its class once, at import: every
field marked REQUIRED_IN_LAMBDA must be set, else the cold start fails with a
:class:`SettingsError` naming the variables. No AWS setting quietly falls back to a local adapter.
Outside Lambda the same fields keep their local defaults (``CLAIMS_RISK_HOME=data``, the local model
store, a local pipeline run), and the handlers read them when first needed.

pydantic-settings comes, as pydantic does, from the Powertools layer in AWS (it is in the V3
layer's ``all`` extra since Powertools 3.3.0). No other library: this is in every function's bundle.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.batch_jobs import BatchSettings, BatchStrategy
from shared.batch_lake import LAKE_VARIABLES, LakeJobSettings
from shared.drift_jobs import DriftJobSettings
from shared.quality_jobs import KEY_ENV, KEY_PARTS, QualityJobConfig

LAMBDA_MARKER: Final = "AWS_LAMBDA_FUNCTION_NAME"
# The Lambda runtime sets these on every function: a settings field may require them; cdk/ never sets them.
LAMBDA_RUNTIME_VARIABLES: Final = frozenset(
    {"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"}
)
# What cdk/functions.py sets on each function for Powertools' Logger, Tracer and Metrics to read.
POWERTOOLS_VARIABLES: Final = frozenset(
    {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL"}
)
# A field's mark: in Lambda the variable must be set and not blank (the deployment's choice; no
# default stands in), or, marked EMPTY_ALLOWED, set but perhaps empty (where empty means "none").
REQUIRED_IN_LAMBDA: Final = "required_in_lambda"
EMPTY_ALLOWED: Final = "empty allowed"
MISSING: Final = "missing"
_S3_OBJECT = re.compile(r"s3://[^/]+/.+")


def running_in_lambda() -> bool:
    return bool(os.environ.get(LAMBDA_MARKER))


class SettingsError(ValueError):
    """Settings missing or invalid; the message names each variable (never its value)."""

    def __init__(self, owner: str, problems: dict[str, str]) -> None:
        self.variables = tuple(problems)
        missing = [name for name, problem in problems.items() if problem == MISSING]
        invalid = [f"{name} ({problem})" for name, problem in problems.items() if problem != MISSING]
        said = [f"missing {', '.join(missing)}"] if missing else []
        said += [f"invalid {', '.join(invalid)}"] if invalid else []
        super().__init__(f"{owner}: {'; '.join(said)} (see shared/settings.py)")


class Settings(BaseSettings):
    """Exact variable names; an empty variable counts as unset (unless a class says otherwise); values
    never appear in errors."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        str_strip_whitespace=True,
    )
    # The handler module that loads the class in Lambda, for the class's function settings.
    handler: ClassVar[str | None] = None

    @classmethod
    def load(cls, *, in_lambda: bool = False) -> Self:
        """Read the environment now; ``in_lambda`` also demands each field required in Lambda."""
        try:
            settings = cls()
        except ValidationError as error:
            raise SettingsError(cls._owner(), _problems(error, cls.variables().values())) from None
        if in_lambda:
            # Set means given by the environment: a default, even a sensible one, does not count.
            given, marks = settings.model_fields_set, cls._lambda_marks()
            missing = [
                env
                for name, env in cls.required_in_lambda().items()
                if name not in given or (marks[name] != EMPTY_ALLOWED and _blank(getattr(settings, name)))
            ]
            if missing:
                raise SettingsError(f"{cls._owner()} in Lambda", dict.fromkeys(missing, MISSING))
        return settings

    @classmethod
    def at_cold_start(cls) -> Self | None:
        """In Lambda the settings, read once and complete (a missing one fails the import, by name);
        elsewhere None: the handler reads them when first needed, with the local defaults."""
        return cls.load(in_lambda=True) if running_in_lambda() else None

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Field name to environment variable, for every field."""
        names = {}
        for name, field in cls.model_fields.items():
            if not isinstance(field.validation_alias, str):
                raise TypeError(f"{cls.__name__}.{name} must name its variable in validation_alias")
            names[name] = field.validation_alias
        return names

    @classmethod
    def required_in_lambda(cls) -> dict[str, str]:
        """Field name to environment variable, for the fields a deployed function must be given."""
        variables = cls.variables()
        return {name: variables[name] for name in cls._lambda_marks()}

    @classmethod
    def _lambda_marks(cls) -> dict[str, object]:
        marks: dict[str, object] = {}
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra
            if isinstance(extra, dict) and extra.get(REQUIRED_IN_LAMBDA):
                marks[name] = extra[REQUIRED_IN_LAMBDA]
        return marks

    def required(self, field: str) -> str:
        """A field's value, or a SettingsError naming its variable (outside Lambda, where it may be unset)."""
        value = getattr(self, field)
        if _blank(value):
            raise SettingsError(self._owner(), {type(self).variables()[field]: MISSING})
        return str(value)

    @classmethod
    def _owner(cls) -> str:
        return cls.handler or cls.__name__


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _problems(error: ValidationError, variables: Collection[str]) -> dict[str, str]:
    problems: dict[str, str] = {}
    for detail in error.errors():
        message = detail["msg"].removeprefix("Value error, ")
        # A field's error is located at its variable; a check across fields names its own in the message.
        named = ".".join(str(part) for part in detail["loc"])
        if not named:  # a check across fields: the first variable its message names
            named = min((v for v in variables if v in message), key=message.index, default="settings")
        problems[named] = message
    return problems


# The variables several functions read, declared once.
EndpointName = Annotated[
    str | None,
    Field(
        validation_alias="SAGEMAKER_ENDPOINT_NAME",
        description="The SageMaker real-time endpoint that serves the champion. Lambda (API, batch "
        "trigger, drift trigger), required: the API scores with it, batch jobs use its model, the drift "
        "job reads its captured traffic. Local: unset (the model server is CLAIMS_RISK_MODEL_URL).",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    ),
]
MetricsNamespace = Annotated[
    str,
    Field(
        validation_alias="POWERTOOLS_METRICS_NAMESPACE",
        description="CloudWatch namespace of the functions' own metrics. Lambda: cdk/functions.py sets "
        "it; local and tests: ClaimsRisk.",
    ),
]
Home = Annotated[
    Path,
    Field(
        validation_alias="CLAIMS_RISK_HOME",
        description="Local only: the data folder (models, runs, logs). Never read in Lambda, where an "
        "AWS setting stands in for it.",
    ),
]


class EndpointSettings(Settings):
    """What :func:`shared.adapters.endpoint.endpoint_from` wires: SageMaker in AWS, HTTP locally."""

    endpoint_name: EndpointName = None
    model_url: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_MODEL_URL",
        description="Local only: base URL of the local model server (http://127.0.0.1:8080); when set, "
        "it is used instead of SAGEMAKER_ENDPOINT_NAME.",
    )


class ModelCatalogSettings(Settings):
    """What :func:`shared.adapters.model_catalog.catalog_from` wires: the card in S3, or the local store."""

    model_card_s3: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_MODEL_CARD_S3",
        description="s3://bucket/key of the serving model's manifest, which the deploy step writes "
        "(GET /api/v1/models/current). Lambda (API), required. Local: unset, the manifest is read from "
        "CLAIMS_RISK_HOME/models.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    home: Home = Path("data")

    @field_validator("model_card_s3")
    @classmethod
    def _an_s3_object(cls, value: str | None) -> str | None:
        if value is not None and not _S3_OBJECT.fullmatch(value):
            raise ValueError("must be s3://bucket/key")
        return value

    def model_card_location(self) -> tuple[str, str] | None:
        """(bucket, key) of the model card in S3, or None for the local store."""
        if self.model_card_s3 is None:
            return None
        bucket, _, key = self.model_card_s3.removeprefix("s3://").partition("/")
        return bucket, key


class PipelineStarterSettings(Settings):
    """What :func:`shared.adapters.pipeline_starter.starter_from` wires: Step Functions, or a local run."""

    state_machine_arn: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_STATE_MACHINE_ARN",
        description="The retraining state machine that POST /api/v1/models/retrain starts. Lambda (API), "
        "required. Local: unset, the pipeline runs as `python -m local.cli pipeline run` under "
        "CLAIMS_RISK_HOME.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    home: Home = Path("data")


class ApiSettings(EndpointSettings, ModelCatalogSettings, PipelineStarterSettings):
    """The API function (lambdas/api/handler.py)."""

    handler: ClassVar[str | None] = "lambdas.api.handler"
    metrics_namespace: MetricsNamespace = "ClaimsRisk"


class JobLakeSettings(Settings):
    """The claims lake a trigger hands on to the job it starts (which reads it as LakeSettings)."""

    lake_root: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_LAKE_ROOT",
        description="The claims lake's s3:// prefix, for the job the trigger starts. Lambda, required.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    lake_database: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_LAKE_DATABASE",
        description="The lake's Glue database, for the job. Lambda, required.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    lake_workgroup: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_LAKE_WORKGROUP",
        description="The Athena workgroup of the lake's queries, for the job. Lambda, required.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )

    @field_validator("lake_root")
    @classmethod
    def _lake_in_s3(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("s3://"):
            raise ValueError("must be an s3:// prefix")
        return value

    def job_lake(self) -> dict[str, str]:
        """The job's CLAIMS_RISK_LAKE_* environment."""
        values = (self.required("lake_root"), self.required("lake_database"), self.required("lake_workgroup"))
        return dict(zip(LAKE_VARIABLES, values, strict=True))


class BatchTriggerSettings(JobLakeSettings):
    """The drop-folder trigger (lambdas/batch_trigger/handler.py): one transform job per claims file."""

    handler: ClassVar[str | None] = "lambdas.batch_trigger.handler"
    endpoint_name: EndpointName = None
    idempotency_table: str | None = Field(
        None,
        validation_alias="IDEMPOTENCY_TABLE",
        description="DynamoDB table of Powertools' idempotency records (one job per object version). "
        "Lambda, required.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    incoming_prefix: str = Field(
        "incoming/",
        validation_alias="INCOMING_PREFIX",
        description="The drop folder in the data bucket; it must match the bucket's notification filter. "
        "Lambda, required; tests: incoming/.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    scored_prefix: str = Field(
        "scored/",
        validation_alias="SCORED_PREFIX",
        description="Where transform jobs write the scored rows. Lambda, required; tests: scored/.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    rejected_prefix: str = Field(
        "rejected/",
        validation_alias="REJECTED_PREFIX",
        description="Where transform jobs write the rejected rows. Lambda, required; tests: rejected/.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    transform_instance_type: str = Field(
        "ml.m5.large",
        validation_alias="TRANSFORM_INSTANCE_TYPE",
        description="Instance type of each transform job (the stage's choice, cdk/config.py). Lambda, "
        "required; tests: ml.m5.large.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    transform_instance_count: int = Field(
        1, validation_alias="TRANSFORM_INSTANCE_COUNT", description="Instances per transform job (Lambda)."
    )
    transform_max_payload_mb: int = Field(
        6,
        validation_alias="TRANSFORM_MAX_PAYLOAD_MB",
        description="Transform jobs' MaxPayloadInMB, 1 to 100 (Lambda).",
    )
    transform_max_concurrent: int = Field(
        1,
        validation_alias="TRANSFORM_MAX_CONCURRENT",
        description="Transform jobs' MaxConcurrentTransforms; times MaxPayloadInMB at most 100 (Lambda).",
    )
    transform_batch_strategy: BatchStrategy = Field(
        "MultiRecord",
        validation_alias="TRANSFORM_BATCH_STRATEGY",
        description="Transform jobs' BatchStrategy for line-split files (MultiRecord, SingleRecord; Lambda).",
    )
    data_kms_key_id: str | None = Field(
        None,
        validation_alias="DATA_KMS_KEY_ID",
        description="KMS key the transform jobs encrypt their output with (the data bucket's). Lambda, "
        "required; tests: unset (no key given to SageMaker).",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    model_spec_s3: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_MODEL_SPEC_S3",
        description="s3://bucket/key of the serving model's feature_spec.json, which the deploy step "
        "publishes beside the model card: a dropped CSV's header is checked against it (the default "
        "claims spec until a model is deployed). Lambda, required. Local and tests: unset, the "
        "default claims spec (the local drop folder checks with the loaded model's own spec).",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    metrics_namespace: MetricsNamespace = "ClaimsRisk"
    # The lake job it starts when a transform job completes (shared/batch_lake.py; cdk/batch.py sets each).
    lake_job_image: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_IMAGE_URI",
        description="The project image the lake job runs in (a completed transform's rows into the claims "
        "lake). Lambda, required.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )
    lake_job_role_arn: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_SAGEMAKER_ROLE_ARN",
        description="The role the lake job runs as (the SageMaker jobs' role). Lambda, required.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )

    @field_validator("model_spec_s3")
    @classmethod
    def _an_s3_object(cls, value: str | None) -> str | None:
        if value is not None and not _S3_OBJECT.fullmatch(value):
            raise ValueError("must be s3://bucket/key")
        return value

    @field_validator("incoming_prefix", "scored_prefix", "rejected_prefix")
    @classmethod
    def _as_folder(cls, prefix: str) -> str:
        # "incoming" and "incoming/" mean the same folder; the trailing slash keeps "incoming-old/" out.
        return prefix if prefix.endswith("/") else prefix + "/"

    @model_validator(mode="after")
    def _batch_settings_hold(self) -> Self:
        self.batch_settings()  # its checks (overlapping folders, instance type) name the variables
        return self

    def batch_settings(self) -> BatchSettings:
        return BatchSettings(
            incoming_prefix=self.incoming_prefix,
            scored_prefix=self.scored_prefix,
            rejected_prefix=self.rejected_prefix,
            instance_type=self.transform_instance_type,
            instance_count=self.transform_instance_count,
            max_payload_mb=self.transform_max_payload_mb,
            kms_key_id=self.data_kms_key_id,
            max_concurrent_transforms=self.transform_max_concurrent,
            batch_strategy=self.transform_batch_strategy,
        )

    def lake_job_settings(self) -> LakeJobSettings:
        """The lake job's settings; a SettingsError naming each variable that is missing."""
        fields = ("lake_job_image", "lake_job_role_arn", "lake_root", "lake_database", "lake_workgroup")
        variables = type(self).variables()
        missing = {variables[f]: MISSING for f in fields if _blank(getattr(self, f))}
        if missing:
            raise SettingsError(self._owner(), missing)
        return LakeJobSettings(
            image=self.required("lake_job_image"),
            role_arn=self.required("lake_job_role_arn"),
            kms_key_arn=self.data_kms_key_id,
            lake=self.job_lake(),
            incoming_prefix=self.incoming_prefix,
            scored_prefix=self.scored_prefix,
        )


def _required_in_lambda(variable: str, description: str) -> Any:
    return Field(
        None,
        validation_alias=variable,
        description=description,
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )


class DriftTriggerSettings(JobLakeSettings):
    """The hourly drift trigger (lambdas/drift_trigger/handler.py); it has no local counterpart, so
    every field but the job's instances is needed wherever it runs (cdk/monitoring.py sets each)."""

    handler: ClassVar[str | None] = "lambdas.drift_trigger.handler"
    image: str | None = _required_in_lambda(
        "CLAIMS_RISK_IMAGE_URI", "The project image the drift job runs in. Lambda, required."
    )
    role_arn: str | None = _required_in_lambda(
        "CLAIMS_RISK_SAGEMAKER_ROLE_ARN", "The role the drift job runs as. Lambda, required."
    )
    bucket: str | None = _required_in_lambda(
        "CLAIMS_RISK_DATA_BUCKET",
        "The data bucket: the endpoint's capture and the drift reports. Lambda, required.",
    )
    endpoint: EndpointName = None
    kms_key_arn: str | None = _required_in_lambda(
        "CLAIMS_RISK_KMS_KEY_ARN",
        "The key the drift job encrypts its output and volume with. Lambda, required",
    )
    job_prefix: str | None = _required_in_lambda(
        "CLAIMS_RISK_JOB_PREFIX", "The stage's prefix (claims-risk-dev) on every job name. Lambda, required."
    )
    instance_type: str = Field(
        "ml.m5.large",
        validation_alias="CLAIMS_RISK_DRIFT_INSTANCE_TYPE",
        description="The drift job's instance type (the stage's choice, cdk/config.py). Lambda.",
    )
    instance_count: int = Field(
        1,
        validation_alias="CLAIMS_RISK_DRIFT_INSTANCE_COUNT",
        description=(
            "The drift job's instance count (1 to 100); above 1 it runs as a sharded map "
            "and a reduce (shared/drift_jobs.py). Lambda."
        ),
    )
    volume_gb: int = Field(
        20,
        validation_alias="CLAIMS_RISK_DRIFT_VOLUME_GB",
        description="The drift job's volume in GB. Lambda.",
    )

    def drift_job(self) -> DriftJobSettings:
        missing = {
            env: MISSING for name, env in self.required_in_lambda().items() if _blank(getattr(self, name))
        }
        if missing:
            raise SettingsError(self._owner(), missing)
        return DriftJobSettings(
            image=self.required("image"),
            role_arn=self.required("role_arn"),
            bucket=self.required("bucket"),
            endpoint=self.required("endpoint"),
            kms_key_arn=self.required("kms_key_arn"),
            job_prefix=self.required("job_prefix"),
            instance_type=self.instance_type,
            instance_count=self.instance_count,
            volume_gb=self.volume_gb,
            lake=self.job_lake(),
        )


class QualityTriggerSettings(JobLakeSettings):
    """The late-outcomes trigger (lambdas/quality_trigger/handler.py): a labels file created under the
    outcomes prefix starts the quality job (shared/quality_jobs.py); cdk/quality.py sets each field.
    Offline, ``claims-risk monitor quality`` does the job's work itself."""

    handler: ClassVar[str | None] = "lambdas.quality_trigger.handler"
    image: str | None = _required_in_lambda(
        "CLAIMS_RISK_IMAGE_URI", "The project image the quality job runs in. Lambda, required."
    )
    role_arn: str | None = _required_in_lambda(
        "CLAIMS_RISK_SAGEMAKER_ROLE_ARN", "The role the quality job runs as. Lambda, required."
    )
    bucket: str | None = _required_in_lambda(
        "CLAIMS_RISK_DATA_BUCKET", "The data bucket, where labels files are dropped. Lambda, required."
    )
    endpoint: EndpointName = None
    kms_key_arn: str | None = _required_in_lambda(
        "CLAIMS_RISK_KMS_KEY_ARN", "The key the quality job encrypts its volume with. Lambda, required."
    )
    job_prefix: str | None = _required_in_lambda(
        "CLAIMS_RISK_JOB_PREFIX", "The stage's prefix (claims-risk-dev) on every job name. Lambda, required."
    )
    model_card_s3: str | None = _required_in_lambda(
        "CLAIMS_RISK_MODEL_CARD_S3",
        "s3://bucket/key of the serving model's manifest.json (the deploy step publishes it): its test "
        "metrics are the quality job's baseline. Lambda, required.",
    )
    outcomes_prefix: str | None = _required_in_lambda(
        "CLAIMS_RISK_OUTCOMES_PREFIX",
        "Where labels files are dropped in the data bucket (outcomes/incoming/); it must match the "
        "EventBridge rule's key prefix. Lambda, required.",
    )

    @field_validator("model_card_s3")
    @classmethod
    def _an_s3_object(cls, value: str | None) -> str | None:
        if value is not None and not _S3_OBJECT.fullmatch(value):
            raise ValueError("must be s3://bucket/key")
        return value

    def quality_job(self) -> QualityJobConfig:
        missing = {
            env: MISSING for name, env in self.required_in_lambda().items() if _blank(getattr(self, name))
        }
        if missing:
            raise SettingsError(self._owner(), missing)
        prefix = self.required("outcomes_prefix")
        try:
            return QualityJobConfig(
                image=self.required("image"),
                role_arn=self.required("role_arn"),
                kms_key_arn=self.required("kms_key_arn"),
                bucket=self.required("bucket"),
                endpoint=self.required("endpoint"),
                job_prefix=self.required("job_prefix"),
                model_card_uri=self.required("model_card_s3"),
                lake=self.job_lake(),
                outcomes_prefix=prefix if prefix.endswith("/") else prefix + "/",
            )
        except ValueError as error:
            raise SettingsError(self._owner(), {"settings": str(error)}) from None


class PipelineTasksSettings(Settings):
    """The retraining state machine's Lambda tasks (lambdas/pipeline_tasks/handler.py)."""

    # An empty MLFLOW_TRACKING_URI is the deployment's word for "no tracking server", not a missing one.
    model_config = SettingsConfigDict(env_ignore_empty=False)
    handler: ClassVar[str | None] = "lambdas.pipeline_tasks.handler"
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias="MLFLOW_TRACKING_URI",
        description="A SageMaker managed MLflow tracking server to register models in too; empty: the "
        "SageMaker model registry only. Lambda, required (the stack's MlflowTrackingUri parameter, "
        "empty by default); tests: unset, no MLflow.",
        json_schema_extra={REQUIRED_IN_LAMBDA: EMPTY_ALLOWED},
    )
    aws_region: str | None = Field(
        None,
        validation_alias="AWS_REGION",
        description="The function's region, which MLflow's request signing needs. Lambda: set by the "
        "runtime; tests: the fake credentials' region.",
        json_schema_extra={REQUIRED_IN_LAMBDA: True},
    )


# Each deployed function's settings, by handler module (tests/infra/test_lambda_settings.py checks
# the synthesized functions against them).
LAMBDA_SETTINGS: Final[dict[str, type[Settings]]] = {
    cls.handler: cls
    for cls in (
        ApiSettings,
        BatchTriggerSettings,
        DriftTriggerSettings,
        PipelineTasksSettings,
        QualityTriggerSettings,
    )
    if cls.handler is not None
}


class CaptureSettings(Settings):
    """Job and local: the model server's data capture (see :func:`shared.capture.capture_policy_from_env`)."""

    # An empty CLAIMS_RISK_CAPTURE_PII_FIELDS means "no personal fields", not "the spec's".
    model_config = SettingsConfigDict(env_ignore_empty=False)
    percent: float = Field(
        100.0,
        validation_alias="CLAIMS_RISK_CAPTURE_PERCENT",
        description="Share of exchanges captured, 0 to 100 (0 turns capture off). Job and local.",
    )
    pii: Literal["drop", "pseudonymize"] = Field(
        "drop",
        validation_alias="CLAIMS_RISK_CAPTURE_PII",
        description="What becomes of personal fields in captured requests: drop or pseudonymize "
        "(keyed hash). Job and local.",
    )
    key: SecretStr = Field(
        SecretStr(""),
        validation_alias="CLAIMS_RISK_CAPTURE_KEY",
        description="The pseudonymization key, needed with CLAIMS_RISK_CAPTURE_PII=pseudonymize. Job and "
        "local.",
    )
    pii_fields: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_CAPTURE_PII_FIELDS",
        description="Comma-separated personal fields; unset: the feature spec's text and protected "
        "columns. Job and local.",
    )

    @field_validator("pii", mode="before")
    @classmethod
    def _pii_mode(cls, value: Any) -> Any:
        mode = str(value).strip().lower()
        if mode not in ("drop", "pseudonymize"):
            raise ValueError(f"must be drop or pseudonymize, not {mode!r}")
        return mode

    def personal_field_names(self) -> frozenset[str] | None:
        """The listed fields, or None when the variable is unset (then the spec decides)."""
        if self.pii_fields is None:
            return None
        return frozenset(f.strip() for f in self.pii_fields.split(",") if f.strip())


class LakeSettings(Settings):
    """Job and local: where the claims lake is (:mod:`shared.adapters.lake`)."""

    root: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_LAKE_ROOT",
        description="The lake's root: an s3:// prefix in AWS (with CLAIMS_RISK_LAKE_DATABASE), a folder "
        "locally. Unset: a job writes no lake; the local CLI uses <CLAIMS_RISK_HOME>/lake. Job and local.",
    )
    database: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_LAKE_DATABASE",
        description="The Glue database of the lake's tables; set, the lake is Athena's. Job.",
    )
    workgroup: str = Field(
        "primary",
        validation_alias="CLAIMS_RISK_LAKE_WORKGROUP",
        description="The Athena workgroup the lake's queries run in (its settings say where results go). "
        "Job.",
    )


class QualityJobSettings(Settings):
    """Job: what the quality trigger tells the quality job (sagemaker_jobs/monitoring/quality.py)
    about the labels file it judges (shared/quality_jobs.py), besides the lake (LakeSettings) and
    ``publish_cloudwatch_metrics``."""

    # An object key is taken as it is: surrounding spaces belong to it.
    model_config = SettingsConfigDict(str_strip_whitespace=False)
    bucket: str | None = Field(
        None, validation_alias="CLAIMS_RISK_OUTCOMES_BUCKET", description="Job: the labels file's bucket."
    )
    key: str | None = Field(
        None,
        validation_alias=KEY_ENV,
        description="Job: the labels file's key, or its first 256 characters (an environment value's "
        "limit); the rest follows in CLAIMS_RISK_OUTCOMES_KEY_2 to _4.",
    )
    key_2: str | None = Field(None, validation_alias=f"{KEY_ENV}_2", description="Job: the key, continued.")
    key_3: str | None = Field(None, validation_alias=f"{KEY_ENV}_3", description="Job: the key, continued.")
    key_4: str | None = Field(None, validation_alias=f"{KEY_ENV}_4", description="Job: the key, continued.")
    version: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_OUTCOMES_VERSION",
        description="Job: the version of the labels file that was dropped (a newer upload is its own "
        "run); unset for an unversioned bucket.",
    )
    model_card_s3: str | None = Field(
        None,
        validation_alias="CLAIMS_RISK_MODEL_CARD_S3",
        description="Job: the serving model's manifest.json (s3://… or a local path), whose test metrics "
        "are the baseline.",
    )
    endpoint: str = Field(
        "claims-risk",
        validation_alias="CLAIMS_RISK_ENDPOINT",
        description="Job: the metrics' Endpoint dimension, the model-quality alarm's (local: claims-risk).",
    )
    bucket_by: Literal["day", "week"] = Field(
        "day",
        validation_alias="CLAIMS_RISK_QUALITY_BUCKET",
        description="Job: judge per day or per week of predictions.",
    )
    min_positives: int = Field(
        20,
        ge=1,
        validation_alias="CLAIMS_RISK_QUALITY_MIN_POSITIVES",
        description="Job: the high-risk (or flagged) claims a day or week needs to be judged.",
    )

    def outcomes_key(self) -> str:
        """The whole key, its parts joined (shared/quality_jobs.py spreads it)."""
        parts = [self.required("key"), self.key_2, self.key_3, self.key_4][:KEY_PARTS]
        whole = []
        for part in parts:
            if part is None:
                break
            whole.append(part)
        return "".join(whole)
