"""The drop folder: a claims file under ``incoming/`` starts a batch transform with the serving model,
and a completed transform's scored and rejected rows go into the claims lake (shared/batch_lake.py).

EventBridge events and patterns follow "Events that Amazon SageMaker AI sends to Amazon EventBridge"
(https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html): its
transform and processing job examples name the fields matched here (tests/unit/events/ holds them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as notifications
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk.config import StageConfig
from cdk.data import INCOMING_PREFIX, REJECTED_PREFIX, SCORED_PREFIX
from cdk.endpoint import SageMakerRole
from cdk.functions import failed_events_queue, python_function
from cdk.images import Images
from shared.alarms import alarm
from shared.batch_jobs import JOB_NAME_PREFIX, REFUSAL_NOTE
from shared.batch_lake import LAKE_JOB_PREFIX, TRANSFORM_EVENT
from step_functions.state_machine import MODEL_SPEC_KEY

BATCH_JOB_PREFIX = JOB_NAME_PREFIX
INPUT_URI_PATH = "$.detail.TransformInput.DataSource.S3DataSource.S3Uri"
PROCESSING_EVENT = "SageMaker Processing Job State Change"
_IAM5 = "AwsSolutions::AwsSolutions-IAM5"
T = TypeVar("T")


def _one_in_stack(scope: Construct, kind: type[T]) -> T:
    """The stack's one ``kind`` (its project image, its SageMaker role), built before this construct."""
    found = [c for c in Stack.of(scope).node.children if isinstance(c, kind)]
    if len(found) != 1:
        raise ValueError(f"the drop folder needs the stack's one {kind.__name__}, found {len(found)}")
    return found[0]


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
        image: str | None = None,
        job_role: iam.IRole | None = None,
    ) -> None:
        """``image`` and ``job_role`` run the lake job: the project image and the SageMaker jobs' role
        (which holds the lake's grants, cdk/lake.py); by default the stack's own, built before this."""
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        image = image or _one_in_stack(self, Images).project
        job_role = job_role or _one_in_stack(self, SageMakerRole).role
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
        self.dead_letters = failed_events_queue(self, key)
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
                # The lake job it starts when a transform completes (shared/batch_lake.py).
                "CLAIMS_RISK_IMAGE_URI": image,
                "CLAIMS_RISK_SAGEMAKER_ROLE_ARN": job_role.role_arn,
                **config.lake_environment(bucket.bucket_name),
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

        self._lake_job(config, bucket, topic, job_role, arn)

    def _lake_job(
        self,
        config: StageConfig,
        bucket: s3.Bucket,
        topic: sns.ITopic,
        job_role: iam.IRole,
        arn: Callable[[str, str], str],
    ) -> None:
        """A completed transform job → the trigger → the lake job; a failed lake job → on-call."""
        self.completions = events.Rule(
            self,
            "JobCompleted",
            description="a drop-folder batch transform completed: the trigger writes its rows to the lake",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[TRANSFORM_EVENT],
                detail={
                    "TransformJobName": [{"prefix": BATCH_JOB_PREFIX}],
                    "TransformJobStatus": ["Completed"],
                    # This stack's jobs only: another stage's in the same account writes elsewhere.
                    "TransformOutput": {
                        "S3OutputPath": [{"prefix": f"s3://{bucket.bucket_name}/{SCORED_PREFIX}"}]
                    },
                },
            ),
            # EventBridge invokes Lambda asynchronously: a failed start is retried by Lambda, then
            # lands in the trigger's dead-letter queue, and its errors alarm pages on-call.
            targets=[targets.LambdaFunction(self.function)],
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="StartLakeJobs",
                actions=["sagemaker:CreateProcessingJob", "sagemaker:AddTags"],
                resources=[arn("processing-job", f"{LAKE_JOB_PREFIX}*")],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="PassTheLakeJobRole",
                actions=["iam:PassRole"],
                resources=[job_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        # The job role has the bucket, the key and the lake (cdk/endpoint.py, cdk/lake.py); the lake
        # job also asks SageMaker which object and version the transform scored, and reads that version.
        self.job_access = iam.Policy(
            self,
            "LakeJobAccess",
            statements=[
                iam.PolicyStatement(
                    sid="DescribeDropFolderJobs",
                    actions=["sagemaker:DescribeTransformJob", "sagemaker:ListTags"],
                    resources=[arn("transform-job", f"{BATCH_JOB_PREFIX}*")],
                ),
                iam.PolicyStatement(
                    sid="ReadDroppedVersions",
                    actions=["s3:GetObjectVersion"],
                    resources=[bucket.arn_for_objects(f"{INCOMING_PREFIX}*")],
                ),
            ],
        )
        self.job_access.attach_to_role(job_role)
        detail = "$.detail"
        self.lake_failures = events.Rule(
            self,
            "LakeJobFailed",
            description="a drop-folder lake job failed or was stopped: its file's rows are not in the lake",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[PROCESSING_EVENT],
                detail={
                    "ProcessingJobName": [{"prefix": LAKE_JOB_PREFIX}],
                    "ProcessingJobStatus": ["Failed", "Stopped"],
                },
            ),
            targets=[
                targets.SnsTopic(
                    topic,
                    message=events.RuleTargetInput.from_text(
                        f"claims-risk lake job {events.EventField.from_path(f'{detail}.ProcessingJobName')} "
                        f"{events.EventField.from_path(f'{detail}.ProcessingJobStatus')}: "
                        f"{events.EventField.from_path(f'{detail}.FailureReason')}. The file's scored and "
                        "rejected rows are still under scored/ and rejected/, not yet in the claims lake; "
                        "once the cause is fixed, invoke the batch trigger with "
                        '{"lake_rerun": {"transform_job": "claims-batch-..."}}, naming the transform job '
                        "this lake job is named after (README, Claims lake in AWS)."
                    ),
                )
            ],
        )
        definition = alarm("batch-failed")  # the transform's failures' alarm, for the lake's
        failed = cloudwatch.Alarm(
            self,
            "LakeJobFailedAlarm",
            alarm_name=f"{definition.alarm_name(config.prefix)}-lake",
            alarm_description="a drop-folder lake job failed or stopped: the file was scored (its output is "
            "in S3) but its rows did not reach the claims lake",
            metric=cloudwatch.Metric(
                namespace=definition.namespace,
                metric_name=definition.metric,
                dimensions_map={"RuleName": self.lake_failures.rule_name},
                statistic=definition.statistic,
                period=Duration.seconds(definition.period_s),
            ),
            threshold=definition.threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=definition.evaluation_periods,
            datapoints_to_alarm=definition.datapoints_to_alarm,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        failed.add_alarm_action(actions.SnsAction(topic))
        failed.add_ok_action(actions.SnsAction(topic))
        self._acknowledge()

    def _acknowledge(self) -> None:
        """cdk-nag's findings on the lake job's grants, each with its reason."""
        arn = "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>"
        policy = self.function.role.node.try_find_child("DefaultPolicy") if self.function.role else None
        if policy is not None:
            Validations.of(policy).acknowledge(
                Acknowledgment(
                    id=f"{_IAM5}[Resource::{arn}:processing-job/{LAKE_JOB_PREFIX}*]",
                    reason="one lake job per completed transform job, named after it: the prefix is the "
                    "narrowest name known before the file is dropped",
                )
            )
        Validations.of(self.job_access.node.find_child("Resource")).acknowledge(
            Acknowledgment(
                id=f"{_IAM5}[Resource::{arn}:transform-job/{BATCH_JOB_PREFIX}*]",
                reason="the lake job reads the transform job it mirrors: each dropped file's job is named "
                "after it, all with the claims-batch- prefix",
            ),
            Acknowledgment(
                id=f"{_IAM5}[Resource::<Data178AD3D0.Arn>/{INCOMING_PREFIX}*]",
                reason="the lake job reads the version of the dropped file its transform scored: senders "
                "name their files under incoming/",
            ),
        )

    @property
    def handler(self) -> lambda_.Function:
        return self.function
