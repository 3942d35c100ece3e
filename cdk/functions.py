"""Our Lambda functions, built one way: Python 3.12 on arm64, the Powertools layer, local bundling,
X-Ray, a KMS-encrypted log group with the stage's retention."""

from __future__ import annotations

from aws_cdk import AssetHashType, Duration, Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.bundling import REPO_ROOT, function_bundling
from cdk.config import POWERTOOLS_LAYER_ACCOUNT, POWERTOOLS_LAYER_VERSION, StageConfig


def powertools_layer(scope: Construct) -> lambda_.ILayerVersion:
    stack = Stack.of(scope)
    existing = stack.node.try_find_child("PowertoolsLayer")
    if existing is not None:
        return existing  # type: ignore[return-value]
    return lambda_.LayerVersion.from_layer_version_arn(
        stack,
        "PowertoolsLayer",
        f"arn:{stack.partition}:lambda:{stack.region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-python312-arm64:{POWERTOOLS_LAYER_VERSION}",
    )


def failed_events_queue(scope: Construct, key: kms.IKey) -> sqs.Queue:
    """Where an asynchronously invoked function's events wait once Lambda's retries have failed
    (kept 14 days, encrypted with the stack's key, TLS only)."""
    return sqs.Queue(
        scope,
        "FailedEvents",
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
        enforce_ssl=True,
        retention_period=Duration.days(14),
    )


def python_function(
    scope: Construct,
    construct_id: str,
    *,
    handler_module: str,
    service: str,
    config: StageConfig,
    key: kms.IKey,
    environment: dict[str, str],
    timeout: Duration,
    memory_mb: int | None = None,
    dead_letter_queue: sqs.IQueue | None = None,
) -> lambda_.Function:
    log_group = logs.LogGroup(
        scope,
        f"{construct_id}Logs",
        retention=config.log_retention,
        encryption_key=key,
        removal_policy=config.removal_policy,
    )
    return lambda_.Function(
        scope,
        construct_id,
        runtime=lambda_.Runtime.PYTHON_3_12,
        architecture=lambda_.Architecture.ARM_64,
        handler=f"{handler_module}.lambda_handler",
        # Hash what is bundled, not the repository (which holds the virtual environment).
        code=lambda_.Code.from_asset(
            str(REPO_ROOT), bundling=function_bundling(handler_module), asset_hash_type=AssetHashType.OUTPUT
        ),
        layers=[powertools_layer(scope)],
        memory_size=memory_mb or config.lambda_memory_mb,
        timeout=timeout,
        tracing=lambda_.Tracing.ACTIVE,
        log_group=log_group,
        environment_encryption=key,
        dead_letter_queue=dead_letter_queue,
        environment={
            "POWERTOOLS_SERVICE_NAME": service,
            "POWERTOOLS_METRICS_NAMESPACE": "ClaimsRisk",
            "LOG_LEVEL": "INFO",
            **environment,
        },
    )
