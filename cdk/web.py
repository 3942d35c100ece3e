"""The claims handlers' web page in AWS: static files in a private bucket, served by CloudFront.

The same distribution forwards the API's paths to API Gateway, so the page and the API share one
origin: no CORS to open, and the page's ``config.json`` just says "same origin". CloudFront never
caches those paths, and forwards every viewer header except Host (API Gateway answers only to its
own host name); with caching off, that includes ``Authorization``. It adds the web page's own
usage-plan key as ``x-api-key``, so a claims handler signs in with a token and never needs a key,
and a CloudFront Function writes the viewer's address into a header of its own, which the API's
WAF rate rule for the page counts on (the address WAF sees is CloudFront's).

Claims handlers sign in with Cognito's hosted login (authorization code with PKCE): ``config.json``,
written beside the page at deployment, names the login and token URLs, the people's app client and
the page's own URL as the redirect. Locally there is no such file and the page takes a pasted token.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3_deployment
from constructs import Construct

from cdk.api import VIEWER_ADDRESS_HEADER, ClaimsApi
from cdk.bundling import REPO_ROOT

WEB_SOURCE = REPO_ROOT / "local" / "web"
# The API's paths on the page's origin (the web page calls these, and Swagger UI its document).
API_PATHS = ("/api/*", "/health", "/swagger*")
# CloudFront forwards X-Forwarded-For with the viewer's own value first and its address appended, and
# WAF reads the first address, which the viewer chose. This viewer-request function sets a header to
# the address CloudFront saw, replacing any value sent, so the page's rate rule counts real viewers.
# Adapted from https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/example-function-add-true-client-ip-header.html
VIEWER_ADDRESS_FUNCTION = f"""async function handler(event) {{
  var request = event.request;
  request.headers['{VIEWER_ADDRESS_HEADER}'] = {{value: event.viewer.ip}};
  return request;
}}
"""


def page_config(sign_in: dict[str, Any] | None) -> dict[str, Any]:
    """config.json: the API is on the page's origin; ``auth`` (None locally) says how to sign in."""
    return {"api_base": "", "auth": sign_in}


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
        viewer_address = cloudfront.Function(
            self,
            "ViewerAddress",
            # Named explicitly: CDK's generated name would embed the (unresolved) region.
            function_name=f"{Stack.of(self).stack_name}-viewer-address",
            comment="the viewer's address, for the API's WAF rate rule",
            runtime=cloudfront.FunctionRuntime.JS_2_0,
            code=cloudfront.FunctionCode.from_inline(VIEWER_ADDRESS_FUNCTION),
        )
        api_behavior = cloudfront.BehaviorOptions(
            origin=api_origin,
            viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
            allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
            cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
            # All viewer headers but Host, the function's header included.
            origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
            function_associations=[
                cloudfront.FunctionAssociation(
                    function=viewer_address, event_type=cloudfront.FunctionEventType.VIEWER_REQUEST
                )
            ],
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
        # The API's construct owns the user pool; it makes the people's app client for this page (the
        # stack's own add_people_client call then gets the same client).
        owner = api.node.scope
        self.sign_in = owner.sign_in_config(self.url) if isinstance(owner, ClaimsApi) else None
        s3_deployment.BucketDeployment(
            self,
            "Deploy",
            destination_bucket=self.bucket,
            sources=[
                s3_deployment.Source.asset(str(WEB_SOURCE)),
                # The page reads this at start: an empty base means the API is on the page's origin.
                s3_deployment.Source.json_data("config.json", page_config(self.sign_in)),
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
