"""The claims-risk stack. It composes constructs with clear seams; later stacks (endpoint, pipeline,
batch, monitoring) join here."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, CfnParameter, Stack
from constructs import Construct

from cdk.api import ClaimsApi
from cdk.config import StageConfig
from cdk.web import WebPage


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
        )
        api = ClaimsApi(self, "ClaimsApi", config=config, endpoint_name=endpoint_name.value_as_string)
        CfnOutput(self, "ApiUrl", value=api.api.url)
        CfnOutput(self, "ApiFunctionName", value=api.function.function_name)
        web = WebPage(self, "WebPage", api=api.api)
        CfnOutput(self, "WebPageUrl", value=web.url, description="the claims handlers' page (and the API)")
