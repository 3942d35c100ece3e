"""On-call: the SNS topic, the alarms of shared/alarms.py, Model Monitor schedules and the dashboard."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import CfnCondition, CfnParameter, Duration, Fn, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as assets
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk.bundling import REPO_ROOT
from cdk.config import StageConfig
from cdk.data import MONITORING_PREFIX
from cdk.functions import python_function
from shared.alarms import ALARMS, AlarmDefinition, alarm
from shared.drift_jobs import CAPTURE_PREFIX, PROCESSING_JOB_STATE_CHANGE, map_job_prefix
from step_functions.state_machine import MONITORING_BASELINE_PREFIX

RECORD_PREPROCESSOR = REPO_ROOT / "sagemaker_jobs" / "monitoring" / "record_preprocessor.py"
COMPARISONS = {
    "GreaterThanThreshold": cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    "GreaterThanOrEqualToThreshold": cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    "LessThanThreshold": cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
}
MISSING = {
    "notBreaching": cloudwatch.TreatMissingData.NOT_BREACHING,
    "breaching": cloudwatch.TreatMissingData.BREACHING,
    "missing": cloudwatch.TreatMissingData.MISSING,
    "ignore": cloudwatch.TreatMissingData.IGNORE,
}


class OnCall(Construct):
    """The one topic every alarm and failure notification goes to."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.prefix = config.prefix
        self.topic = sns.Topic(
            self, "Topic", topic_name=f"{config.prefix}-on-call", master_key=key, enforce_ssl=True
        )
        email = CfnParameter(
            scope,
            "OnCallEmail",
            type="String",
            default="",
            description="E-mail address paged by the alarms (empty: subscribe later)",
        )
        has_email = CfnCondition(
            scope,
            "HasOnCallEmail",
            expression=Fn.condition_not(Fn.condition_equals(email.value_as_string, "")),
        )
        subscription = sns.CfnSubscription(
            self, "Email", topic_arn=self.topic.topic_arn, protocol="email", endpoint=email.value_as_string
        )
        subscription.cfn_options.condition = has_email
        self.alarms: dict[str, cloudwatch.Alarm] = {}

    def metric(self, definition: AlarmDefinition, dimensions: Mapping[str, str]) -> cloudwatch.Metric:
        missing = set(definition.dimensions) - set(dimensions)
        if missing:
            raise ValueError(f"alarm {definition.key} needs dimensions {sorted(missing)}")
        return cloudwatch.Metric(
            namespace=definition.namespace,
            metric_name=definition.metric,
            dimensions_map=dict(dimensions),
            statistic=definition.statistic,
            period=Duration.seconds(definition.period_s),
        )

    def alarm(
        self, scope: Construct, key: str, dimensions: Mapping[str, str], *, suffix: str = ""
    ) -> cloudwatch.Alarm:
        """The CloudWatch alarm of one definition, paging on-call on ALARM and on OK."""
        definition = alarm(key)
        name = definition.alarm_name(self.prefix) + (f"-{suffix}" if suffix else "")
        created = cloudwatch.Alarm(
            scope,
            f"Alarm{name.title().replace('-', '')}",
            alarm_name=name,
            alarm_description=definition.description,
            metric=self.metric(definition, dimensions),
            threshold=definition.threshold,
            comparison_operator=COMPARISONS[definition.comparison],
            evaluation_periods=definition.evaluation_periods,
            datapoints_to_alarm=definition.datapoints_to_alarm,
            treat_missing_data=MISSING[definition.treat_missing_data],
        )
        created.add_alarm_action(actions.SnsAction(self.topic))
        created.add_ok_action(actions.SnsAction(self.topic))
        self.alarms[name] = created
        return created


class ModelMonitoring(Construct):
    """The hourly drift job, and (only for accounts that have SageMaker Model Monitor) its data-quality
    schedule.

    Model Monitor is no longer open to new customers, so the drift job does not depend on it:
    EventBridge Scheduler invokes the drift-trigger Lambda each hour, which starts a plain processing
    job in the project image over the last full hour of captured traffic (shared/drift_jobs.py).
    On several instances (the stage's ``drift_job``) that job is a map over shards of the hour, and
    SageMaker's event of its completion starts the reduce through the same Lambda.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        bucket: s3.IBucket,
        role: iam.IRole,
        endpoint_name: str,
        image: str,
        monitor_image: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.trigger = python_function(
            self,
            "DriftTrigger",
            handler_module="lambdas.drift_trigger.handler",
            service="claims-risk-drift-trigger",
            config=config,
            key=key,
            environment={
                "CLAIMS_RISK_IMAGE_URI": image,
                "CLAIMS_RISK_SAGEMAKER_ROLE_ARN": role.role_arn,
                "CLAIMS_RISK_DATA_BUCKET": bucket.bucket_name,
                "SAGEMAKER_ENDPOINT_NAME": endpoint_name,
                "CLAIMS_RISK_KMS_KEY_ARN": key.key_arn,
                "CLAIMS_RISK_JOB_PREFIX": config.prefix,
                **config.drift_environment(),
                **config.lake_environment(bucket.bucket_name),  # for the job: it writes the lake
            },
            timeout=Duration.seconds(30),
            memory_mb=256,
        )
        self.trigger.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateProcessingJob", "sagemaker:AddTags"],
                resources=[
                    stack.format_arn(
                        service="sagemaker",
                        resource="processing-job",
                        resource_name=f"{config.prefix}-drift-*",
                    )
                ],
            )
        )
        self.trigger.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        self.trigger.add_to_role_policy(  # is there any captured traffic in the hour?
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{CAPTURE_PREFIX}/*"]}},
            )
        )
        invoker = iam.Role(self, "SchedulerRole", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"))
        self.schedule = scheduler.Schedule(
            self,
            "DriftSchedule",
            description="the drift job over the last full hour of captured traffic",
            schedule=scheduler.ScheduleExpression.expression(config.drift_schedule_cron),
            target=scheduler_targets.LambdaInvoke(
                self.trigger,
                input=scheduler.ScheduleTargetInput.from_object(
                    {"scheduled_time": scheduler.ContextAttribute.scheduled_time}
                ),
                retry_attempts=2,
                role=invoker,
            ),
        )
        # The reduce of a sharded drift job starts when its map job has completed: SageMaker sends
        # each processing job's status changes to EventBridge, so nothing waits or polls. On one
        # instance no map job exists and the rule matches nothing.
        self.reduce_rule = events.Rule(
            self,
            "DriftReduceRule",
            description="a completed map of the sharded drift job starts its reduce",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[PROCESSING_JOB_STATE_CHANGE],
                detail={
                    "ProcessingJobName": [{"prefix": map_job_prefix(config.prefix)}],
                    "ProcessingJobStatus": ["Completed"],
                },
            ),
            targets=[events_targets.LambdaFunction(self.trigger, retry_attempts=2)],
        )
        if monitor_image is not None:
            self._model_monitor_schedule(config, key, bucket.bucket_name, role, endpoint_name, monitor_image)

    def _model_monitor_schedule(
        self,
        config: StageConfig,
        key: kms.IKey,
        bucket_name: str,
        role: iam.IRole,
        endpoint_name: str,
        monitor_image: str,
    ) -> None:
        """Model Monitor's own data-quality job, hourly, against the baseline the deploy step profiles.
        Only with ``-c model_monitor=true``, deployed once the first run has created the endpoint (a
        schedule names its endpoint; README, Options)."""
        base = f"s3://{bucket_name}/{MONITORING_PREFIX}"
        baseline = f"s3://{bucket_name}/{MONITORING_BASELINE_PREFIX}"
        # Captured requests hold {"instances": [...]}: this script turns each into flat claim records.
        preprocessor = assets.Asset(self, "RecordPreprocessor", path=str(RECORD_PREPROCESSOR))
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[
                    f"arn:{Stack.of(self).partition}:s3:::{preprocessor.s3_bucket_name}/{preprocessor.s3_object_key}"
                ],
            )
        )
        resources = sagemaker.CfnDataQualityJobDefinition.MonitoringResourcesProperty(
            cluster_config=sagemaker.CfnDataQualityJobDefinition.ClusterConfigProperty(
                instance_count=1,
                instance_type="ml.m5.large",
                volume_size_in_gb=20,
                volume_kms_key_id=key.key_arn,
            )
        )
        definition_name = f"{config.prefix}-data-quality"
        data_quality = sagemaker.CfnDataQualityJobDefinition(
            self,
            "DataQuality",
            job_definition_name=definition_name,
            role_arn=role.role_arn,
            data_quality_app_specification=sagemaker.CfnDataQualityJobDefinition.DataQualityAppSpecificationProperty(
                image_uri=monitor_image, record_preprocessor_source_uri=preprocessor.s3_object_url
            ),
            data_quality_baseline_config=sagemaker.CfnDataQualityJobDefinition.DataQualityBaselineConfigProperty(
                constraints_resource=sagemaker.CfnDataQualityJobDefinition.ConstraintsResourceProperty(
                    s3_uri=f"{baseline}/constraints.json"
                ),
                statistics_resource=sagemaker.CfnDataQualityJobDefinition.StatisticsResourceProperty(
                    s3_uri=f"{baseline}/statistics.json"
                ),
            ),
            data_quality_job_input=sagemaker.CfnDataQualityJobDefinition.DataQualityJobInputProperty(
                endpoint_input=sagemaker.CfnDataQualityJobDefinition.EndpointInputProperty(
                    endpoint_name=endpoint_name, local_path="/opt/ml/processing/input/endpoint"
                )
            ),
            data_quality_job_output_config=sagemaker.CfnDataQualityJobDefinition.MonitoringOutputConfigProperty(
                kms_key_id=key.key_arn,
                monitoring_outputs=[
                    sagemaker.CfnDataQualityJobDefinition.MonitoringOutputProperty(
                        s3_output=sagemaker.CfnDataQualityJobDefinition.S3OutputProperty(
                            local_path="/opt/ml/processing/output",
                            s3_uri=f"{base}reports/data-quality",
                            s3_upload_mode="EndOfJob",
                        )
                    )
                ],
            ),
            job_resources=resources,
            network_config=sagemaker.CfnDataQualityJobDefinition.NetworkConfigProperty(
                enable_inter_container_traffic_encryption=True
            ),
            stopping_condition=sagemaker.CfnDataQualityJobDefinition.StoppingConditionProperty(
                max_runtime_in_seconds=1800
            ),
        )
        data_quality_schedule = sagemaker.CfnMonitoringSchedule(
            self,
            "DataQualitySchedule",
            monitoring_schedule_name=f"{config.prefix}-data-quality",
            monitoring_schedule_config=sagemaker.CfnMonitoringSchedule.MonitoringScheduleConfigProperty(
                monitoring_job_definition_name=definition_name,
                monitoring_type="DataQuality",
                schedule_config=sagemaker.CfnMonitoringSchedule.ScheduleConfigProperty(
                    schedule_expression=config.monitor_schedule_cron
                ),
            ),
        )
        # The definition has no name attribute to reference, so the order is set by hand.
        data_quality_schedule.add_dependency(data_quality)


def component_alarms(
    on_call: OnCall, scope: Construct, component: str, dimensions: Mapping[str, str]
) -> list[cloudwatch.Alarm]:
    return [on_call.alarm(scope, d.key, dimensions) for d in ALARMS if d.component == component]
