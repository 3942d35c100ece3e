"""The claims-risk stack: data, API, endpoint, retraining pipeline, drop-folder batch, monitoring (drift
and late-outcome model quality) and the web page, each a construct with a clear seam, configured per
stage from cdk/config.py."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, CfnParameter, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.api import ClaimsApi
from cdk.batch import DropFolderBatch
from cdk.config import StageConfig
from cdk.data import DataLayer
from cdk.endpoint import VARIANT, ModelEndpoint, SageMakerRole
from cdk.images import Images
from cdk.lake import ClaimsLake
from cdk.monitoring import ModelMonitoring, OnCall
from cdk.pipeline import RetrainingPipeline
from cdk.policy_findings import acknowledge_findings, skip_checkov_findings
from cdk.quality import ModelQualityMonitoring
from cdk.web import WebPage
from shared.alarms import (
    PR_AUC_METRIC,
    PRECISION_METRIC,
    QUALITY_DROP_METRIC,
    QUALITY_NAMESPACE,
    RECALL_METRIC,
    ROC_AUC_METRIC,
    alarm,
)
from step_functions.state_machine import MODEL_CARD_KEY


class ClaimsRiskStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        endpoint_name = CfnParameter(
            self,
            "EndpointName",
            type="String",
            default="claims-risk",
            description="Name of the SageMaker real-time endpoint that serves the claims risk model",
            allowed_pattern="^[a-zA-Z0-9](-*[a-zA-Z0-9])*$",
        ).value_as_string
        # Synthesis-time choices (cdk.json or -c): a prebuilt project image instead of building one,
        # and Model Monitor's schedule for accounts that have Model Monitor (off by default).
        prebuilt_image = str(self.node.try_get_context("image_uri") or "") or None
        model_monitor = str(self.node.try_get_context("model_monitor") or "").lower() in {"1", "true", "yes"}
        data = DataLayer(self, "Data", config=config)
        on_call = OnCall(self, "OnCall", config=config, key=data.key)
        images = Images(self, "Images", prebuilt_uri=prebuilt_image)
        monitor_image = images.monitor if model_monitor else None
        sagemaker_role = SageMakerRole(self, "SageMaker", bucket=data.bucket, key=data.key).role
        # The claims lake the jobs write and query, as that role (Glue database, Athena workgroup).
        lake = ClaimsLake(
            self, "Lake", config=config, bucket=data.bucket, key=data.key, job_role=sagemaker_role
        )
        endpoint = ModelEndpoint(
            self,
            "Endpoint",
            config=config,
            endpoint_name=endpoint_name,
            on_call=on_call,
            model_monitor=model_monitor,
        )
        pipeline = RetrainingPipeline(
            self,
            "Retraining",
            config=config,
            key=data.key,
            bucket=data.bucket,
            sagemaker_role=sagemaker_role,
            topic=on_call.topic,
            endpoint_name=endpoint_name,
            guardrails=endpoint.guardrails,
            image=images.project,
            monitor_image=monitor_image,
        )
        api = ClaimsApi(
            self,
            "ClaimsApi",
            config=config,
            key=data.key,
            endpoint_name=endpoint_name,
            environment={
                "CLAIMS_RISK_STATE_MACHINE_ARN": pipeline.state_machine.state_machine_arn,
                "CLAIMS_RISK_MODEL_CARD_S3": f"s3://{data.bucket.bucket_name}/{MODEL_CARD_KEY}",
            },
        )
        pipeline.state_machine.grant_start_execution(api.function)
        api.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[data.bucket.arn_for_objects(MODEL_CARD_KEY)]
            )
        )
        data.key.grant(api.function, "kms:Decrypt")
        batch = DropFolderBatch(
            self,
            "Batch",
            config=config,
            key=data.key,
            bucket=data.bucket,
            endpoint_name=endpoint_name,
            topic=on_call.topic,
            image=images.project,  # the lake job's image and role, given rather than looked up
            job_role=sagemaker_role,
        )
        monitoring = ModelMonitoring(
            self,
            "Monitoring",
            config=config,
            key=data.key,
            bucket=data.bucket,
            role=sagemaker_role,
            endpoint_name=endpoint_name,
            image=images.project,
            monitor_image=monitor_image,
        )
        # Late outcomes: a labels file under outcomes/incoming/ starts the quality job.
        quality = ModelQualityMonitoring(
            self,
            "Quality",
            config=config,
            key=data.key,
            bucket=data.bucket,
            job_role=sagemaker_role,
            endpoint_name=endpoint_name,
            image=images.project,
            topic=on_call.topic,
        )
        # Alarms: drift, model quality, the API, each function, the pipeline and batch jobs, all to on-call.
        for key in ("feature-drift", "prediction-drift", "missing-values", "model-quality"):
            on_call.alarm(self, key, {"Endpoint": endpoint_name})
        on_call.alarm(self, "quality-job-failed", {"RuleName": quality.failures.rule_name})
        api_dimensions = {"ApiName": api.api.rest_api_name, "Stage": config.stage}
        for key in ("api-5xx", "api-latency", "api-throttled"):
            on_call.alarm(self, key, api_dimensions)
        functions = (
            ("api", api.function),
            ("batch", batch.function),
            ("tasks", pipeline.tasks),
            ("drift", monitoring.trigger),
            ("quality", quality.trigger),
        )
        for name, function in functions:
            for key in ("lambda-errors", "lambda-throttles"):
                on_call.alarm(function, key, {"FunctionName": function.function_name}, suffix=name)
        on_call.alarm(self, "pipeline-failed", {"StateMachineArn": pipeline.state_machine.state_machine_arn})
        on_call.alarm(self, "batch-failed", {"RuleName": batch.failures.rule_name})
        web = WebPage(
            self,
            "WebPage",
            api=api.api,
            api_key_value=api.web_page_key_value,
            key=data.key,
            access_logs=data.access_logs,
        )
        people = api.add_people_client(web.url)
        self._dashboard(config, on_call, endpoint_name, api_dimensions, pipeline, batch)

        acknowledge_findings(self, config.stage)
        skip_checkov_findings(self)

        CfnOutput(self, "ApiUrl", value=api.api.url)
        CfnOutput(self, "ApiFunctionName", value=api.function.function_name)
        CfnOutput(self, "WebPageUrl", value=web.url, description="the claims handlers' page (and the API)")
        CfnOutput(
            self, "DataBucket", value=data.bucket.bucket_name, description="drop claims files in incoming/"
        )
        CfnOutput(self, "StateMachineArn", value=pipeline.state_machine.state_machine_arn)
        CfnOutput(self, "OnCallTopicArn", value=on_call.topic.topic_arn)
        CfnOutput(self, "LakeDatabase", value=lake.database_name, description="the lake's Glue database")
        CfnOutput(self, "LakeWorkgroup", value=lake.workgroup_name, description="Athena workgroup for it")
        CfnOutput(self, "UserPoolId", value=api.user_pool.user_pool_id)
        CfnOutput(
            self, "TokenUrl", value=api.token_url, description="Cognito's token endpoint (both clients)"
        )
        CfnOutput(
            self,
            "AuthorizeUrl",
            value=api.authorize_url,
            description="the hosted login the web page sends to",
        )
        CfnOutput(self, "ClaimsSystemClientId", value=api.machine_client.user_pool_client_id)
        CfnOutput(
            self,
            "ClaimsHandlersClientId",
            value=people.user_pool_client_id,
            description="the web page's sign-in client (authorization code with PKCE)",
        )
        CfnOutput(self, "ClaimsSystemApiKeyId", value=api.claims_system_key.key_id)

    def _dashboard(
        self,
        config: StageConfig,
        on_call: OnCall,
        endpoint_name: str,
        api_dimensions: dict[str, str],
        pipeline: RetrainingPipeline,
        batch: DropFolderBatch,
    ) -> None:
        def metric(key: str, dimensions: dict[str, str], label: str) -> cloudwatch.Metric:
            return on_call.metric(alarm(key), dimensions).with_(label=label, period=Duration.minutes(5))

        endpoint_dimensions = {"EndpointName": endpoint_name, "VariantName": VARIANT}
        drift = {"Endpoint": endpoint_name}
        board = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=config.prefix)
        board.add_widgets(
            cloudwatch.GraphWidget(
                title="API: errors and latency",
                left=[
                    metric("api-5xx", api_dimensions, "5xx"),
                    metric("api-throttled", api_dimensions, "4xx rate"),
                ],
                right=[metric("api-latency", api_dimensions, "p95 latency (ms)")],
            ),
            cloudwatch.GraphWidget(
                title="Endpoint: errors and model latency",
                left=[metric("endpoint-5xx", endpoint_dimensions, "invocation 5xx")],
                right=[metric("endpoint-latency", endpoint_dimensions, "p95 model latency (µs)")],
            ),
        )
        board.add_widgets(
            cloudwatch.GraphWidget(
                title="Drift (PSI) and missing values",
                left=[
                    metric("feature-drift", drift, "max feature PSI"),
                    metric("prediction-drift", drift, "prediction PSI"),
                    metric("missing-values", drift, "missing-rate increase"),
                ],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=alarm("feature-drift").threshold, label="feature drift alarm"
                    )
                ],
            ),
            cloudwatch.GraphWidget(
                title="Retraining and batch",
                left=[
                    pipeline.state_machine.metric_succeeded(label="runs succeeded"),
                    pipeline.state_machine.metric_failed(label="runs failed"),
                    batch.function.metric_invocations(label="files dropped"),
                    metric("batch-failed", {"RuleName": batch.failures.rule_name}, "batch jobs failed"),
                ],
            ),
        )
        quality = {"Endpoint": endpoint_name}

        def figure(name: str, label: str) -> cloudwatch.Metric:
            # One datum per labels file: the latest in each day, as the run published it.
            return cloudwatch.Metric(
                namespace=QUALITY_NAMESPACE,
                metric_name=name,
                dimensions_map=quality,
                statistic="Maximum",
                period=Duration.days(1),
                label=label,
            )

        board.add_widgets(
            cloudwatch.GraphWidget(
                title="Model quality on late outcomes (newest judged day, per labels file)",
                left=[
                    figure(RECALL_METRIC, "recall at the threshold"),
                    figure(PRECISION_METRIC, "precision at the threshold"),
                    figure(ROC_AUC_METRIC, "ROC-AUC"),
                    figure(PR_AUC_METRIC, "PR-AUC"),
                ],
                right=[figure(QUALITY_DROP_METRIC, "largest drop below the test figures")],
                right_annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=alarm("model-quality").threshold, label="model-quality alarm"
                    )
                ],
                width=24,
            )
        )
        # Every on-call alarm, the drop folder's lake job's too (cdk/batch.py builds that one itself).
        lake_alarm = batch.node.try_find_child("LakeJobFailedAlarm")
        if not isinstance(lake_alarm, cloudwatch.Alarm):
            raise ValueError("the drop folder's batch-failed-lake alarm is missing from the dashboard")
        board.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="Alarms", alarms=[*on_call.alarms.values(), lake_alarm], width=24
            ),
        )
