"""The drop folder: a claims file under ``incoming/`` starts a batch transform with the serving model."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as notifications
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.config import StageConfig
from cdk.data import INCOMING_PREFIX, REJECTED_PREFIX, SCORED_PREFIX
from cdk.functions import python_function
from shared.batch_jobs import REFUSAL_NOTE
from step_functions.state_machine import MODEL_SPEC_KEY

BATCH_JOB_PREFIX = "claims-batch-"
INPUT_URI_PATH = "$.detail.TransformInput.DataSource.S3DataSource.S3Uri"


class DropFolderBatch(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        bucket: s3.Bucket,
        endpoint_name: str,
        topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.idempotency = dynamodb.Table(
            self,
            "Idempotency",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute="expiration",
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.DESTROY,  # only short-lived idempotency records
        )
        # S3 invokes the trigger asynchronously: events it still fails after Lambda's retries wait here.
        self.dead_letters = sqs.Queue(
            self,
            "FailedEvents",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.function = python_function(
            self,
            "Trigger",
            handler_module="lambdas.batch_trigger.handler",
            service="claims-risk-batch-trigger",
            config=config,
            key=key,
            environment={
                "SAGEMAKER_ENDPOINT_NAME": endpoint_name,
                "IDEMPOTENCY_TABLE": self.idempotency.table_name,
                "INCOMING_PREFIX": INCOMING_PREFIX,
                "SCORED_PREFIX": SCORED_PREFIX,
                "REJECTED_PREFIX": REJECTED_PREFIX,
                **config.transform_environment(),  # the stage's scale-out of each job
                "DATA_KMS_KEY_ID": key.key_arn,
                "CLAIMS_RISK_MODEL_SPEC_S3": f"s3://{bucket.bucket_name}/{MODEL_SPEC_KEY}",
            },
            timeout=Duration.seconds(60),
            memory_mb=256,
            dead_letter_queue=self.dead_letters,
        )
        self.idempotency.grant_read_write_data(self.function)
        # It reads a dropped CSV's first line (a ranged GET of the version dropped) to pass its columns.
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadDroppedHeaders",
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[bucket.arn_for_objects(f"{INCOMING_PREFIX}*")],
            )
        )
        # It checks those headers against the serving model's spec, which the deploy step publishes.
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadServingSpec",
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(MODEL_SPEC_KEY)],
            )
        )
        # Until a model is deployed there is no spec: listing that one key tells "absent" (the default
        # spec applies) from "denied", as S3 answers 403 for a missing key to a caller who cannot list.
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="FindServingSpec",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringEquals": {"s3:prefix": MODEL_SPEC_KEY}},
            )
        )
        # A refused file's sender gets a note beside where its rejected rows would go; nothing else there.
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="WriteRefusalNotes",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{REJECTED_PREFIX}*/{REFUSAL_NOTE}")],
            )
        )
        key.grant_decrypt(self.function)
        key.grant(self.function, "kms:GenerateDataKey")  # the notes are written SSE-KMS with the data key

        def arn(resource: str, name: str) -> str:
            return stack.format_arn(service="sagemaker", resource=resource, resource_name=name)

        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateTransformJob", "sagemaker:AddTags"],
                resources=[arn("transform-job", f"{BATCH_JOB_PREFIX}*")],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="FindTheServingModel",
                actions=["sagemaker:DescribeEndpoint", "sagemaker:DescribeEndpointConfig"],
                resources=[arn("endpoint", endpoint_name), arn("endpoint-config", "*")],
            )
        )
        bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            notifications.LambdaDestination(self.function),
            s3.NotificationKeyFilter(prefix=INCOMING_PREFIX),
        )
        self.failures = events.Rule(
            self,
            "JobFailed",
            description="a drop-folder batch transform failed or was stopped",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Transform Job State Change"],
                detail={
                    "TransformJobName": [{"prefix": BATCH_JOB_PREFIX}],
                    "TransformJobStatus": ["Failed", "Stopped"],
                },
            ),
            targets=[
                targets.SnsTopic(
                    topic,
                    message=events.RuleTargetInput.from_text(
                        f"claims-risk batch job {events.EventField.from_path('$.detail.TransformJobName')} "
                        f"{events.EventField.from_path('$.detail.TransformJobStatus')}: "
                        f"{events.EventField.from_path('$.detail.FailureReason')} "
                        f"(input {events.EventField.from_path(INPUT_URI_PATH)})"
                    ),
                )
            ],
        )

    @property
    def handler(self) -> lambda_.Function:
        return self.function
