"""The claims API: a REST API Gateway in front of the API Lambda, which calls the SageMaker endpoint.

Who may call: a Cognito user pool issues tokens with the API's scopes (one definition: shared/auth.py),
checked by the gateway's authorizer on every scoped route and again by the handler. Machine clients
(the claims system) use the client-credentials grant and present their usage plan's API key too,
which throttles each client to the brief's 100 requests a minute. In front: WAF with AWS's common
rule set (its 8 KB body rule only counts: batches are larger), known bad inputs, a body-size rule at
the size the API can really take, and rate rules per caller address (the viewer's own address for
the web page's calls through CloudFront). Gateway errors answer in the API's one error shape, with
the request id as the correlation id.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aws_cdk import Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from cdk.config import StageConfig
from cdk.functions import python_function
from shared import auth
from shared.request_limits import MAX_API_BODY_BYTES, too_large_body
from shared.schema import MAX_BATCH_CLAIMS, Claim

CORRELATION_HEADER = "X-Correlation-Id"
# The API's error shape (lambdas/api/handler.py error_response), for errors the gateway answers itself.
_GATEWAY_ERROR = json.dumps(
    {
        "error": {"code": "CODE", "message": "$context.error.message", "details": "DETAILS"},
        "correlation_id": "$context.requestId",
    }
)
GATEWAY_ERRORS = {
    apigw.ResponseType.UNAUTHORIZED: ("unauthorized", None),
    apigw.ResponseType.ACCESS_DENIED: ("forbidden", None),
    apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN: ("not_found", None),
    apigw.ResponseType.INVALID_API_KEY: ("forbidden", None),
    apigw.ResponseType.THROTTLED: ("throttled", None),
    apigw.ResponseType.QUOTA_EXCEEDED: ("quota_exceeded", None),
    apigw.ResponseType.BAD_REQUEST_BODY: ("invalid_request", "$context.error.validationErrorString"),
    apigw.ResponseType.WAF_FILTERED: ("blocked", None),
    apigw.ResponseType.DEFAULT_4_XX: ("bad_request", None),
    apigw.ResponseType.DEFAULT_5_XX: ("gateway_error", None),
}


def _error_template(code: str, details: str | None) -> str:
    body = _GATEWAY_ERROR.replace("CODE", code)
    return body.replace('"DETAILS"', f'["{details}"]' if details else "[]")


def request_models() -> dict[str, apigw.JsonSchema]:
    """Coarse JSON Schema (draft 4) checks at the gateway; the handler's pydantic models decide."""
    return {
        "Claim": apigw.JsonSchema(
            schema=apigw.JsonSchemaVersion.DRAFT4,
            type=apigw.JsonSchemaType.OBJECT,
            required=list(Claim.model_json_schema()["required"]),
        ),
        "ClaimBatch": apigw.JsonSchema(
            schema=apigw.JsonSchemaVersion.DRAFT4,
            type=apigw.JsonSchemaType.OBJECT,
            required=["claims"],
            properties={
                "claims": apigw.JsonSchema(
                    type=apigw.JsonSchemaType.ARRAY, min_items=1, max_items=MAX_BATCH_CLAIMS
                )
            },
        ),
        "RetrainRequest": apigw.JsonSchema(
            schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT
        ),
    }


ROUTE_MODELS = {
    ("POST", "/api/v1/predict"): "Claim",
    ("POST", "/api/v1/predict/batch"): "ClaimBatch",
    ("POST", "/api/v1/models/retrain"): "RetrainRequest",
}

# The largest body the API can take (shared/request_limits.py says why: Lambda's 6 MB, not API
# Gateway's 10 MB); the local API refuses larger bodies with the same 413.
MAX_BODY_BYTES: Final = MAX_API_BODY_BYTES
# The managed common rule set's SizeRestrictions_BODY blocks bodies over 8 KB; a batch of about 30
# claims is larger. It is set to count (still visible in the metrics and logs), and the rule below
# blocks at MAX_BODY_BYTES instead.
# What a web ACL rule answers instead of WAF's plain 403: (status, body in the API's error shape).
# https://docs.aws.amazon.com/waf/latest/developerguide/customizing-the-response-for-blocked-requests.html
FIREWALL_ANSWERS: Final = {
    "payload-too-large": (413, too_large_body(MAX_BODY_BYTES).decode()),
}
COMMON_RULE_SET = "AWSManagedRulesCommonRuleSet"
COUNTED_COMMON_RULES = ("SizeRestrictions_BODY",)
# The web page's calls come through CloudFront, where WAF sees an edge address shared by many viewers.
# A CloudFront Function (cdk/web.py) writes the viewer's own address into this header, replacing any
# value the viewer sent; the web-page rate rule keys on it.
VIEWER_ADDRESS_HEADER = "x-claims-risk-viewer-ip"


def integer_above(limit: int) -> str:
    """A regular expression matching exactly the decimal integers greater than ``limit``.

    Written for WAF's PCRE subset (no capturing groups, no backreferences): see
    https://docs.aws.amazon.com/waf/latest/developerguide/waf-regex-pattern-support.html
    """
    digits = str(limit)
    # More digits than the limit (leading zeros aside) ...
    branches = [f"[1-9][0-9]{{{len(digits)},}}"]
    # ... or as many, equal up to some position and larger there.
    for i, digit in enumerate(digits):
        if digit != "9":
            rest = len(digits) - i - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            branches.append(f"{digits[:i]}[{int(digit) + 1}-9]{tail}")
    return f"^0*(?:{'|'.join(branches)})$"


class ClaimsApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        endpoint_name: str,
        environment: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.function = python_function(
            self,
            "Handler",
            handler_module="lambdas.api.handler",
            service="claims-risk-api",
            config=config,
            key=key,
            environment={"SAGEMAKER_ENDPOINT_NAME": endpoint_name, **environment},
            timeout=Duration.seconds(29),  # API Gateway's own limit
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint"],
                resources=[
                    stack.format_arn(service="sagemaker", resource="endpoint", resource_name=endpoint_name)
                ],
            )
        )
        self.user_pool, self.machine_client = self._identity(config)
        self.people_client: cognito.UserPoolClient | None = None
        self._people_callback_url: str | None = None
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=config.log_retention,
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=config.prefix,
            description="claims-risk: score insurance claims, read the model card, start retraining",
            deploy_options=apigw.StageOptions(
                stage_name=config.stage,
                tracing_enabled=True,
                throttling_rate_limit=config.throttle_rate_per_s,
                throttling_burst_limit=config.throttle_burst,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                metrics_enabled=True,
            ),
            # Access logs need the account's API Gateway CloudWatch role (AWS::ApiGateway::Account): in
            # an account and region where nobody set it, the stage fails to create. CDK makes the role
            # (AmazonAPIGatewayPushToCloudWatchLogs) and the account setting, and the stage waits for
            # it. The setting is one per account and region, shared by every REST API there: it is
            # kept when this stack goes, so other APIs keep logging. See
            # https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-apigateway-account.html
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
        )
        self.stage = self.api.deployment_stage
        for response_type, (code, details) in GATEWAY_ERRORS.items():
            self.api.add_gateway_response(
                f"Error{code.title().replace('_', '')}{response_type.response_type}",
                type=response_type,
                templates={"application/json": _error_template(code, details)},
                response_headers={CORRELATION_HEADER: "context.requestId"},
            )
        self._routes()
        self._usage_plans(config)
        self.web_acl = self._firewall(config, key)

    def _identity(self, config: StageConfig) -> tuple[cognito.UserPool, cognito.UserPoolClient]:
        pool = cognito.UserPool(
            self,
            "Users",
            user_pool_name=config.prefix,
            self_sign_up_enabled=False,  # claims handlers and operators are invited
            sign_in_aliases=cognito.SignInAliases(email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=14,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            deletion_protection=config.removal_policy.name == "RETAIN",
            removal_policy=config.removal_policy,
        )
        server = pool.add_resource_server(
            "Scopes",
            identifier=auth.SCOPE_PREFIX,
            scopes=[
                cognito.ResourceServerScope(scope_name=s.split("/", 1)[1], scope_description=f"may {s}")
                for s in auth.ALL_SCOPES
            ],
        )
        self.scopes = {
            s: cognito.OAuthScope.resource_server(
                server, cognito.ResourceServerScope(scope_name=s.split("/", 1)[1], scope_description=s)
            )
            for s in auth.ALL_SCOPES
        }
        stack = Stack.of(self)
        self.domain = pool.add_domain(
            "Domain",
            cognito_domain=cognito.CognitoDomainOptions(domain_prefix=f"{config.prefix}-{stack.account}"),
        )
        machine = pool.add_client(
            "ClaimsSystem",
            user_pool_client_name="claims-system",
            generate_secret=True,
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(client_credentials=True),
                scopes=[self.scopes[auth.PREDICT], self.scopes[auth.READ_MODELS]],
            ),
            access_token_validity=Duration.hours(1),
            prevent_user_existence_errors=True,
        )
        self.authorizer = apigw.CognitoUserPoolsAuthorizer(self, "Authorizer", cognito_user_pools=[pool])
        return pool, machine

    def add_people_client(self, callback_url: str) -> cognito.UserPoolClient:
        """Claims handlers and operators sign in (authorization code with PKCE) and get every scope.

        The web page's construct asks for it first, to write the client into the page's config.json;
        asked again for the same page, the one client is returned.
        """
        if self.people_client is not None:
            if callback_url != self._people_callback_url:
                raise ValueError("the people's app client already exists for another callback URL")
            return self.people_client
        self._people_callback_url = callback_url
        # A public client (no secret): the page proves itself with PKCE (S256) at the token endpoint.
        self.people_client = self.user_pool.add_client(
            "People",
            user_pool_client_name="claims-handlers",
            generate_secret=False,
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, *self.scopes.values()],
                callback_urls=[callback_url],
                logout_urls=[callback_url],
            ),
            access_token_validity=Duration.hours(1),
            prevent_user_existence_errors=True,
        )
        return self.people_client

    @property
    def people_scopes(self) -> list[str]:
        return ["openid", "email", *auth.ALL_SCOPES]

    @property
    def authorize_url(self) -> str:
        """Cognito's hosted login: https://docs.aws.amazon.com/cognito/latest/developerguide/authorization-endpoint.html"""
        return f"{self.domain.base_url()}/oauth2/authorize"

    @property
    def token_url(self) -> str:
        """https://docs.aws.amazon.com/cognito/latest/developerguide/token-endpoint.html"""
        return f"{self.domain.base_url()}/oauth2/token"

    def sign_in_config(self, page_url: str) -> dict[str, Any]:
        """What the web page needs to sign a claims handler in with the hosted login (config.json's auth)."""
        client = self.add_people_client(page_url)
        return {
            "authorize_url": self.authorize_url,
            "token_url": self.token_url,
            "client_id": client.user_pool_client_id,
            "redirect_uri": page_url,
            "scopes": self.people_scopes,
        }

    def _routes(self) -> None:
        integration = apigw.LambdaIntegration(self.function, proxy=True)
        validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        models = {
            name: self.api.add_model(name, content_type="application/json", model_name=name, schema=schema)
            for name, schema in request_models().items()
        }
        # Public: the load balancer's health check and the API's own documentation.
        self.api.root.add_resource("health").add_method("GET", integration)
        self.api.root.add_resource("swagger").add_method("GET", integration)
        self.methods: dict[tuple[str, str], apigw.Method] = {}
        for route in sorted(auth.ROUTE_SCOPES):
            method, path = route
            resource = self.api.root
            for part in path.strip("/").split("/"):
                resource = resource.get_resource(part) or resource.add_resource(part)
            model = ROUTE_MODELS.get(route)
            self.methods[route] = resource.add_method(
                method,
                integration,
                authorizer=self.authorizer,
                authorization_type=apigw.AuthorizationType.COGNITO,
                authorization_scopes=[auth.ROUTE_SCOPES[route]],
                api_key_required=route not in auth.USER_TOKEN_ONLY,
                request_validator=validator if model else None,
                request_models={"application/json": models[model]} if model else None,
            )

    def _usage_plans(self, config: StageConfig) -> None:
        """Each machine client is throttled on its own API key: the brief's 100 requests a minute."""
        self.usage_plan = self.api.add_usage_plan(
            "MachineClients",
            name=f"{config.prefix}-machine-clients",
            description=f"{config.client_requests_per_minute} requests a minute per client",
            throttle=apigw.ThrottleSettings(
                rate_limit=max(1, round(config.client_requests_per_minute / 60)),
                burst_limit=config.client_requests_per_minute,
            ),
            quota=apigw.QuotaSettings(limit=config.client_daily_quota, period=apigw.Period.DAY),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
        )
        # The web page's own key, shared by the claims handlers who sign in there: CloudFront adds it
        # to the page's API calls, so browsers never hold it. Its value is the stack's id (unique,
        # known only once deployed); the key meters and throttles, Cognito decides who may call.
        self.web_page_key_value = Fn.select(2, Fn.split("/", Stack.of(self).stack_id))
        web_plan = self.api.add_usage_plan(
            "WebPage",
            name=f"{config.prefix}-web-page",
            description="the claims handlers' web page, all of them together",
            throttle=apigw.ThrottleSettings(
                rate_limit=config.web_page_requests_per_s, burst_limit=2 * config.web_page_requests_per_s
            ),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
        )
        web_plan.add_api_key(
            self.api.add_api_key(
                "WebPageKey", api_key_name=f"{config.prefix}-web-page", value=self.web_page_key_value
            )
        )
        self.claims_system_key = self.api.add_api_key(
            "ClaimsSystemKey",
            api_key_name=f"{config.prefix}-claims-system",
            description="the claims system's key (aws apigateway get-api-key --include-value)",
        )
        self.usage_plan.add_api_key(self.claims_system_key)

    def _firewall(self, config: StageConfig, key: kms.IKey) -> wafv2.CfnWebACL:
        def visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
            )

        def managed(name: str, priority: int, counted: tuple[str, ...] = ()) -> wafv2.CfnWebACL.RuleProperty:
            return wafv2.CfnWebACL.RuleProperty(
                name=name,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=name,
                        rule_action_overrides=[
                            wafv2.CfnWebACL.RuleActionOverrideProperty(
                                name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                            )
                            for rule in counted
                        ]
                        or None,
                    )
                ),
                visibility_config=visibility(name),
            )

        def block(
            name: str, priority: int, answer: str | None = None, **statement: Any
        ) -> wafv2.CfnWebACL.RuleProperty:
            """``answer``: a key of FIREWALL_ANSWERS, answered instead of WAF's plain 403."""
            action: Any = {}
            if answer is not None:
                status, _ = FIREWALL_ANSWERS[answer]
                action = wafv2.CfnWebACL.BlockActionProperty(
                    custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                        response_code=status, custom_response_body_key=answer
                    )
                )
            return wafv2.CfnWebACL.RuleProperty(
                name=name,
                priority=priority,
                action=wafv2.CfnWebACL.RuleActionProperty(block=action),
                statement=wafv2.CfnWebACL.StatementProperty(**statement),
                visibility_config=visibility(name),
            )

        def header(name: str) -> wafv2.CfnWebACL.FieldToMatchProperty:
            return wafv2.CfnWebACL.FieldToMatchProperty(single_header={"Name": name})

        as_sent = [wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")]
        # Calls through CloudFront carry the web page's key, which CloudFront adds (cdk/web.py).
        via_web_page = wafv2.CfnWebACL.StatementProperty(
            byte_match_statement=wafv2.CfnWebACL.ByteMatchStatementProperty(
                field_to_match=header("x-api-key"),
                positional_constraint="EXACTLY",
                search_string=self.web_page_key_value,
                text_transformations=as_sent,
            )
        )
        acl = wafv2.CfnWebACL(
            self,
            "Firewall",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=visibility(f"{config.prefix}-api"),
            custom_response_bodies={
                key: wafv2.CfnWebACL.CustomResponseBodyProperty(content=body, content_type="APPLICATION_JSON")
                for key, (_, body) in FIREWALL_ANSWERS.items()
            },
            rules=[
                # Machine clients call the API directly: their own address is the request's.
                block(
                    "rate-per-address",
                    0,
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                        limit=config.waf_requests_per_5_min_per_ip,
                        aggregate_key_type="IP",
                        scope_down_statement=wafv2.CfnWebACL.StatementProperty(
                            not_statement=wafv2.CfnWebACL.NotStatementProperty(statement=via_web_page)
                        ),
                    ),
                ),
                # The web page's calls come from CloudFront's edge addresses: each viewer is counted on
                # the address CloudFront saw, which the viewer cannot set (see VIEWER_ADDRESS_HEADER).
                # A request without a valid address there matches (FallbackBehavior MATCH); one without
                # the header is not counted by this rule, as ForwardedIPConfig documents:
                # https://docs.aws.amazon.com/waf/latest/APIReference/API_ForwardedIPConfig.html
                block(
                    "rate-per-viewer",
                    1,
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                        limit=config.waf_requests_per_5_min_per_ip,
                        aggregate_key_type="FORWARDED_IP",
                        forwarded_ip_config=wafv2.CfnWebACL.ForwardedIPConfigurationProperty(
                            header_name=VIEWER_ADDRESS_HEADER, fallback_behavior="MATCH"
                        ),
                        scope_down_statement=via_web_page,
                    ),
                ),
                # WAF sees at most the first 16 KB of an API Gateway request's body (64 KB for a fee), and
                # a size constraint on the body measures only what WAF received, so it cannot see 6 MB:
                # https://docs.aws.amazon.com/waf/latest/developerguide/web-acl-setting-body-inspection-limit.html
                # https://docs.aws.amazon.com/waf/latest/developerguide/waf-rule-statement-type-size-constraint-match.html
                # The declared length can: Content-Length above MAX_BODY_BYTES is blocked. (API Gateway
                # itself refuses bodies over 10 MB, with or without the header.)
                block(
                    "body-size",
                    2,
                    answer="payload-too-large",
                    regex_match_statement=wafv2.CfnWebACL.RegexMatchStatementProperty(
                        field_to_match=header("content-length"),
                        regex_string=integer_above(MAX_BODY_BYTES),
                        text_transformations=as_sent,
                    ),
                ),
                managed(COMMON_RULE_SET, 3, counted=COUNTED_COMMON_RULES),
                managed("AWSManagedRulesKnownBadInputsRuleSet", 4),
            ],
        )
        wafv2.CfnWebACLAssociation(
            self, "FirewallOnApi", resource_arn=self.api.deployment_stage.stage_arn, web_acl_arn=acl.attr_arn
        )
        waf_logs = logs.LogGroup(
            self,
            "FirewallLogs",
            log_group_name=f"aws-waf-logs-{config.prefix}",  # WAF requires this prefix
            retention=config.log_retention,
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        wafv2.CfnLoggingConfiguration(
            self,
            "FirewallLogging",
            resource_arn=acl.attr_arn,
            log_destination_configs=[waf_logs.log_group_arn],
        )
        return acl

    @property
    def handler(self) -> lambda_.Function:
        return self.function
