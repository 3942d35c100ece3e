"""The data layer: one customer-managed KMS key, the data bucket and its access-log bucket."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import StageConfig

# Prefixes of the data bucket, and who writes them.
INCOMING_PREFIX = "incoming/"  # claims systems drop files here; each starts a batch transform
SCORED_PREFIX = "scored/"
REJECTED_PREFIX = "rejected/"
CAPTURE_PREFIX = "monitoring/capture"  # the endpoint's data capture
MONITORING_PREFIX = "monitoring/"
CODE_PREFIX = "code/"


class DataLayer(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{config.prefix}",
            description="claims-risk: claims, models, captured requests, logs and the on-call topic",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
        )
        # CloudWatch Logs and SNS encrypt with the key too (log groups of the API, the state machine).
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name="*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    }
                },
            )
        )
        for service in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
            # Alarms and rules publish to the encrypted on-call topic.
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    principals=[iam.ServicePrincipal(service)],
                    resources=["*"],
                    conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
                )
            )
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            # Server access logs cannot be delivered to a KMS-encrypted bucket: SSE-S3 is the only choice.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(365), noncurrent_version_expiration=Duration.days(30)
                )
            ],
            removal_policy=config.removal_policy,
            auto_delete_objects=config.removal_policy.name == "DESTROY",
        )
        self.bucket = s3.Bucket(
            self,
            "Data",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,  # the batch trigger is idempotent on the object version
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="data/",
            lifecycle_rules=[
                s3.LifecycleRule(id="old-versions", noncurrent_version_expiration=Duration.days(90)),
                s3.LifecycleRule(id="capture", prefix=CAPTURE_PREFIX, expiration=Duration.days(400)),
                s3.LifecycleRule(
                    id="incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(7)
                ),
            ],
            removal_policy=config.removal_policy,
            auto_delete_objects=config.removal_policy.name == "DESTROY",
        )
