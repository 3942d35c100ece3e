"""Late outcomes in AWS: a labels file under ``outcomes/incoming/`` starts the quality job, which loads
the outcomes into the claims lake, judges the serving model on them and publishes the metrics the
``model-quality`` alarm watches (shared/quality_jobs.py says how; the alarms are created with the
others in cdk/stack.py, from shared/alarms.py).

The events and patterns follow AWS's pages: S3's "Object Created" event as S3 sends it to EventBridge
("EventBridge event message structure", https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html)
and SageMaker's processing job state change ("Events that Amazon SageMaker AI sends to Amazon
EventBridge", https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html);
tests/unit/events/ holds their examples, which tests/infra/test_quality_stack.py matches against the
rules.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk.config import StageConfig
from cdk.functions import failed_events_queue, python_function
from shared.quality_jobs import OBJECT_CREATED, OUTCOMES_PREFIX, QUALITY_JOB_INFIX
from step_functions.state_machine import MODEL_CARD_KEY

PROCESSING_EVENT = "SageMaker Processing Job State Change"
_IAM5 = "AwsSolutions::AwsSolutions-IAM5"
_ARN = "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>"


class ModelQualityMonitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        bucket: s3.Bucket,
        job_role: iam.IRole,
        endpoint_name: str,
        image: str,
        topic: sns.ITopic,
    ) -> None:
        """``job_role`` runs the quality job: the SageMaker jobs' role, which holds the bucket, the key,
        the lake's grants (cdk/lake.py) and PutMetricData for ClaimsRisk* namespaces (cdk/endpoint.py)."""
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.job_prefix = f"{config.prefix}{QUALITY_JOB_INFIX}"
        # S3 sends the bucket's events to EventBridge (free for AWS service events); a rule picks ours.
        bucket.enable_event_bridge_notification()
        # EventBridge invokes the trigger asynchronously: events it still fails after Lambda's retries
        # wait here, and its errors alarm pages on-call (cdk/stack.py).
        self.dead_letters = failed_events_queue(self, key)
        self.trigger = python_function(
            self,
            "Trigger",
            handler_module="lambdas.quality_trigger.handler",
            service="claims-risk-quality-trigger",
            config=config,
            key=key,
            environment={
                "CLAIMS_RISK_IMAGE_URI": image,
                "CLAIMS_RISK_SAGEMAKER_ROLE_ARN": job_role.role_arn,
                "CLAIMS_RISK_DATA_BUCKET": bucket.bucket_name,
                "SAGEMAKER_ENDPOINT_NAME": endpoint_name,
                "CLAIMS_RISK_KMS_KEY_ARN": key.key_arn,
                "CLAIMS_RISK_JOB_PREFIX": config.prefix,
                "CLAIMS_RISK_MODEL_CARD_S3": f"s3://{bucket.bucket_name}/{MODEL_CARD_KEY}",
                "CLAIMS_RISK_OUTCOMES_PREFIX": OUTCOMES_PREFIX,
                **config.lake_environment(bucket.bucket_name),  # for the job: it writes the lake
            },
            timeout=Duration.seconds(30),
            memory_mb=256,
            dead_letter_queue=self.dead_letters,
        )
        # Lambda sends a failed event to the KMS-encrypted queue as the function: a producer of an
        # SSE-KMS queue needs a data key of it (CDK's dead-letter grant gives sqs:SendMessage only).
        key.grant(self.trigger, "kms:GenerateDataKey", "kms:Decrypt")
        self.trigger.add_to_role_policy(
            iam.PolicyStatement(
                sid="StartQualityJobs",
                actions=["sagemaker:CreateProcessingJob", "sagemaker:AddTags"],
                resources=[
                    stack.format_arn(
                        service="sagemaker", resource="processing-job", resource_name=f"{self.job_prefix}*"
                    )
                ],
            )
        )
        self.trigger.add_to_role_policy(
            iam.PolicyStatement(
                sid="PassTheQualityJobRole",
                actions=["iam:PassRole"],
                resources=[job_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        self.labels_dropped = events.Rule(
            self,
            "LabelsDropped",
            description="a labels file under outcomes/incoming/ starts the model-quality job",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=[OBJECT_CREATED],
                detail={
                    "bucket": {"name": [bucket.bucket_name]},
                    "object": {"key": [{"prefix": OUTCOMES_PREFIX}]},
                },
            ),
            targets=[targets.LambdaFunction(self.trigger, retry_attempts=2)],
        )
        # The job reads the version of the file that was dropped (GetObject with a VersionId needs
        # s3:GetObjectVersion: the Service Authorization Reference); its other objects and the lake
        # are the role's already.
        self.job_access = iam.Policy(
            self,
            "JobAccess",
            statements=[
                iam.PolicyStatement(
                    sid="ReadDroppedLabelVersions",
                    actions=["s3:GetObjectVersion"],
                    resources=[bucket.arn_for_objects(f"{OUTCOMES_PREFIX}*")],
                )
            ],
        )
        self.job_access.attach_to_role(job_role)

        def field(name: str) -> str:
            return events.EventField.from_path(f"$.detail.{name}")

        self.failures = events.Rule(
            self,
            "JobFailed",
            description="a model-quality job failed or was stopped: its labels file was not judged",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[PROCESSING_EVENT],
                detail={
                    "ProcessingJobName": [{"prefix": self.job_prefix}],
                    "ProcessingJobStatus": ["Failed", "Stopped"],
                },
            ),
            targets=[
                targets.SnsTopic(
                    topic,
                    message=events.RuleTargetInput.from_text(
                        f"claims-risk model-quality job {field('ProcessingJobName')} "
                        f"{field('ProcessingJobStatus')}: {field('ExitMessage')} "
                        f"({field('FailureReason')}). The labels file is "
                        f"still under {OUTCOMES_PREFIX} and nothing of it was kept in the claims lake; "
                        "upload it again (a fixed copy, or the same once the cause is fixed) to re-run "
                        "(README, Claims lake in AWS)."
                    ),
                )
            ],
        )
        self._acknowledge()

    def _acknowledge(self) -> None:
        """cdk-nag's findings on the trigger and the job's grant, each with its reason."""
        function = self.trigger.node.default_child
        if function is not None:
            Validations.of(function).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-L1",
                    reason="Python 3.12 is the newest runtime with a public Powertools layer for arm64 "
                    "that we pin; the bytecode shipped in the bundle is compiled for it",
                )
            )
        role = self.trigger.role
        if role is not None:
            Validations.of(role.node.default_child or role).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AWSLambdaBasicExecutionRole]",
                    reason="AWSLambdaBasicExecutionRole grants only CreateLogStream/PutLogEvents on the "
                    "function's own log group; a hand-written copy would say the same",
                )
            )
            policy = role.node.try_find_child("DefaultPolicy")
            if policy is not None:
                Validations.of(policy).acknowledge(
                    Acknowledgment(
                        id=f"{_IAM5}[Resource::*]",
                        reason="X-Ray's PutTraceSegments/PutTelemetryRecords take no resource",
                    ),
                    Acknowledgment(
                        id=f"{_IAM5}[Resource::{_ARN}:processing-job/{self.job_prefix}*]",
                        reason="one quality job per labels file version, named after it: the stage's "
                        "prefix is the narrowest name known before the file is dropped",
                    ),
                )
        Validations.of(self.job_access.node.find_child("Resource")).acknowledge(
            Acknowledgment(
                id=f"{_IAM5}[Resource::<Data178AD3D0.Arn>/{OUTCOMES_PREFIX}*]",
                reason="the quality job reads the version of the labels file it was started for: senders "
                f"name their files under {OUTCOMES_PREFIX}",
            )
        )
