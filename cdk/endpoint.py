"""The real-time SageMaker endpoint: the registry's model, data capture, autoscaling and guardrails.

CloudFormation creates the endpoint once a model package exists (parameter ``ModelPackageArn``);
after that the retraining state machine replaces its config with the same guardrails: blue/green,
canary traffic first, rolled back automatically by the endpoint's error and latency alarms.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, CfnCondition, CfnParameter, Fn, Stack
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from cdk.config import StageConfig
from cdk.data import CAPTURE_PREFIX
from cdk.monitoring import OnCall
from shared.alarms import alarm
from step_functions.state_machine import DeploymentGuardrails

VARIANT = "AllTraffic"
ROLLBACK_ALARMS = ("endpoint-5xx", "endpoint-latency")  # keys of shared.alarms
# What a role needs of the customer-managed key to read and write encrypted data, and no more.
KEY_USE = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey")


def guardrails(config: StageConfig) -> DeploymentGuardrails:
    """The one guardrail setting, for CloudFormation's endpoint and the pipeline's UpdateEndpoint."""
    return DeploymentGuardrails(
        canary_percent=config.canary_percent,
        canary_wait_s=config.canary_wait_s,
        baking_s=config.baking_s,
        rollback_alarms=tuple(alarm(k).alarm_name(config.prefix) for k in ROLLBACK_ALARMS),
        instance_type=config.endpoint_instance_type,
        initial_instance_count=config.endpoint_min_instances,
        capture_percent=config.capture_percent,
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
        on_call: OnCall,
    ) -> None:
        super().__init__(scope, construct_id)
        self.guardrails = guardrails(config)
        package = CfnParameter(
            scope,
            "ModelPackageArn",
            type="String",
            default="",
            description="An approved model package version to serve (empty: no endpoint until the "
            "first retraining run deploys one)",
        )
        self.has_model = CfnCondition(
            scope,
            "HasModelPackage",
            expression=Fn.condition_not(Fn.condition_equals(package.value_as_string, "")),
        )
        # The rollback alarms exist before the endpoint that names them.
        dimensions = {"EndpointName": endpoint_name, "VariantName": VARIANT}
        self.alarms = [on_call.alarm(self, k, dimensions) for k in ROLLBACK_ALARMS]
        model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=role.role_arn,
            containers=[
                sagemaker.CfnModel.ContainerDefinitionProperty(model_package_name=package.value_as_string)
            ],
            enable_network_isolation=False,  # the container installs the requirements at start
        )
        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            kms_key_id=key.key_arn,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=model.attr_model_name,
                    instance_type=config.endpoint_instance_type,
                    initial_instance_count=config.endpoint_min_instances,
                    initial_variant_weight=1.0,
                )
            ],
            data_capture_config=sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
                enable_capture=True,
                initial_sampling_percentage=config.capture_percent,
                destination_s3_uri=f"s3://{bucket.bucket_name}/{CAPTURE_PREFIX}",
                kms_key_id=key.key_arn,
                capture_options=[
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Input"),
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Output"),
                ],
                capture_content_type_header=sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
                    json_content_types=["application/json"]
                ),
            ),
        )
        deployment = self.guardrails.deployment_config()
        blue_green = deployment["BlueGreenUpdatePolicy"]
        routing = blue_green["TrafficRoutingConfiguration"]
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=endpoint_config.attr_endpoint_config_name,
            deployment_config=sagemaker.CfnEndpoint.DeploymentConfigProperty(
                blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                    traffic_routing_configuration=sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
                        type=routing["Type"],
                        canary_size=sagemaker.CfnEndpoint.CapacitySizeProperty(
                            type=routing["CanarySize"]["Type"], value=routing["CanarySize"]["Value"]
                        ),
                        wait_interval_in_seconds=routing["WaitIntervalInSeconds"],
                    ),
                    termination_wait_in_seconds=blue_green["TerminationWaitInSeconds"],
                    maximum_execution_timeout_in_seconds=blue_green["MaximumExecutionTimeoutInSeconds"],
                ),
                auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
                    alarms=[
                        sagemaker.CfnEndpoint.AlarmProperty(alarm_name=n)
                        for n in self.guardrails.rollback_alarms
                    ]
                ),
            ),
        )
        for created in self.alarms:  # named in the config, so ordered by hand
            self.endpoint.node.add_dependency(created)
        scalable = autoscaling.CfnScalableTarget(
            self,
            "Scaling",
            service_namespace="sagemaker",
            resource_id=f"endpoint/{endpoint_name}/variant/{VARIANT}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=config.endpoint_min_instances,
            max_capacity=config.endpoint_max_instances,
        )
        scalable.add_dependency(self.endpoint)
        policy = autoscaling.CfnScalingPolicy(
            self,
            "InvocationsPerInstance",
            policy_name=f"{config.prefix}-invocations-per-instance",
            policy_type="TargetTrackingScaling",
            scaling_target_id=scalable.ref,
            target_tracking_scaling_policy_configuration=autoscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=config.invocations_per_instance_target,
                predefined_metric_specification=autoscaling.CfnScalingPolicy.PredefinedMetricSpecificationProperty(
                    predefined_metric_type="SageMakerVariantInvocationsPerInstance"
                ),
                scale_in_cooldown=600,
                scale_out_cooldown=120,
            ),
        )
        for resource in (model, endpoint_config, self.endpoint, scalable, policy):
            resource.cfn_options.condition = self.has_model
