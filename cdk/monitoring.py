"""On-call: the SNS topic, the alarms of shared/alarms.py, Model Monitor schedules and the dashboard."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import CfnCondition, CfnParameter, Duration, Fn, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3_assets as assets
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk.bundling import REPO_ROOT
from cdk.config import StageConfig
from cdk.data import MONITORING_PREFIX
from shared.alarms import ALARMS, AlarmDefinition, alarm
from step_functions.state_machine import CHAMPION_MODEL_KEY, MONITORING_BASELINE_PREFIX

DRIFT_JOB_MODULE = "sagemaker_jobs.monitoring.drift"
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
    """Model Monitor's data-quality schedule and our drift job (bring-your-own container), hourly."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        bucket_name: str,
        role: iam.IRole,
        endpoint_name: str,
        monitor_image: str,
        job_image: str,
        code_uri: str,
        condition: CfnCondition,
    ) -> None:
        super().__init__(scope, construct_id)
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
        data_quality.cfn_options.condition = condition
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
        data_quality_schedule.cfn_options.condition = condition
        # The definition has no name attribute to reference, so the order is set by hand.
        data_quality_schedule.add_dependency(data_quality)

        # Our drift job: PSI/KS/chi-square per feature against the baseline in the model artifact.
        # Monitoring jobs take no code input, so the entrypoint fetches the jobs' source bundle itself.
        # Each entrypoint element must stay under 256 characters: the code URI comes as "$1".
        fetch = (
            "import boto3,sys;b,k=sys.argv[1][5:].split('/',1);"
            "boto3.client('s3').download_file(b,k,'code.tar.gz')"
        )
        script = (
            f'set -e;mkdir -p /opt/code;cd /opt/code;python -c "{fetch}" "$1";tar xzf code.tar.gz;'
            f"pip install -q -r requirements.txt;python -m {DRIFT_JOB_MODULE}"
        )
        entrypoint = ["bash", "-c", script, "drift", code_uri]
        drift = sagemaker.CfnMonitoringSchedule(
            self,
            "DriftSchedule",
            monitoring_schedule_name=f"{config.prefix}-drift",
            monitoring_schedule_config=sagemaker.CfnMonitoringSchedule.MonitoringScheduleConfigProperty(
                monitoring_type="DataQuality",
                schedule_config=sagemaker.CfnMonitoringSchedule.ScheduleConfigProperty(
                    schedule_expression=config.monitor_schedule_cron
                ),
                monitoring_job_definition=sagemaker.CfnMonitoringSchedule.MonitoringJobDefinitionProperty(
                    role_arn=role.role_arn,
                    monitoring_app_specification=sagemaker.CfnMonitoringSchedule.MonitoringAppSpecificationProperty(
                        image_uri=job_image, container_entrypoint=entrypoint
                    ),
                    monitoring_inputs=[
                        sagemaker.CfnMonitoringSchedule.MonitoringInputProperty(
                            endpoint_input=sagemaker.CfnMonitoringSchedule.EndpointInputProperty(
                                endpoint_name=endpoint_name, local_path="/opt/ml/processing/input/endpoint"
                            )
                        )
                    ],
                    monitoring_output_config=sagemaker.CfnMonitoringSchedule.MonitoringOutputConfigProperty(
                        kms_key_id=key.key_arn,
                        monitoring_outputs=[
                            sagemaker.CfnMonitoringSchedule.MonitoringOutputProperty(
                                s3_output=sagemaker.CfnMonitoringSchedule.S3OutputProperty(
                                    local_path="/opt/ml/processing/output",
                                    s3_uri=f"{base}reports/drift",
                                    s3_upload_mode="EndOfJob",
                                )
                            )
                        ],
                    ),
                    monitoring_resources=sagemaker.CfnMonitoringSchedule.MonitoringResourcesProperty(
                        cluster_config=sagemaker.CfnMonitoringSchedule.ClusterConfigProperty(
                            instance_count=1,
                            instance_type="ml.m5.large",
                            volume_size_in_gb=20,
                            volume_kms_key_id=key.key_arn,
                        )
                    ),
                    environment={
                        "publish_cloudwatch_metrics": "Enabled",
                        "CLAIMS_RISK_ENDPOINT": endpoint_name,
                        # The serving model, whose artifact carries the baseline statistics.
                        "CLAIMS_RISK_MODEL_URI": f"s3://{bucket_name}/{CHAMPION_MODEL_KEY}",
                    },
                    network_config=sagemaker.CfnMonitoringSchedule.NetworkConfigProperty(
                        enable_inter_container_traffic_encryption=True
                    ),
                    stopping_condition=sagemaker.CfnMonitoringSchedule.StoppingConditionProperty(
                        max_runtime_in_seconds=1800
                    ),
                ),
            ),
        )
        drift.cfn_options.condition = condition


def component_alarms(
    on_call: OnCall, scope: Construct, component: str, dimensions: Mapping[str, str]
) -> list[cloudwatch.Alarm]:
    return [on_call.alarm(scope, d.key, dimensions) for d in ALARMS if d.component == component]
