"""The retraining state machine, from the one definition in step_functions/, and what starts it."""

from __future__ import annotations

from aws_cdk import ArnFormat, CfnParameter, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.config import StageConfig
from cdk.endpoint import KEY_USE, key_grant_statement
from cdk.functions import python_function
from shared.alarms import RETRAIN_ON_ALARMS, alarm
from step_functions.state_machine import (
    CHAMPION_MODEL_KEY,
    MODEL_CARD_KEY,
    MODEL_SPEC_KEY,
    RUNS_PREFIX,
    SYNC_EVENT_RULES,
    DeploymentGuardrails,
    definition_json,
    placeholder,
)

JOB_NAME_PREFIX = "claims-risk-"  # every job, model and endpoint config the machine creates
AUTOSCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"


class RetrainingPipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        bucket: s3.IBucket,
        sagemaker_role: iam.IRole,
        topic: sns.ITopic,
        endpoint_name: str,
        guardrails: DeploymentGuardrails,
        image: str,
        monitor_image: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        model_package_group = f"{config.prefix}-models"
        mlflow_uri = CfnParameter(
            scope,
            "MlflowTrackingUri",
            type="String",
            default="",
            description="URL of a SageMaker managed MLflow tracking server to register models in too "
            "(empty: the SageMaker model registry only)",
        )
        self.tasks = python_function(
            self,
            "Tasks",
            handler_module="lambdas.pipeline_tasks.handler",
            service="claims-risk-pipeline-tasks",
            config=config,
            key=key,
            environment={"MLFLOW_TRACKING_URI": mlflow_uri.value_as_string},
            timeout=Duration.minutes(2),
            memory_mb=512,
        )
        # It reads a run's reports and writes the gated report, gates.json and registration.json beside them.
        self.tasks.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{RUNS_PREFIX}/*")],
            )
        )
        self.tasks.add_to_role_policy(  # the model card, champion and spec it publishes after a deployment
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[
                    bucket.arn_for_objects(MODEL_CARD_KEY),
                    bucket.arn_for_objects(CHAMPION_MODEL_KEY),
                    bucket.arn_for_objects(MODEL_SPEC_KEY),
                ],
            )
        )
        key.grant(self.tasks, "kms:Decrypt", "kms:GenerateDataKey")
        self.tasks.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateModelPackage",
                    "sagemaker:CreateModelPackageGroup",
                    "sagemaker:DescribeModelPackageGroup",
                    # Registering approves the package the gates step tracked as pending.
                    "sagemaker:UpdateModelPackage",
                    "sagemaker:AddTags",
                ],
                resources=[
                    stack.format_arn(
                        service="sagemaker", resource="model-package-group", resource_name=model_package_group
                    ),
                    stack.format_arn(
                        service="sagemaker",
                        resource="model-package",
                        resource_name=f"{model_package_group}/*",
                    ),
                ],
            )
        )
        self.tasks.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker-mlflow:CreateRegisteredModel", "sagemaker-mlflow:CreateModelVersion"],
                resources=[
                    stack.format_arn(
                        service="sagemaker", resource="mlflow-tracking-server", resource_name="*"
                    )
                ],
            )
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=config.log_retention,
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"{config.prefix}-retraining",
            # The lake's root names the bucket as the definition does: DefinitionSubstitutions fill it.
            definition_body=sfn.DefinitionBody.from_string(
                definition_json(guardrails, config.jobs, config.lake_environment(placeholder("DataBucket")))
            ),
            definition_substitutions={
                "SageMakerRoleArn": sagemaker_role.role_arn,
                "DataBucket": bucket.bucket_name,
                "KmsKeyArn": key.key_arn,
                "Image": image,
                "TasksFunctionArn": self.tasks.function_arn,
                "TopicArn": topic.topic_arn,
                "EndpointName": endpoint_name,
                "ModelPackageGroup": model_package_group,
                **({"MonitorImage": monitor_image} if monitor_image is not None else {}),
            },
            role=self.role,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            tracing_enabled=True,
            timeout=Duration.hours(12),
        )
        self._grant(stack, sagemaker_role, topic, key, endpoint_name)
        self._triggers(config)

    def _grant(
        self, stack: Stack, sagemaker_role: iam.IRole, topic: sns.ITopic, key: kms.IKey, endpoint_name: str
    ) -> None:
        """What the machine's tasks call; CustomState-style JSON definitions grant nothing by themselves."""

        def arns(resource: str, name: str = f"{JOB_NAME_PREFIX}*") -> str:
            return stack.format_arn(service="sagemaker", resource=resource, resource_name=name)

        jobs = [arns("processing-job"), arns("training-job"), arns("hyper-parameter-tuning-job")]
        # CreateEndpoint with an endpoint config's KmsKeyId needs the caller to grant SageMaker the key.
        self.role.add_to_policy(key_grant_statement(key))
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="RunJobs",
                actions=[
                    "sagemaker:CreateProcessingJob",
                    "sagemaker:DescribeProcessingJob",
                    "sagemaker:StopProcessingJob",
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:CreateHyperParameterTuningJob",
                    "sagemaker:DescribeHyperParameterTuningJob",
                    "sagemaker:StopHyperParameterTuningJob",
                    "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                ],
                resources=jobs,
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="DeployModel",
                actions=[
                    "sagemaker:CreateModel",
                    "sagemaker:CreateEndpointConfig",
                    "sagemaker:CreateEndpoint",
                    "sagemaker:UpdateEndpoint",
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:AddTags",
                    "sagemaker:DescribeModelPackage",
                ],
                resources=[
                    arns("model"),
                    arns("endpoint-config"),
                    arns("endpoint", endpoint_name),
                    # The registry's versions, or an approved package given as the run's input.
                    arns("model-package", "*"),
                ],
            )
        )
        # The deploy step registers the endpoint's autoscaling once it serves: Application Auto
        # Scaling's actions, what it needs of SageMaker and CloudWatch on the caller's behalf, and its
        # service-linked role the first time ("Application Auto Scaling identity-based policy
        # examples" and "Service-linked roles for Application Auto Scaling", its user guide).
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="EndpointAutoscaling",
                actions=[
                    "application-autoscaling:RegisterScalableTarget",
                    "application-autoscaling:DescribeScalableTargets",
                    "application-autoscaling:PutScalingPolicy",
                    "application-autoscaling:DescribeScalingPolicies",
                ],
                resources=["*"],  # scalable targets have no ARN before they are registered
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="AutoscalingOnTheCallersBehalf",
                actions=[
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:UpdateEndpointWeightsAndCapacities",
                    "cloudwatch:DescribeAlarms",
                    "cloudwatch:PutMetricAlarm",
                    "cloudwatch:DeleteAlarms",
                ],
                resources=[
                    arns("endpoint", endpoint_name),
                    arns("endpoint-config"),
                    stack.format_arn(
                        service="cloudwatch",
                        resource="alarm",
                        resource_name="TargetTracking*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    ),
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="AutoscalingServiceLinkedRole",
                actions=["iam:CreateServiceLinkedRole"],
                resources=[
                    f"arn:{stack.partition}:iam::{stack.account}:role/aws-service-role/"
                    f"{AUTOSCALING_SERVICE}/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
                ],
                conditions={"StringLike": {"iam:AWSServiceName": AUTOSCALING_SERVICE}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(sid="FindEndpoint", actions=["sagemaker:ListEndpoints"], resources=["*"])
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="SyncJobEvents",  # how the .sync integrations learn that a job ended
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(service="events", resource="rule", resource_name=rule)
                    for rule in SYNC_EVENT_RULES.values()
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PassOnlyTheSageMakerRole",
                actions=["iam:PassRole"],
                resources=[sagemaker_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        self.tasks.grant_invoke(self.role)
        topic.grant_publish(self.role)
        key.grant(self.role, *KEY_USE)

    def _triggers(self, config: StageConfig) -> None:
        """A weekly schedule and the drift alarms start a run with the defaults ({}), if the stage says so."""
        start = targets.SfnStateMachine(self.state_machine, input=events.RuleTargetInput.from_object({}))
        events.Rule(
            self,
            "Schedule",
            description="scheduled retraining",
            schedule=events.Schedule.expression(config.retrain_schedule_cron),
            enabled=config.retrain_on_schedule,
            targets=[start],
        )
        self.drift_rule = events.Rule(
            self,
            "OnDrift",
            description="retrain when a drift alarm goes off",
            event_pattern=events.EventPattern(
                source=["aws.cloudwatch"],
                detail_type=["CloudWatch Alarm State Change"],
                detail={
                    "alarmName": [alarm(k).alarm_name(config.prefix) for k in sorted(RETRAIN_ON_ALARMS)],
                    "state": {"value": ["ALARM"]},
                },
            ),
            enabled=config.retrain_on_drift,
            targets=[start],
        )
