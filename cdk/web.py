"""The claims handlers' web page in AWS: static files in a private bucket, served by CloudFront.

The same distribution forwards the API's paths to API Gateway, so the page and the API share one
origin: no CORS to open, and the page's ``config.json`` just says "same origin". CloudFront never
caches those paths, and forwards every viewer header except Host (API Gateway answers only to its
own host name); with caching off, that includes ``Authorization``. It adds the web page's own
usage-plan key as ``x-api-key``, so a claims handler signs in with a token and never needs a key.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3_deployment
from constructs import Construct

from cdk.bundling import REPO_ROOT

WEB_SOURCE = REPO_ROOT / "local" / "web"
# The API's paths on the page's origin (the web page calls these, and Swagger UI its document).
API_PATHS = ("/api/*", "/health", "/swagger*")


class WebPage(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api: apigw.RestApi,
        api_key_value: str,
        key: kms.IKey,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Files",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,  # CloudFront's origin access reads SSE-S3 freely
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.DESTROY,  # only the page's own files: they are redeployed
            auto_delete_objects=True,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="web-files/",
        )
        # The page's usage-plan key is added here, at the edge; it replaces any x-api-key a viewer sends.
        api_origin = origins.RestApiOrigin(api, custom_headers={"x-api-key": api_key_value})
        api_behavior = cloudfront.BehaviorOptions(
            origin=api_origin,
            viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
            allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
            cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
            origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment="claims-risk web page and API",
            default_root_object="index.html",
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=cloudfront.ResponseHeadersPolicy.SECURITY_HEADERS,
            ),
            additional_behaviors=dict.fromkeys(API_PATHS, api_behavior),
            enable_logging=True,
            log_bucket=access_logs,
            log_file_prefix="cloudfront/",
        )
        s3_deployment.BucketDeployment(
            self,
            "Deploy",
            destination_bucket=self.bucket,
            sources=[
                s3_deployment.Source.asset(str(WEB_SOURCE)),
                # The page reads this at start: an empty base means the API is on the page's origin.
                s3_deployment.Source.json_data("config.json", {"api_base": ""}),
            ],
            distribution=self.distribution,  # new files are served at once, not after the cache TTL
            distribution_paths=["/*"],
            memory_limit=256,
            log_group=logs.LogGroup(
                self, "DeployLogs", encryption_key=key, retention=logs.RetentionDays.ONE_MONTH
            ),
            cache_control=[s3_deployment.CacheControl.max_age(Duration.minutes(5))],
        )

    @property
    def url(self) -> str:
        return f"https://{self.distribution.distribution_domain_name}/"
