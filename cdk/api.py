"""The claims API: API Gateway REST API in front of the API Lambda, which calls the SageMaker endpoint."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.bundling import REPO_ROOT, api_bundling
from cdk.config import POWERTOOLS_LAYER_ACCOUNT, POWERTOOLS_LAYER_VERSION, StageConfig
from shared.auth import ROUTE_SCOPES


class ClaimsApi(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, endpoint_name: str
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        powertools = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "Powertools",
            f"arn:{stack.partition}:lambda:{stack.region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
            f"AWSLambdaPowertoolsPythonV3-python312-arm64:{POWERTOOLS_LAYER_VERSION}",
        )
        self.function = lambda_.Function(
            self,
            "Handler",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler="lambdas.api.handler.lambda_handler",
            code=lambda_.Code.from_asset(str(REPO_ROOT), bundling=api_bundling()),
            layers=[powertools],
            memory_size=config.lambda_memory_mb,
            timeout=Duration.seconds(29),  # API Gateway's own limit
            tracing=lambda_.Tracing.ACTIVE,
            log_group=logs.LogGroup(self, "Logs", retention=config.log_retention),
            environment={
                "SAGEMAKER_ENDPOINT_NAME": endpoint_name,
                "POWERTOOLS_SERVICE_NAME": "claims-risk-api",
                "POWERTOOLS_METRICS_NAMESPACE": "ClaimsRisk",
                "LOG_LEVEL": "INFO",
            },
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint"],
                resources=[
                    stack.format_arn(service="sagemaker", resource="endpoint", resource_name=endpoint_name)
                ],
            )
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"claims-risk-{config.stage}",
            deploy_options=apigw.StageOptions(
                stage_name=config.stage,
                tracing_enabled=True,
                throttling_rate_limit=config.throttle_rate_per_s,
                throttling_burst_limit=config.throttle_burst,
            ),
            cloud_watch_role=False,
        )
        integration = apigw.LambdaIntegration(self.function, proxy=True)
        self.api.root.add_resource("health").add_method("GET", integration)
        self.api.root.add_resource("swagger").add_method("GET", integration)  # Swagger UI and OpenAPI
        # Every scoped route of the one route table (shared/auth.py); Cognito scopes join them in the
        # full API stack.
        for method, path in sorted(ROUTE_SCOPES):
            resource = self.api.root
            for part in path.strip("/").split("/"):
                resource = resource.get_resource(part) or resource.add_resource(part)
            resource.add_method(method, integration)
