"""The policy checks' findings we accept, each named precisely and with its reason.

cdk-nag's AWS Solutions findings are acknowledged here (every other one fails the synthesis), and
checkov's are skipped in the template's metadata, where checkov reads them. Paths are relative to
the stack.
"""

from __future__ import annotations

from collections.abc import Callable

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations

from cdk.config import stage_config

_IAM5 = "AwsSolutions::AwsSolutions-IAM5"
_ARN = "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>"
_LATEST_RUNTIME = (
    "Python 3.12 is the newest runtime with a public Powertools layer for arm64 that we pin; the "
    "bytecode shipped in the bundle is compiled for it"
)
_BASIC_EXECUTION = (
    "AWSLambdaBasicExecutionRole grants only CreateLogStream/PutLogEvents on the function's own log "
    "group; a hand-written copy would say the same"
)
_XRAY = "X-Ray's PutTraceSegments/PutTelemetryRecords take no resource: Resource '*' is the only form"
_KMS_TABLE = (
    "DynamoDB's grant on a customer-managed key adds ReEncrypt*/GenerateDataKey* for the idempotency "
    "table's own key use; the key is this stack's and used for nothing outside it"
)
_CDK_DEPLOYMENT = (
    "CDK's BucketDeployment copies the web page's files from the CDK asset bucket into the page's "
    "bucket: its generated policy is scoped to those two buckets"
)


def _by_path() -> dict[str, list[tuple[str, str]]]:
    """Construct path → [(finding id, reason)]."""
    tasks_policy = "Retraining/Tasks/ServiceRole/DefaultPolicy"
    return {
        # The functions.
        **{
            f"{fn}/Resource": [("AwsSolutions::AwsSolutions-L1", _LATEST_RUNTIME)]
            for fn in ("ClaimsApi/Handler", "Batch/Trigger", "Retraining/Tasks", "Monitoring/DriftTrigger")
        },
        **{
            f"{fn}/ServiceRole/Resource": [
                (
                    "AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AWSLambdaBasicExecutionRole]",
                    _BASIC_EXECUTION,
                )
            ]
            for fn in ("ClaimsApi/Handler", "Batch/Trigger", "Retraining/Tasks", "Monitoring/DriftTrigger")
        },
        "ClaimsApi/Handler/ServiceRole/DefaultPolicy": [(f"{_IAM5}[Resource::*]", _XRAY)],
        "Monitoring/DriftTrigger/ServiceRole/DefaultPolicy": [
            (f"{_IAM5}[Resource::*]", _XRAY),
            *[
                (
                    f"{_IAM5}[Resource::{_ARN}:processing-job/claims-risk-{stage}-drift-*]",
                    "one drift job an hour, named after the hour it reads: the prefix is the narrowest",
                )
                for stage in ("dev", "prod")
            ],
        ],
        "Monitoring/SchedulerRole/DefaultPolicy": [
            (
                f"{_IAM5}[Resource::<MonitoringDriftTrigger68777DC3.Arn>:*]",
                "CDK's grant_invoke allows the drift trigger's versions and aliases too",
            )
        ],
        "Batch/Trigger/ServiceRole/DefaultPolicy": [
            (f"{_IAM5}[Resource::*]", _XRAY),
            (f"{_IAM5}[Action::kms:GenerateDataKey*]", _KMS_TABLE),
            (f"{_IAM5}[Action::kms:ReEncrypt*]", _KMS_TABLE),
            (
                f"{_IAM5}[Resource::<Data178AD3D0.Arn>/incoming/*]",
                "reads the header line of any file dropped under incoming/ (senders name their files)",
            ),
            (
                f"{_IAM5}[Resource::<Data178AD3D0.Arn>/rejected/*/refused.json]",
                "answers a refused file with a note at rejected/<its path below incoming/>/refused.json: "
                "senders name their files, and only notes of that name can be written, never rejected rows",
            ),
            (
                f"{_IAM5}[Resource::{_ARN}:transform-job/claims-batch-*]",
                "each dropped file starts a job named after it; all share the claims-batch- prefix",
            ),
            (
                f"{_IAM5}[Resource::{_ARN}:endpoint-config/*]",
                "the serving config's name changes with every deployment; the trigger only reads it to "
                "find the serving model",
            ),
        ],
        tasks_policy: [
            (f"{_IAM5}[Resource::*]", _XRAY),
            (
                f"{_IAM5}[Resource::<Data178AD3D0.Arn>/pipeline/runs/*]",
                "reads the reports of any run of the pipeline; runs are named at start",
            ),
            (
                f"{_IAM5}[Resource::{_ARN}:model-package/claims-risk-dev-models/*]",
                "new versions of this stage's model package group get numbers SageMaker assigns",
            ),
            (
                f"{_IAM5}[Resource::{_ARN}:model-package/claims-risk-prod-models/*]",
                "new versions of this stage's model package group get numbers SageMaker assigns",
            ),
            (
                f"{_IAM5}[Resource::{_ARN}:mlflow-tracking-server/*]",
                "the optional MLflow tracking server is given by URL at deploy time, not by name",
            ),
        ],
        "Retraining/Role/DefaultPolicy": [
            (f"{_IAM5}[Resource::*]", f"{_XRAY}; ListEndpoints also takes no resource"),
            (
                f"{_IAM5}[Action::kms:GenerateDataKey*]",
                "CDK's grant_publish on the KMS-encrypted on-call topic: publishing needs a data key",
            ),
            (
                f"{_IAM5}[Resource::<RetrainingTasks2510FD4F.Arn>:*]",
                "CDK's grant_invoke allows the function's versions and aliases too",
            ),
            *[
                (
                    f"{_IAM5}[Resource::{_ARN}:{kind}/claims-risk-*]",
                    "every run names its jobs, models and configs claims-risk-<run id>: the prefix is "
                    "the narrowest name known before the run",
                )
                for kind in (
                    "processing-job",
                    "training-job",
                    "hyper-parameter-tuning-job",
                    "model",
                    "endpoint-config",
                )
            ],
            (
                f"{_IAM5}[Resource::{_ARN}:model-package/*]",
                "the deploy step reads the version it serves: one the run registered, or an approved "
                "package given as the run's input, from a group named by whoever approved it",
            ),
            (
                f"{_IAM5}[Resource::arn:<AWS::Partition>:cloudwatch:<AWS::Region>:<AWS::AccountId>:"
                "alarm:TargetTracking*]",
                "target tracking creates its alarms under names Application Auto Scaling chooses, all "
                "starting TargetTracking (AWS's managed policy for the SageMaker scaling role uses the same)",
            ),
        ],
        "SageMaker/Role/DefaultPolicy": [
            (
                f"{_IAM5}[Resource::*]",
                "pulling SageMaker's own images needs ecr:GetAuthorizationToken (no resource) and reads "
                "from AWS-owned registries; PutMetricData takes no resource and is limited by namespace",
            ),
            (
                f"{_IAM5}[Resource::<Data178AD3D0.Arn>/*]",
                "jobs, models and monitors read and write this stack's data bucket only: claims, splits, "
                "models, captured requests and reports",
            ),
            (
                f"{_IAM5}[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
                "log-group:/aws/sagemaker/*]",
                "SageMaker writes job logs to log groups it names under /aws/sagemaker/",
            ),
        ],
        "ClaimsApi/Api/Default/health/GET/Resource": [
            ("AwsSolutions::AwsSolutions-APIG4", "the health check is public by design: it reveals nothing"),
            ("AwsSolutions::AwsSolutions-COG4", "the health check is public by design: it reveals nothing"),
        ],
        "ClaimsApi/Api/Default/swagger/GET/Resource": [
            ("AwsSolutions::AwsSolutions-APIG4", "the API's documentation is public, its routes are not"),
            ("AwsSolutions::AwsSolutions-COG4", "the API's documentation is public, its routes are not"),
        ],
        "ClaimsApi/Api/CloudWatchRole/Resource": [
            (
                "AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                "the account's API Gateway logging role (AWS::ApiGateway::Account) is shared by every REST "
                "API in the region and writes to log groups each API names; AWS's managed policy is the "
                "documented role for it, and only apigateway.amazonaws.com may assume it",
            )
        ],
        "ClaimsApi/Users/Resource": [
            (
                "AwsSolutions::AwsSolutions-COG8",
                "the Plus feature plan (threat protection) costs per active user; MFA is required, "
                "self sign-up is off and users are invited, which covers the pool's few staff users",
            )
        ],
        "WebPage/Distribution/Resource": [
            (
                "AwsSolutions::AwsSolutions-CFR1",
                "claims handlers may work from any country the insurer operates in; the API behind it "
                "needs a Cognito token",
            ),
            (
                "AwsSolutions::AwsSolutions-CFR2",
                "a CloudFront web ACL must live in us-east-1 while this stack is region-agnostic; the "
                "API the page calls has its own regional WAF",
            ),
            (
                "AwsSolutions::AwsSolutions-CFR4",
                "with CloudFront's default certificate the minimum TLS version cannot be set; a custom "
                "domain with an ACM certificate (TLS 1.2) is the insurer's choice at deploy time",
            ),
        ],
    }


def _stage_paths(stage: str) -> dict[str, list[tuple[str, str]]]:
    glue = "arn:<AWS::Partition>:glue:<AWS::Region>:<AWS::AccountId>"
    database = stage_config(stage).lake_database
    return {
        "Lake/JobAccess/Resource": [
            (
                f"{_IAM5}[Resource::{glue}:table/{database}/*]",
                "the lake's tables in this stage's Glue database only: their set grows with the specs "
                "trained on (training_<spec>), and Athena checks the table's catalog and database too",
            ),
            (
                f"{_IAM5}[Resource::{glue}:table/{database}/temp_table_*]",
                "DeleteTable only on awswrangler's CTAS answers (temp_table_<uuid>), which it drops after "
                "reading them; never a lake table",
            ),
            (
                f"{_IAM5}[Resource::<Data178AD3D0.Arn>/lake/*]",
                "the jobs replace whole partitions of the lake's tables (overwrite_partitions): objects "
                "under lake/ only",
            ),
            (
                f"{_IAM5}[Resource::<Data178AD3D0.Arn>/athena-results/*]",
                "Athena writes each query's answer (and CTAS tables) under the workgroup's result "
                "location, named by query id",
            ),
        ],
        f"ClaimsApi/Api/DeploymentStage.{stage}/Resource": [
            (
                "AwsSolutions::AwsSolutions-APIG6",
                "execution logs go to a log group API Gateway creates itself (API-Gateway-Execution-Logs_"
                "<api id>/<stage>), outside this stack's KMS key and retention; JSON access logs, KMS "
                "encrypted, are on for every request",
            )
        ],
    }


_CDK_SINGLETONS = {
    "Custom::CDKBucketDeployment": [
        ("AwsSolutions::AwsSolutions-L1", "CDK chooses the runtime of its BucketDeployment function"),
        (
            "AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]",
            _BASIC_EXECUTION,
        ),
        *[
            (f"{_IAM5}[Action::s3:{action}]", _CDK_DEPLOYMENT)
            for action in ("Abort*", "DeleteObject*", "GetBucket*", "GetObject*", "List*")
        ],
        (f"{_IAM5}[Resource::*]", _CDK_DEPLOYMENT),
        (f"{_IAM5}[Resource::<WebPageFilesB5ACDEC7.Arn>/*]", _CDK_DEPLOYMENT),
        (
            f"{_IAM5}[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-"
            "<AWS::Region>/*]",
            _CDK_DEPLOYMENT,
        ),
    ],
    "BucketNotificationsHandler": [
        (
            "AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]",
            "CDK's bucket-notification custom resource; it only writes its own logs",
        )
    ],
}


def acknowledge_findings(stack: Stack, stage: str) -> None:
    for path, findings in {**_by_path(), **_stage_paths(stage)}.items():
        node = stack.node.try_find_child(path.split("/")[0])
        for part in path.split("/")[1:]:
            node = node.node.try_find_child(part) if node is not None else None
        if node is None:
            raise KeyError(f"no construct at {path}: update cdk/nag.py with the stack")
        Validations.of(node).acknowledge(*(Acknowledgment(id=i, reason=r) for i, r in findings))
    for child in stack.node.children:
        for prefix, findings in _CDK_SINGLETONS.items():
            if child.node.id.startswith(prefix):
                Validations.of(child).acknowledge(*(Acknowledgment(id=i, reason=r) for i, r in findings))


# checkov: (resource type, applies to this construct path?, check id, reason)
_ANY: Callable[[str], bool] = lambda _path: True  # noqa: E731
_NO_VPC = (
    "the functions reach only AWS APIs (SageMaker, S3, DynamoDB, Step Functions); a VPC would add NAT "
    "gateways (about $33 a month each) and nothing to protect"
)
_NO_RESERVED_CONCURRENCY = (
    "API Gateway's stage throttle and usage plans bound the load; reserved concurrency fails to deploy "
    "in accounts still on the default concurrency quota"
)
CHECKOV_SKIPS: tuple[tuple[str, Callable[[str], bool], str, str], ...] = (
    ("AWS::Lambda::Function", _ANY, "CKV_AWS_117", _NO_VPC),
    ("AWS::Lambda::Function", _ANY, "CKV_AWS_115", _NO_RESERVED_CONCURRENCY),
    (
        "AWS::Lambda::Function",
        lambda path: "Batch/Trigger" not in path,
        "CKV_AWS_116",
        "called synchronously (API Gateway, Step Functions, CloudFormation): the caller gets the error, "
        "so a dead-letter queue would never receive anything; the batch trigger has one",
    ),
    (
        "AWS::Lambda::Function",
        lambda path: "CDKBucketDeployment" in path,
        "CKV_AWS_173",
        "CDK's BucketDeployment function holds no secrets in its environment",
    ),
    ("AWS::IAM::Policy", lambda path: "CDKBucketDeployment" in path, "CKV_AWS_111", _CDK_DEPLOYMENT),
    (
        "AWS::IAM::Policy",
        lambda path: "/Retraining/Role/DefaultPolicy/" in path,
        "CKV_AWS_111",
        "Application Auto Scaling's RegisterScalableTarget and PutScalingPolicy name a scalable target "
        "whose ARN exists only once registered (Service Authorization Reference, Application Auto "
        "Scaling); every other write in this policy names its resources",
    ),
    (
        "AWS::S3::Bucket",
        lambda path: path.endswith("Data/AccessLogs/Resource"),
        "CKV_AWS_18",
        "this is the access-log bucket: logging it into itself would loop",
    ),
    (
        "AWS::SageMaker::Model",
        _ANY,
        "CKV_AWS_370",
        "the framework container installs the model's pinned requirements at start, which needs the "
        "network; a prebuilt image in the insurer's ECR lifts this",
    ),
    (
        "AWS::ApiGateway::Stage",
        _ANY,
        "CKV_AWS_120",
        "every answer scores one caller's claims: a cache would serve one claim's score for another",
    ),
    (
        "AWS::ApiGateway::Method",
        lambda path: "/health/" in path or "/swagger/" in path,
        "CKV_AWS_59",
        "the health check and the API's documentation are public by design; every scoped route is not",
    ),
    (
        "AWS::CloudFront::Distribution",
        _ANY,
        "CKV_AWS_68",
        "a CloudFront web ACL must live in us-east-1 while this stack is region-agnostic; the API the "
        "page calls has its own regional WAF",
    ),
    (
        "AWS::CloudFront::Distribution",
        _ANY,
        "CKV_AWS_174",
        "with CloudFront's default certificate the minimum TLS version cannot be set; a custom domain "
        "with an ACM certificate (TLS 1.2) is the insurer's choice",
    ),
)


def skip_checkov_findings(stack: Stack) -> None:
    """Write checkov's skips, with their reasons, into each resource's template metadata."""
    for construct in stack.node.find_all():
        if not isinstance(construct, CfnResource):
            continue
        path = construct.node.path
        skips = [
            {"id": check, "comment": reason}
            for kind, applies, check, reason in CHECKOV_SKIPS
            if construct.cfn_resource_type == kind and applies(path)
        ]
        if skips:
            construct.add_metadata("checkov", {"skip": skips})
