"""The real-time SageMaker endpoint's settings, its rollback alarms and the one SageMaker role.

The retraining state machine owns the endpoint (see :class:`ModelEndpoint`): blue/green, canary
traffic first, rolled back automatically by the endpoint's error and latency alarms.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import StageConfig
from cdk.monitoring import OnCall
from shared.alarms import alarm
from step_functions.state_machine import DeploymentGuardrails

VARIANT = "AllTraffic"
ROLLBACK_ALARMS = ("endpoint-5xx", "endpoint-latency")  # keys of shared.alarms
# What a role needs of the customer-managed key to read and write encrypted data, and no more.
KEY_USE = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey")


def guardrails(config: StageConfig, *, model_monitor: bool = False) -> DeploymentGuardrails:
    """The one setting of the endpoint the pipeline deploys: size, capture, scaling and guardrails."""
    return DeploymentGuardrails(
        canary_percent=config.canary_percent,
        canary_wait_s=config.canary_wait_s,
        baking_s=config.baking_s,
        rollback_alarms=tuple(alarm(k).alarm_name(config.prefix) for k in ROLLBACK_ALARMS),
        instance_type=config.endpoint_instance_type,
        initial_instance_count=config.endpoint_min_instances,
        capture_percent=config.capture_percent,
        max_instance_count=config.endpoint_max_instances,
        invocations_per_instance_target=config.invocations_per_instance_target,
        model_monitor=model_monitor,
    )


def key_grant_statement(key: kms.IKey) -> iam.PolicyStatement:
    """kms:CreateGrant for SageMaker's own use of the key (encrypted volumes and endpoints)."""
    return iam.PolicyStatement(
        sid="KeyGrantsForSageMaker",
        actions=["kms:CreateGrant"],
        resources=[key.key_arn],
        conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
    )


class SageMakerRole(Construct):
    """The one role SageMaker jobs, models and monitors run as: the data bucket, the key, logs."""

    def __init__(self, scope: Construct, construct_id: str, *, bucket: s3.IBucket, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="claims-risk SageMaker jobs, models and monitoring schedules",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="DataBucket",  # claims, splits, models, captured requests and reports all live here
                actions=["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:GetBucketLocation"],
                resources=[bucket.bucket_arn, bucket.arn_for_objects("*")],
            )
        )
        key.grant(self.role, *KEY_USE)
        # Jobs with a VolumeKmsKeyId have SageMaker create a grant on the key for their volumes (the
        # SageMaker API permissions reference); only for AWS resources, never for a person.
        self.role.add_to_policy(key_grant_statement(key))
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PullAwsImages",  # SageMaker's own images live in AWS-owned registries
                actions=[
                    "ecr:GetAuthorizationToken",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                resources=["*"],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="JobLogs",
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="/aws/sagemaker/*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="JobMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # PutMetricData has no resource; the namespace is conditioned instead
                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "ClaimsRisk*"]}},
            )
        )


class ModelEndpoint(Construct):
    """The endpoint's settings and rollback alarms. The endpoint itself has one owner, the retraining
    state machine: its deploy step creates the endpoint the first time (with data capture) and updates
    it with the guardrails after that, then registers its autoscaling, whichever way the model arrived
    (a training run, or ``{"model_package_arn": ...}`` for an approved package). CloudFormation never
    creates or updates the endpoint, so a later ``cdk deploy`` cannot revert the pipeline's model.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        endpoint_name: str,
        on_call: OnCall,
        model_monitor: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.guardrails = guardrails(config, model_monitor=model_monitor)
        # They exist before the first deployment names them; no data means OK (treat missing data).
        dimensions = {"EndpointName": endpoint_name, "VariantName": VARIANT}
        self.alarms = [on_call.alarm(self, k, dimensions) for k in ROLLBACK_ALARMS]
