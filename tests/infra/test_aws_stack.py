"""What the AWS deployment must guarantee, pinned on the synthesized templates of both stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cdk.config import stage_config
from cdk.data import CAPTURE_PREFIX, INCOMING_PREFIX
from cdk.endpoint import guardrails
from cdk.images import IMAGE_CONTEXT, REGIONS
from shared import auth
from shared.alarms import ALARMS, MONITORING_NAMESPACE, QUALITY_NAMESPACE
from step_functions.pipeline import step_names
from step_functions.state_machine import step_states
from tests.infra.conftest import Synthesized


def resources(s: Synthesized, kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in s.template_json["Resources"].items() if v["Type"] == kind}


def one(s: Synthesized, kind: str) -> dict[str, Any]:
    [(_, resource)] = resources(s, kind).items()
    return resource["Properties"]  # type: ignore[no-any-return]


def state_machine_definition(s: Synthesized) -> dict[str, Any]:
    return json.loads(one(s, "AWS::StepFunctions::StateMachine")["DefinitionString"])  # type: ignore[no-any-return]


def statements_of_role(s: Synthesized, role_prefix: str) -> list[dict[str, Any]]:
    found = []
    for policy in resources(s, "AWS::IAM::Policy").values():
        roles = [r["Ref"] for r in policy["Properties"]["Roles"]]
        if any(r.startswith(role_prefix) for r in roles):
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def test_data_is_encrypted_everywhere(synthesized: Synthesized) -> None:
    for name, bucket in resources(synthesized, "AWS::S3::Bucket").items():
        rules = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rules, name
        assert bucket["Properties"]["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    data = [b for k, b in resources(synthesized, "AWS::S3::Bucket").items() if k.startswith("Data")]
    [data_bucket] = [b for b in data if "LoggingConfiguration" in b["Properties"]]
    [rule] = data_bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert data_bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    for policy in resources(synthesized, "AWS::S3::BucketPolicy").values():  # SSL enforced on each
        denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)
    for name, group in resources(synthesized, "AWS::Logs::LogGroup").items():
        assert "KmsKeyId" in group["Properties"], name
    assert "KmsMasterKeyId" in one(synthesized, "AWS::SNS::Topic")
    assert one(synthesized, "AWS::DynamoDB::Table")["SSESpecification"]["SSEType"] == "KMS"
    queues = resources(synthesized, "AWS::SQS::Queue")  # the triggers' dead letters: batch, quality
    assert len(queues) == 2 and all("KmsMasterKeyId" in q["Properties"] for q in queues.values())
    for function in resources(synthesized, "AWS::Lambda::Function").values():
        if "lambdas." in function["Properties"].get("Handler", ""):
            assert "KmsKeyArn" in function["Properties"]
    assert one(synthesized, "AWS::KMS::Key")["EnableKeyRotation"] is True


def test_the_endpoint_has_one_owner_the_state_machine(synthesized: Synthesized) -> None:
    """CloudFormation never creates the endpoint (issue 11, point 9): a later deploy cannot revert the
    pipeline's model, and no parameter can create a second owner of the same name."""
    template = synthesized.template_json
    for kind in ("AWS::SageMaker::Endpoint", "AWS::SageMaker::EndpointConfig", "AWS::SageMaker::Model"):
        assert not resources(synthesized, kind), kind
    assert "ModelPackageArn" not in template.get("Parameters", {})
    states = state_machine_definition(synthesized)["States"]
    assert {"deploy: create endpoint", "deploy: guarded update"} <= set(states)


def test_the_endpoint_captures_requests_and_answers_encrypted(synthesized: Synthesized) -> None:
    config = state_machine_definition(synthesized)["States"]["deploy: endpoint config"]["Parameters"]
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True
    assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}
    assert capture["InitialSamplingPercentage"] == stage_config(synthesized.stage).capture_percent
    assert CAPTURE_PREFIX in capture["DestinationS3Uri"] and "KmsKeyId" in capture
    assert "KmsKeyId" in config


def test_the_endpoint_deploys_blue_green_with_canary_rolls_back_on_its_alarms_and_scales(
    synthesized: Synthesized,
) -> None:
    config = stage_config(synthesized.stage)
    states = state_machine_definition(synthesized)["States"]
    update = states["deploy: guarded update"]["Parameters"]
    assert update["DeploymentConfig"] == guardrails(config).deployment_config()  # one definition
    assert update["RetainAllVariantProperties"] is True  # autoscaling's instance count survives
    blue_green = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    routing = blue_green["TrafficRoutingConfiguration"]
    assert routing["Type"] == "CANARY"
    assert routing["CanarySize"] == {"Type": "CAPACITY_PERCENT", "Value": config.canary_percent}
    assert blue_green["TerminationWaitInSeconds"] == config.baking_s  # the stage's baking period
    rollback = {a["AlarmName"] for a in update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]}
    assert rollback == {f"{config.prefix}-endpoint-5xx", f"{config.prefix}-endpoint-latency"}
    alarm_names = {
        a["Properties"]["AlarmName"] for a in resources(synthesized, "AWS::CloudWatch::Alarm").values()
    }
    assert rollback <= alarm_names  # they exist before the first deployment names them
    # Autoscaling tracks invocations per instance within the stage's bounds, set once it serves.
    target = states["deploy: autoscaling"]["Parameters"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (
        config.endpoint_min_instances,
        config.endpoint_max_instances,
    )
    policy = states["deploy: scaling policy"]["Parameters"]["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )
    assert policy["TargetValue"] == config.invocations_per_instance_target


def test_every_alarm_pages_on_call_and_every_defined_alarm_exists(synthesized: Synthesized) -> None:
    [topic] = resources(synthesized, "AWS::SNS::Topic")
    alarms = resources(synthesized, "AWS::CloudWatch::Alarm")
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}], name
        assert alarm["Properties"]["OKActions"] == [{"Ref": topic}], name
    watched = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in alarms.values()}
    assert {(d.namespace, d.metric) for d in ALARMS} == watched
    by_name = {a["Properties"]["AlarmName"]: a["Properties"] for a in alarms.values()}
    prefix = stage_config(synthesized.stage).prefix
    for definition in ALARMS:
        if definition.component in ("lambda",):
            continue
        alarm = by_name[definition.alarm_name(prefix)]
        assert alarm["Threshold"] == definition.threshold
        assert alarm["ComparisonOperator"] == definition.comparison
        assert {d["Name"] for d in alarm["Dimensions"]} == set(definition.dimensions)
    drift = by_name[f"{prefix}-feature-drift"]
    assert drift["Namespace"] == MONITORING_NAMESPACE
    # Five functions, each with an errors and a throttles alarm.
    assert sum(1 for n in by_name if "lambda-errors" in n) == 5
    # Model quality on late outcomes: CloudWatch keeps the last verdict between two labels files.
    quality = by_name[f"{prefix}-model-quality"]
    assert (quality["Namespace"], quality["TreatMissingData"]) == (QUALITY_NAMESPACE, "ignore")


def test_dropped_files_under_incoming_start_the_batch_trigger(synthesized: Synthesized) -> None:
    [notification] = resources(synthesized, "Custom::S3BucketNotifications").values()
    [config] = notification["Properties"]["NotificationConfiguration"]["LambdaFunctionConfigurations"]
    assert config["Events"] == ["s3:ObjectCreated:*"]
    assert config["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": INCOMING_PREFIX}]}}
    assert "BatchTrigger" in json.dumps(config["LambdaFunctionArn"])
    rules = [r["Properties"] for r in resources(synthesized, "AWS::Events::Rule").values()]
    transform_rules = {
        tuple(r["EventPattern"]["detail"]["TransformJobStatus"]): r
        for r in rules
        if r.get("EventPattern", {}).get("detail-type") == ["SageMaker Transform Job State Change"]
    }
    assert set(transform_rules) == {("Failed", "Stopped"), ("Completed",)}
    failed = transform_rules["Failed", "Stopped"]
    assert "Ref" in failed["Targets"][0]["Arn"]  # the on-call topic
    # A completed job's rows go to the claims lake: the trigger starts the lake job.
    [completed] = transform_rules["Completed",]["Targets"]
    assert "BatchTrigger" in json.dumps(completed["Arn"])


def test_the_state_machine_runs_the_pipeline_steps_with_sync_jobs_and_least_privilege(
    synthesized: Synthesized,
) -> None:
    machine = one(synthesized, "AWS::StepFunctions::StateMachine")
    assert machine["LoggingConfiguration"]["Level"] == "ALL"
    assert machine["LoggingConfiguration"]["IncludeExecutionData"] is True
    assert machine["TracingConfiguration"] == {"Enabled": True}
    asl = state_machine_definition(synthesized)
    assert step_states(asl) == step_names()  # the same step list as the local runner's
    # The champion gate has the serving model to compare with: published after each deployment.
    champion = asl["States"]["evaluate"]["Parameters"]["Environment"]["CLAIMS_RISK_CHAMPION_URI"]
    assert champion == asl["States"]["deploy: model card"]["Parameters"]["Payload"]["champion"]
    resources_used = {s.get("Resource") for s in asl["States"].values()}
    assert {
        "arn:aws:states:::sagemaker:createProcessingJob.sync",
        "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync",
        "arn:aws:states:::sagemaker:createTrainingJob.sync",
    } <= resources_used
    assert set(machine["DefinitionSubstitutions"]) == {
        "SageMakerRoleArn", "DataBucket", "KmsKeyArn", "Image",
        "TasksFunctionArn", "TopicArn", "EndpointName", "ModelPackageGroup",
    }  # fmt: skip
    role = machine["RoleArn"]["Fn::GetAtt"][0]
    statements = statements_of_role(synthesized, role)
    actions = {
        a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    needed = {
        "sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob",
        "sagemaker:CreateHyperParameterTuningJob", "sagemaker:CreateTrainingJob", "sagemaker:UpdateEndpoint",
        "events:PutTargets", "events:PutRule", "events:DescribeRule", "iam:PassRole",
    }  # fmt: skip
    assert needed <= actions
    [events] = [s for s in statements if s.get("Sid") == "SyncJobEvents"]
    assert all("StepFunctionsGetEventsForSageMaker" in json.dumps(r) for r in events["Resource"])
    # PassRole: only the SageMaker role, only to SageMaker, and only from this role.
    passes = [
        (p, s)
        for p in resources(synthesized, "AWS::IAM::Policy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if "iam:PassRole" in json.dumps(s["Action"])
    ]
    # The state machine's, the drift trigger's, the batch trigger's (its lake jobs) and the quality
    # trigger's, all to start jobs.
    assert len(passes) == 4
    for _, pass_role in passes:
        assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
        assert "SageMakerRole" in json.dumps(pass_role["Resource"])
    for statement in statements:
        if str(statement["Action"]).startswith("sagemaker:Create"):
            assert statement["Resource"] != "*"


def test_every_scoped_route_needs_its_cognito_scope_and_machine_routes_a_key(
    synthesized: Synthesized,
) -> None:
    methods = resources(synthesized, "AWS::ApiGateway::Method")
    paths = {
        k: v["Properties"]["PathPart"] for k, v in resources(synthesized, "AWS::ApiGateway::Resource").items()
    }
    scoped = {(m["Properties"]["HttpMethod"], m["Properties"]["ResourceId"]["Ref"]): m["Properties"]
              for m in methods.values() if m["Properties"].get("AuthorizationType") != "NONE"}  # fmt: skip
    assert len(scoped) == len(auth.ROUTE_SCOPES)
    for (method, path), scope in auth.ROUTE_SCOPES.items():
        [props] = [
            p for (m, ref), p in scoped.items() if m == method and paths[ref] == path.rsplit("/", 1)[1]
        ]
        assert props["AuthorizationType"] == "COGNITO_USER_POOLS"
        assert props["AuthorizationScopes"] == [scope]
        assert "Ref" in props["AuthorizerId"]
        assert props["ApiKeyRequired"] is ((method, path) not in auth.USER_TOKEN_ONLY)
    authorizer = one(synthesized, "AWS::ApiGateway::Authorizer")
    assert authorizer["Type"] == "COGNITO_USER_POOLS"
    server = one(synthesized, "AWS::Cognito::UserPoolResourceServer")
    assert {f"{server['Identifier']}/{s['ScopeName']}" for s in server["Scopes"]} == set(auth.ALL_SCOPES)
    pool = one(synthesized, "AWS::Cognito::UserPool")
    assert (
        pool["MfaConfiguration"] == "ON" and pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    )


def test_throttling_usage_plans_waf_and_access_logs_hold_the_stage_values(synthesized: Synthesized) -> None:
    config = stage_config(synthesized.stage)
    stage = one(synthesized, "AWS::ApiGateway::Stage")
    [settings] = stage["MethodSettings"]
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (
        config.throttle_rate_per_s,
        config.throttle_burst,
    )
    assert stage["TracingEnabled"] is True and "DestinationArn" in stage["AccessLogSetting"]
    plans = {
        p["Properties"]["UsagePlanName"]: p["Properties"]
        for p in resources(synthesized, "AWS::ApiGateway::UsagePlan").values()
    }
    machine = plans[f"{config.prefix}-machine-clients"]
    assert machine["Throttle"] == {
        "RateLimit": round(config.client_requests_per_minute / 60),
        "BurstLimit": 100,
    }
    assert machine["Quota"] == {"Limit": config.client_daily_quota, "Period": "DAY"}
    web = plans[f"{config.prefix}-web-page"]
    assert web["Throttle"]["RateLimit"] == config.web_page_requests_per_s
    assert len(resources(synthesized, "AWS::ApiGateway::UsagePlanKey")) == 2
    acl = one(synthesized, "AWS::WAFv2::WebACL")
    rules = {r["Name"]: r for r in acl["Rules"]}
    assert (
        rules["rate-per-address"]["Statement"]["RateBasedStatement"]["Limit"]
        == config.waf_requests_per_5_min_per_ip
    )
    assert "AWSManagedRulesCommonRuleSet" in rules
    assert "WebACLArn" in one(synthesized, "AWS::WAFv2::WebACLAssociation")
    # Errors the gateway answers itself keep the API's one error shape, with a correlation id.
    for response in resources(synthesized, "AWS::ApiGateway::GatewayResponse").values():
        body = json.loads(response["Properties"]["ResponseTemplates"]["application/json"])
        assert set(body) == {"error", "correlation_id"}


def test_the_web_page_calls_the_api_with_its_own_key_added_at_the_edge(synthesized: Synthesized) -> None:
    """Claims handlers sign in with a token; CloudFront adds the page's usage-plan key, whatever the
    browser sends, so the key never reaches a browser and every predict route still gets one."""
    keys = {
        k["Properties"]["Name"]: k["Properties"]
        for k in resources(synthesized, "AWS::ApiGateway::ApiKey").values()
    }
    web_key = keys[f"{stage_config(synthesized.stage).prefix}-web-page"]
    distribution = one(synthesized, "AWS::CloudFront::Distribution")["DistributionConfig"]
    [api_origin] = [o for o in distribution["Origins"] if "CustomOriginConfig" in o]
    headers = {h["HeaderName"]: h["HeaderValue"] for h in api_origin["OriginCustomHeaders"]}
    assert headers["x-api-key"] == web_key["Value"]
    assert "AWS::StackId" in json.dumps(web_key["Value"])  # unique per stack, absent from the template


def test_every_function_is_python_312_on_arm_with_powertools_and_xray(synthesized: Synthesized) -> None:
    ours = [f["Properties"] for f in resources(synthesized, "AWS::Lambda::Function").values()
            if "lambdas." in f["Properties"].get("Handler", "")]  # fmt: skip
    assert {f["Handler"] for f in ours} == {
        "lambdas.api.handler.lambda_handler",
        "lambdas.batch_trigger.handler.lambda_handler",
        "lambdas.pipeline_tasks.handler.lambda_handler",
        "lambdas.drift_trigger.handler.lambda_handler",
        "lambdas.quality_trigger.handler.lambda_handler",
    }
    for function in ours:
        assert (function["Runtime"], function["Architectures"]) == ("python3.12", ["arm64"])
        assert function["TracingConfig"] == {"Mode": "Active"}
        assert "AWSLambdaPowertoolsPythonV3-python312-arm64" in json.dumps(function["Layers"])


def test_every_job_and_the_endpoint_run_the_project_image_built_at_deploy(synthesized: Synthesized) -> None:
    """One runtime, the lock's (issue 11, points 7 and 8): CDK builds sagemaker_jobs/image/Dockerfile
    as a Docker image asset (synthesis needs no Docker), and nothing else names an image."""
    assets = json.loads(
        (synthesized.directory / f"ClaimsRisk-{synthesized.stage}.assets.json").read_text(encoding="utf-8")
    )
    [(image_hash, image)] = assets["dockerImages"].items()
    assert image["source"]["dockerFile"] == "sagemaker_jobs/image/Dockerfile"
    assert image["source"]["platform"] == "linux/amd64"
    context = synthesized.directory / image["source"]["directory"]
    assert sorted(p.name for p in context.iterdir()) == sorted(IMAGE_CONTEXT)
    assert not list(context.rglob("__pycache__"))
    machine = one(synthesized, "AWS::StepFunctions::StateMachine")
    assert image_hash in json.dumps(machine["DefinitionSubstitutions"]["Image"])
    assert not synthesized.template_json.get("Mappings")  # no framework images, no Model Monitor
    manifest = json.loads((synthesized.directory / "manifest.json").read_text(encoding="utf-8"))
    assert "missing" not in manifest


def test_the_drift_job_runs_hourly_without_model_monitor(synthesized: Synthesized) -> None:
    config = stage_config(synthesized.stage)
    assert not resources(synthesized, "AWS::SageMaker::MonitoringSchedule")
    assert not resources(synthesized, "AWS::SageMaker::DataQualityJobDefinition")
    [schedule] = resources(synthesized, "AWS::Scheduler::Schedule").values()
    properties = schedule["Properties"]
    assert properties["ScheduleExpression"] == config.drift_schedule_cron
    assert "DriftTrigger" in json.dumps(properties["Target"]["Arn"])
    assert json.loads(properties["Target"]["Input"]) == {"scheduled_time": "<aws.scheduler.scheduled-time>"}
    functions = {
        f["Properties"]["Handler"]: f["Properties"]
        for f in resources(synthesized, "AWS::Lambda::Function").values()
    }
    environment = functions["lambdas.drift_trigger.handler.lambda_handler"]["Environment"]["Variables"]
    from lambdas.drift_trigger.handler import SETTINGS_FROM_ENV

    assert set(SETTINGS_FROM_ENV.values()) <= set(environment)


def test_model_monitors_schedule_is_an_option_with_its_baseline(tmp_path: Path) -> None:
    """For accounts that have Model Monitor: -c model_monitor=true adds its data-quality schedule and
    the deploy step's baseline, which the schedule reads."""
    from app import build_app

    build_app({"stage": "dev", "model_monitor": "true"}, outdir=str(tmp_path)).synth()
    s = Synthesized("dev", tmp_path)
    [(definition_id, data_quality)] = resources(s, "AWS::SageMaker::DataQualityJobDefinition").items()
    assert "RecordPreprocessorSourceUri" in data_quality["Properties"]["DataQualityAppSpecification"]
    baseline = data_quality["Properties"]["DataQualityBaselineConfig"]
    written = state_machine_definition(s)["States"]["deploy: monitoring baseline"]
    [output] = written["Parameters"]["ProcessingOutputConfig"]["Outputs"]
    prefix = output["S3Output"]["S3Uri"].split("}/", 1)[1]  # after the bucket placeholder
    for kind in ("ConstraintsResource", "StatisticsResource"):
        assert f"/{prefix}/" in json.dumps(baseline[kind]["S3Uri"])
    [schedule] = resources(s, "AWS::SageMaker::MonitoringSchedule").values()
    config = schedule["Properties"]["MonitoringScheduleConfig"]
    assert config["ScheduleConfig"]["ScheduleExpression"] == "cron(0 * ? * * *)"
    assert definition_id in schedule["DependsOn"]  # the definition has no name attribute to Ref
    [images] = s.template_json["Mappings"].values()
    assert set(images) == set(REGIONS)
    assert all(".dkr.ecr." in uri["monitor"] for uri in images.values())


def test_retraining_starts_from_the_api_a_schedule_and_the_drift_alarm(synthesized: Synthesized) -> None:
    config = stage_config(synthesized.stage)
    rules = [r["Properties"] for r in resources(synthesized, "AWS::Events::Rule").values()]
    [schedule] = [r for r in rules if "ScheduleExpression" in r]
    assert schedule["State"] == ("ENABLED" if config.retrain_on_schedule else "DISABLED")
    [drift] = [r for r in rules if r.get("EventPattern", {}).get("source") == ["aws.cloudwatch"]]
    assert drift["State"] == ("ENABLED" if config.retrain_on_drift else "DISABLED")
    for rule in (schedule, drift):
        assert json.loads(rule["Targets"][0]["Input"]) == {}  # a run with the defaults
    api_statements = statements_of_role(synthesized, "ClaimsApiHandlerServiceRole")
    assert any(s["Action"] == "states:StartExecution" for s in api_statements)


def test_a_dashboard_shows_the_api_endpoint_drift_pipeline_and_batch(synthesized: Synthesized) -> None:
    body = json.dumps(one(synthesized, "AWS::CloudWatch::Dashboard")["DashboardBody"])
    for title in ("API:", "Endpoint:", "Drift", "Retraining and batch", "Model quality", "Alarms"):
        assert title in body
