"""The Lambdas' settings (issue 11, point 13): in Lambda a missing AWS setting fails the cold start by
name; outside Lambda the local defaults apply as before."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from shared.adapters.endpoint import HttpEndpoint, SageMakerEndpoint, endpoint_from
from shared.adapters.model_catalog import LocalModelCatalog, S3ModelCatalog, catalog_from
from shared.adapters.pipeline_starter import LocalPipelineStarter, StepFunctionsStarter, starter_from
from shared.capture import capture_policy_from_env
from shared.ports import EndpointError
from shared.settings import (
    LAMBDA_MARKER,
    LAMBDA_SETTINGS,
    ApiSettings,
    BatchTriggerSettings,
    CaptureSettings,
    DriftTriggerSettings,
    PipelineTasksSettings,
    QualityJobSettings,
    QualityTriggerSettings,
    Settings,
    SettingsError,
)

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
ACCOUNT: Final = "123456789012"
KEY_ARN: Final = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# A complete deployment, per function: what cdk/ sets (the runtime adds AWS_REGION).
COMPLETE: Final[dict[type[Settings], dict[str, str]]] = {
    ApiSettings: {
        "SAGEMAKER_ENDPOINT_NAME": "claims-risk",
        "CLAIMS_RISK_MODEL_CARD_S3": "s3://claims-risk-data/models/current/manifest.json",
        "CLAIMS_RISK_STATE_MACHINE_ARN": f"arn:aws:states:eu-west-1:{ACCOUNT}:stateMachine:retraining",
    },
    BatchTriggerSettings: {
        "SAGEMAKER_ENDPOINT_NAME": "claims-risk",
        "IDEMPOTENCY_TABLE": "claims-batch-idempotency",
        "INCOMING_PREFIX": "incoming/",
        "SCORED_PREFIX": "scored/",
        "REJECTED_PREFIX": "rejected/",
        "TRANSFORM_INSTANCE_TYPE": "ml.m5.large",
        "DATA_KMS_KEY_ID": KEY_ARN,
        "CLAIMS_RISK_MODEL_SPEC_S3": "s3://claims-risk-data/models/current/feature_spec.json",
        # The lake job it starts when a transform job completes (shared/batch_lake.py).
        "CLAIMS_RISK_IMAGE_URI": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/claims-risk:abc",
        "CLAIMS_RISK_SAGEMAKER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/claims-risk-sagemaker",
        "CLAIMS_RISK_LAKE_ROOT": "s3://claims-risk-data/lake/",
        "CLAIMS_RISK_LAKE_DATABASE": "claims_risk_dev",
        "CLAIMS_RISK_LAKE_WORKGROUP": "claims-risk-dev",
    },
    DriftTriggerSettings: {
        "CLAIMS_RISK_IMAGE_URI": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/claims-risk:abc",
        "CLAIMS_RISK_SAGEMAKER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/claims-risk-sagemaker",
        "CLAIMS_RISK_DATA_BUCKET": "claims-risk-data",
        "SAGEMAKER_ENDPOINT_NAME": "claims-risk",
        "CLAIMS_RISK_KMS_KEY_ARN": KEY_ARN,
        "CLAIMS_RISK_JOB_PREFIX": "claims-risk-dev",
        "CLAIMS_RISK_LAKE_ROOT": "s3://claims-risk-data/lake/",
        "CLAIMS_RISK_LAKE_DATABASE": "claims_risk_dev",
        "CLAIMS_RISK_LAKE_WORKGROUP": "claims-risk-dev",
    },
    PipelineTasksSettings: {"MLFLOW_TRACKING_URI": "", "AWS_REGION": "eu-west-1"},
    QualityTriggerSettings: {
        "CLAIMS_RISK_IMAGE_URI": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/claims-risk:abc",
        "CLAIMS_RISK_SAGEMAKER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/claims-risk-sagemaker",
        "CLAIMS_RISK_DATA_BUCKET": "claims-risk-data",
        "SAGEMAKER_ENDPOINT_NAME": "claims-risk",
        "CLAIMS_RISK_KMS_KEY_ARN": KEY_ARN,
        "CLAIMS_RISK_JOB_PREFIX": "claims-risk-dev",
        "CLAIMS_RISK_MODEL_CARD_S3": "s3://claims-risk-data/models/current/manifest.json",
        "CLAIMS_RISK_OUTCOMES_PREFIX": "outcomes/incoming/",
        "CLAIMS_RISK_LAKE_ROOT": "s3://claims-risk-data/lake/",
        "CLAIMS_RISK_LAKE_DATABASE": "claims_risk_dev",
        "CLAIMS_RISK_LAKE_WORKGROUP": "claims-risk-dev",
    },
}
SETTINGS_CLASSES: Final[tuple[type[Settings], ...]] = (*COMPLETE, CaptureSettings, QualityJobSettings)
EVERY_VARIABLE: Final = frozenset(name for cls in SETTINGS_CLASSES for name in cls.variables().values())


def required_variables() -> list[tuple[type[Settings], str]]:
    return [(cls, name) for cls in COMPLETE for name in cls.required_in_lambda().values()]


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No settings in the environment, and not in Lambda."""
    for name in (*EVERY_VARIABLE, LAMBDA_MARKER):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def in_lambda(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    monkeypatch.setenv(LAMBDA_MARKER, "claims-risk-test")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_each_deployed_function_has_its_settings_and_every_field_says_what_it_is() -> None:
    assert set(LAMBDA_SETTINGS.values()) == set(COMPLETE)
    for module, cls in LAMBDA_SETTINGS.items():
        assert cls.handler == module and (REPO_ROOT / module.replace(".", "/")).with_suffix(".py").is_file()
        assert set(cls.required_in_lambda().values()) == set(COMPLETE[cls]), cls.__name__
    for cls in SETTINGS_CLASSES:
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name}"
            assert any(where in field.description for where in ("Lambda", "Local", "local", "Job")), name


@pytest.mark.parametrize(("cls", "variable"), required_variables(), ids=lambda v: getattr(v, "__name__", v))
def test_in_lambda_a_missing_setting_fails_naming_its_variable(
    clean: pytest.MonkeyPatch, cls: type[Settings], variable: str
) -> None:
    in_lambda(clean, {k: v for k, v in COMPLETE[cls].items() if k != variable})
    with pytest.raises(SettingsError, match=rf"in Lambda: missing {variable} ") as raised:
        cls.at_cold_start()
    assert raised.value.variables == (variable,)


@pytest.mark.parametrize("cls", list(COMPLETE), ids=lambda cls: cls.__name__)
def test_in_lambda_an_empty_setting_is_a_missing_one(clean: pytest.MonkeyPatch, cls: type[Settings]) -> None:
    # MLFLOW_TRACKING_URI may be empty: that is the deployment saying "no tracking server".
    variable = next(v for v in cls.required_in_lambda().values() if v != "MLFLOW_TRACKING_URI")
    in_lambda(clean, {**COMPLETE[cls], variable: "  "})
    with pytest.raises(SettingsError, match=variable):
        cls.at_cold_start()


def test_in_lambda_an_empty_tracking_uri_means_no_mlflow_but_an_unset_one_is_missing(
    clean: pytest.MonkeyPatch,
) -> None:
    in_lambda(clean, COMPLETE[PipelineTasksSettings])
    settings = PipelineTasksSettings.at_cold_start()
    assert settings is not None and settings.mlflow_tracking_uri == ""
    clean.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(SettingsError, match="missing MLFLOW_TRACKING_URI"):
        PipelineTasksSettings.at_cold_start()


def test_in_lambda_the_adapters_are_the_aws_ones(clean: pytest.MonkeyPatch) -> None:
    in_lambda(clean, COMPLETE[ApiSettings])
    settings = ApiSettings.at_cold_start()
    assert settings is not None
    catalog = catalog_from(settings)
    assert isinstance(catalog, S3ModelCatalog)
    assert (catalog.bucket, catalog.key) == ("claims-risk-data", "models/current/manifest.json")
    starter = starter_from(settings)
    assert isinstance(starter, StepFunctionsStarter) and starter.state_machine_arn.endswith(":retraining")
    endpoint = endpoint_from(settings)
    assert isinstance(endpoint, SageMakerEndpoint) and endpoint.describe() == "sagemaker:claims-risk"


def test_outside_lambda_the_local_defaults_apply(clean: pytest.MonkeyPatch) -> None:
    assert ApiSettings.at_cold_start() is None  # nothing is demanded outside Lambda
    settings = ApiSettings.load()
    assert settings.home == Path("data") and settings.metrics_namespace == "ClaimsRisk"
    catalog = catalog_from(settings)
    assert isinstance(catalog, LocalModelCatalog) and catalog.models_root == Path("data") / "models"
    starter = starter_from(settings)
    assert isinstance(starter, LocalPipelineStarter) and starter.home == Path("data").resolve()
    assert starter.command[1:] == ["-m", "local.cli", "pipeline", "run"]
    with pytest.raises(EndpointError, match=r"SAGEMAKER_ENDPOINT_NAME .*CLAIMS_RISK_MODEL_URL"):
        endpoint_from(settings)  # the health check reports it; the local runtime wires its own

    clean.setenv("CLAIMS_RISK_HOME", "/srv/claims")
    clean.setenv("CLAIMS_RISK_MODEL_URL", "http://127.0.0.1:8080")
    settings = ApiSettings.load()
    catalog = catalog_from(settings)
    assert isinstance(catalog, LocalModelCatalog) and catalog.models_root == Path("/srv/claims/models")
    endpoint = endpoint_from(settings)
    assert isinstance(endpoint, HttpEndpoint) and endpoint.describe() == "http:http://127.0.0.1:8080"

    batch = BatchTriggerSettings.load().batch_settings()
    assert (batch.incoming_prefix, batch.instance_type, batch.kms_key_id) == (
        "incoming/",
        "ml.m5.large",
        None,
    )
    assert PipelineTasksSettings.load().mlflow_tracking_uri is None


def test_outside_lambda_a_setting_that_is_needed_still_fails_by_name(clean: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="missing IDEMPOTENCY_TABLE"):
        BatchTriggerSettings.load().required("idempotency_table")
    clean.setenv("CLAIMS_RISK_DATA_BUCKET", "claims-risk-data")
    with pytest.raises(SettingsError, match=r"missing .*CLAIMS_RISK_IMAGE_URI") as raised:
        DriftTriggerSettings.load().drift_job()  # the drift trigger has no local counterpart
    assert "CLAIMS_RISK_DATA_BUCKET" not in raised.value.variables and len(raised.value.variables) == 8


@pytest.mark.parametrize(
    ("cls", "variables", "message"),
    [
        (ApiSettings, {"CLAIMS_RISK_MODEL_CARD_S3": "models/manifest.json"}, "CLAIMS_RISK_MODEL_CARD_S3 \\("),
        (BatchTriggerSettings, {"TRANSFORM_INSTANCE_COUNT": "two"}, "TRANSFORM_INSTANCE_COUNT \\("),
        (BatchTriggerSettings, {"TRANSFORM_INSTANCE_TYPE": "m5.large"}, "TRANSFORM_INSTANCE_TYPE \\("),
        (BatchTriggerSettings, {"SCORED_PREFIX": "incoming/scored"}, "SCORED_PREFIX \\(SCORED_PREFIX"),
        (CaptureSettings, {"CLAIMS_RISK_CAPTURE_PII": "hash"}, "CLAIMS_RISK_CAPTURE_PII \\("),
        (CaptureSettings, {"CLAIMS_RISK_CAPTURE_PERCENT": "all"}, "CLAIMS_RISK_CAPTURE_PERCENT \\("),
        (DriftTriggerSettings, {"CLAIMS_RISK_LAKE_ROOT": "/data/lake"}, "CLAIMS_RISK_LAKE_ROOT \\("),
    ],
)
def test_a_bad_value_fails_naming_its_variable_but_not_its_value(
    clean: pytest.MonkeyPatch, cls: type[Settings], variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        clean.setenv(name, value)
    with pytest.raises(SettingsError, match="invalid " + message) as raised:
        cls.load()
    assert set(raised.value.variables) <= set(variables)


def test_the_capture_policy_reads_its_settings(clean: pytest.MonkeyPatch) -> None:
    assert capture_policy_from_env().percent == 100.0
    clean.setenv("CLAIMS_RISK_CAPTURE_PII", " Pseudonymize ")
    clean.setenv("CLAIMS_RISK_CAPTURE_KEY", "k3y")
    clean.setenv("CLAIMS_RISK_CAPTURE_PERCENT", "25")
    clean.setenv("CLAIMS_RISK_CAPTURE_PII_FIELDS", "")  # set but empty: no personal fields
    policy = capture_policy_from_env()
    assert (policy.pii, policy.key, policy.percent, policy.personal_fields) == (
        "pseudonymize",
        b"k3y",
        25.0,
        frozenset(),
    )
    assert "k3y" not in repr(CaptureSettings.load())
    clean.setenv("CLAIMS_RISK_CAPTURE_PII_FIELDS", "notes, gender")
    assert capture_policy_from_env().personal_fields == {"notes", "gender"}


def lambda_environment(variables: dict[str, str]) -> dict[str, str]:
    """This process's environment without any setting, as a function with ``variables`` would start."""
    env = {k: v for k, v in os.environ.items() if k not in EVERY_VARIABLE and k != LAMBDA_MARKER}
    return {
        **env,
        LAMBDA_MARKER: "claims-risk-test",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        **variables,
    }


def import_in_subprocess(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    probe = f"import {module} as m; print(type(m.COLD_START_SETTINGS).__name__)"
    return subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("module", sorted(LAMBDA_SETTINGS))
def test_a_handler_imported_in_lambda_without_its_settings_fails_naming_each(module: str) -> None:
    cls = LAMBDA_SETTINGS[module]
    failed = import_in_subprocess(module, lambda_environment({}))
    assert failed.returncode != 0
    assert "SettingsError" in failed.stderr
    for variable in cls.required_in_lambda().values():
        assert variable in failed.stderr, (variable, failed.stderr[-2000:])

    started = import_in_subprocess(module, lambda_environment(COMPLETE[cls]))
    assert started.returncode == 0, started.stderr[-2000:]
    assert started.stdout.strip() == cls.__name__  # read once, at the cold start


def test_a_handler_module_imported_in_lambda_with_a_setting_missing_fails_at_import(
    clean: pytest.MonkeyPatch,
) -> None:
    """The same in this process, through importlib; the module already imported stays as it was."""
    module = "lambdas.pipeline_tasks.handler"
    in_lambda(clean, {"AWS_REGION": "eu-west-1"})  # MLFLOW_TRACKING_URI missing
    before = sys.modules.pop(module, None)
    try:
        with pytest.raises(
            SettingsError, match=r"lambdas\.pipeline_tasks\.handler in Lambda: missing MLFLOW"
        ):
            importlib.import_module(module)
        assert module not in sys.modules
    finally:
        if before is not None:
            sys.modules[module] = before
        else:
            sys.modules.pop(module, None)
