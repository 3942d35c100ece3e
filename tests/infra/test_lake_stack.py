"""The claims lake in AWS (issue 13): the Glue database and Athena workgroup of each stage, what the
SageMaker jobs may do with them, and the jobs being told where the lake is.

Checked against AWS's own definitions, in the conformance style of test_aws_conformance.py:
- CloudFormation's AWS::Glue::Database and AWS::Athena::WorkGroup (WorkGroupConfiguration,
  ResultConfiguration, EncryptionConfiguration), whose properties are the Glue CreateDatabase and
  Athena CreateWorkGroup API's members: the template's values are validated against botocore's glue
  and athena models (DatabaseInput; Configuration: BytesScannedCutoffPerQuery min 10,000,000,
  EncryptionOption SSE_KMS, ExpectedBucketOwner) and moto creates them;
  https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-glue-database.html
  https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-athena-workgroup.html
  https://docs.aws.amazon.com/athena/latest/APIReference/API_WorkGroupConfiguration.html
- the lake's calls: the AWS adapter (shared/adapters/lake.py) is run for real through awswrangler
  against moto's S3, Glue and Athena, and every call it makes is recorded; each becomes the IAM
  action and resource the Service Authorization Reference names for it (Glue and Athena actions are
  their API operations, checked to exist in botocore's models; S3's from its actions table, below);
- what Athena does as the caller (Glue lookups to plan, the CTAS table, S3 reads and result writes):
  "Configure access to databases and tables in the AWS Glue Data Catalog" and AmazonAthenaFullAccess
  in the Athena user guide;
- CreateProcessingJob's Environment (botocore's sagemaker model, ProcessingEnvironmentMap: at most
  100 entries, keys [a-zA-Z_][a-zA-Z0-9_]* and values of at most 256 characters) for the validate and
  evaluate steps resolved from the state machine, and for the drift job the trigger starts.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final, cast

import boto3
import pandas as pd
import pytest
from botocore.model import MapShape

from cdk.config import ATHENA_RESULTS_PREFIX, LAKE_PREFIX, MIN_BYTES_SCANNED_CUTOFF, stage_config
from shared.adapters.lake import AthenaLake
from shared.drift_jobs import DriftWindow, drift_job_request
from shared.lake import OUTCOMES, training_table
from shared.lake_writers import write_outcomes
from shared.settings import DriftTriggerSettings, LakeSettings
from step_functions.state_machine import LAKE_STEPS
from tests.infra import asl
from tests.infra.conftest import Synthesized
from tests.infra.test_aws_conformance import (
    ACCOUNT,
    NOW,
    REGION,
    S3_ACTIONS,
    S3_KMS,
    Deployment,
    Need,
    _listed,
    allows,
    missing,
    recorded_aws,
    request_errors,
    role_of_request,
    service_model,
)
from tests.infra.test_scale_out import RUN_DATA, job_requests

FINE_GRAINED_GLUE: Final = (
    "https://docs.aws.amazon.com/athena/latest/ug/fine-grained-access-to-glue-resources.html"
)
ATHENA_FULL_ACCESS: Final = (
    "https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AmazonAthenaFullAccess.html"
)
LAKE_VARIABLES: Final = frozenset(LakeSettings.variables().values())
# S3's operations and the IAM action each needs (S3's "Amazon S3 actions" table).
S3_ACTION_OF: Final = {
    "ListObjectsV2": "s3:ListBucket",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObjects": "s3:DeleteObject",
    "GetBucketLocation": "s3:GetBucketLocation",
}


@pytest.fixture(scope="module")
def deployments(synthesized_stages: dict[str, Synthesized]) -> dict[str, Deployment]:
    return {stage: Deployment(s) for stage, s in synthesized_stages.items()}


def lake_resources(deployment: Deployment) -> tuple[dict[str, Any], dict[str, Any]]:
    (_, database), (_, workgroup) = (
        deployment.one("AWS::Glue::Database"),
        deployment.one("AWS::Athena::WorkGroup"),
    )
    return deployment.resolve(database["Properties"]), deployment.resolve(workgroup["Properties"])


def bucket_of(deployment: Deployment) -> str:
    return deployment.substitutions["DataBucket"]


def sagemaker_role(deployment: Deployment) -> str:
    return deployment.logical_by_arn("AWS::IAM::Role", deployment.substitutions["SageMakerRoleArn"])


# -- the resources ---------------------------------------------------------------------------------


def test_each_stage_has_its_glue_database_under_the_lake_prefix(deployments: dict[str, Deployment]) -> None:
    names = set()
    for stage, deployment in deployments.items():
        config = stage_config(stage)
        database, _ = lake_resources(deployment)
        given = database["DatabaseInput"]
        assert given["Name"] == config.lake_database and re.fullmatch(r"[a-z0-9_]+", given["Name"])
        assert given["LocationUri"] == f"s3://{bucket_of(deployment)}/{LAKE_PREFIX}"
        assert database["CatalogId"] == ACCOUNT
        assert not request_errors("glue", "CreateDatabase", {"CatalogId": ACCOUNT, "DatabaseInput": given})
        names.add(given["Name"])
    assert len(names) == len(deployments)  # one per stage, never shared


def test_each_stage_has_its_athena_workgroup_enforcing_encrypted_results_and_a_scan_guard(
    deployments: dict[str, Deployment],
) -> None:
    for stage, deployment in deployments.items():
        config = stage_config(stage)
        _, workgroup = lake_resources(deployment)
        settings = workgroup["WorkGroupConfiguration"]
        assert workgroup["Name"] == config.lake_workgroup and workgroup["State"] == "ENABLED"
        assert settings["EnforceWorkGroupConfiguration"] is True
        assert settings["BytesScannedCutoffPerQuery"] == config.lake_bytes_scanned_cutoff
        assert settings["BytesScannedCutoffPerQuery"] >= MIN_BYTES_SCANNED_CUTOFF
        assert settings["EngineVersion"]["SelectedEngineVersion"] in ("AUTO", "Athena engine version 3")
        results = settings["ResultConfiguration"]
        assert results["OutputLocation"] == f"s3://{bucket_of(deployment)}/{ATHENA_RESULTS_PREFIX}"
        assert results["EncryptionConfiguration"] == {
            "EncryptionOption": "SSE_KMS",
            "KmsKey": deployment.substitutions["KmsKeyArn"],  # the stack's key, which encrypts the bucket
        }
        assert results["ExpectedBucketOwner"] == ACCOUNT
        request = {"Name": workgroup["Name"], "Configuration": settings}
        assert not request_errors("athena", "CreateWorkGroup", request)
        assert deployment.bucket_key(bucket_of(deployment)) == deployment.substitutions["KmsKeyArn"]
    prod = stage_config("prod")
    assert prod.lake_bytes_scanned_cutoff > stage_config("dev").lake_bytes_scanned_cutoff


def expiring_rules(deployment: Deployment) -> list[dict[str, Any]]:
    bucket = deployment.resources[deployment.buckets[bucket_of(deployment)]]
    rules: list[dict[str, Any]] = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    return [
        r
        for r in rules
        if r.get("Status") == "Enabled" and ("ExpirationInDays" in r or "ExpirationDate" in r)
    ]


def test_the_lake_never_expires_and_athena_results_do(deployments: dict[str, Deployment]) -> None:
    for stage, deployment in deployments.items():
        rules = expiring_rules(deployment)
        for rule in rules:  # a rule without a prefix applies to every key, the lake's included
            prefix = rule.get("Prefix", rule.get("Filter", {}).get("Prefix", ""))
            assert not f"{LAKE_PREFIX}outcomes/load_id=x/part.parquet".startswith(prefix), rule
        [results] = [r for r in rules if r.get("Prefix") == ATHENA_RESULTS_PREFIX]
        assert results["ExpirationInDays"] == stage_config(stage).athena_results_days


# -- what the jobs are told -------------------------------------------------------------------------


def environment_errors(environment: Mapping[str, str]) -> list[str]:
    """CreateProcessingJob's ProcessingEnvironmentMap, as botocore's sagemaker model bounds it."""
    shape = service_model("sagemaker").shape_for("ProcessingEnvironmentMap")
    assert isinstance(shape, MapShape)
    key, value = shape.key.metadata, shape.value.metadata
    errors = [f"{len(environment)} entries"] if len(environment) > shape.metadata["max"] else []
    for name, text in environment.items():
        if not re.fullmatch(key["pattern"], name) or len(name) > key["max"]:
            errors.append(f"key {name!r}")
        if len(text) > value["max"]:
            errors.append(f"{name}: {len(text)} characters")
    return errors


def test_the_lake_steps_are_told_where_the_lake_is_and_sagemaker_takes_it(
    deployments: dict[str, Deployment],
) -> None:
    for stage, deployment in deployments.items():
        wanted = stage_config(stage).lake_environment(bucket_of(deployment))
        assert set(wanted) == LAKE_VARIABLES  # the names the jobs read (LakeSettings)
        requests = job_requests(deployment.definition)
        for name, (operation, request) in requests.items():
            environment = request.get("Environment", {})
            if name in LAKE_STEPS:
                assert {k: environment.get(k) for k in LAKE_VARIABLES} == wanted, name
                assert not environment_errors(environment), name
                assert not request_errors("sagemaker", operation, request), name
            else:  # features, tune, train: no lake, no access to it by accident
                assert not set(environment) & LAKE_VARIABLES, name


def test_the_drift_job_is_told_where_the_lake_is(deployments: dict[str, Deployment]) -> None:
    for stage, deployment in deployments.items():
        environment = deployment.function_environment("lambdas.drift_trigger.handler.lambda_handler")
        settings = DriftTriggerSettings.model_validate(environment).drift_job()
        request = drift_job_request(settings, DriftWindow.hour_before(NOW))
        wanted = stage_config(stage).lake_environment(bucket_of(deployment))
        assert {k: request["Environment"].get(k) for k in LAKE_VARIABLES} == wanted
        assert not environment_errors(request["Environment"])
        assert not request_errors("sagemaker", "CreateProcessingJob", request)
        assert role_of_request(deployment, "CreateProcessingJob", request) == sagemaker_role(deployment)


def test_a_lake_source_reaches_the_validate_jobs_arguments(deployments: dict[str, Deployment]) -> None:
    runtime = asl.Runtime(context={"Execution": {"Name": "run-1"}}, uuid=lambda: "0a1b2c3d-4e5f")
    parameters = deployments["dev"].definition["States"]["validate"]["Parameters"]
    for source in ("glue:training_claims", "athena:SELECT * FROM training_claims WHERE split = 'train'"):
        inputs = cast(dict[str, Any], RUN_DATA["inputs"])
        data = {**RUN_DATA, "inputs": {**inputs, "source": source}}
        request = asl.apply_template(parameters, data, runtime)
        arguments = request["AppSpecification"]["ContainerArguments"]
        assert arguments[arguments.index("--source") + 1] == source
        assert not request_errors("sagemaker", "CreateProcessingJob", request)


# -- what the lake's calls need of IAM -----------------------------------------------------------------


def glue_arn(resource: str) -> str:
    return f"arn:aws:glue:{REGION}:{ACCOUNT}:{resource}"


def call_needs(
    service: str, operation: str, params: Mapping[str, Any], database: str, workgroup: str, key: str
) -> list[Need]:
    """The IAM actions and resources of one recorded call (the Service Authorization Reference:
    Glue's table actions name the catalog, the database and the table; Athena's the workgroup)."""
    why = f"{service}.{operation}"
    if service == "glue":
        assert operation in service_model("glue").operation_names, operation
        db = params.get("DatabaseName", database)
        table = params.get("Name", params.get("TableName", "*" if operation == "GetTables" else None))
        resources = [glue_arn("catalog"), glue_arn(f"database/{db}")]
        resources += [glue_arn(f"table/{db}/{table}")] if table else []
        return [Need(f"glue:{operation}", r, why=FINE_GRAINED_GLUE) for r in resources]
    if service == "athena":
        assert operation in service_model("athena").operation_names, operation
        assert params.get("WorkGroup", workgroup) == workgroup, params
        return [
            Need(f"athena:{operation}", f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/{workgroup}", why=why)
        ]
    assert service == "s3", service
    action, bucket = S3_ACTION_OF[operation], params["Bucket"]
    if operation == "ListObjectsV2":
        return [
            Need(action, f"arn:aws:s3:::{bucket}", (("s3:prefix", params.get("Prefix", "")),), S3_ACTIONS)
        ]
    if operation == "GetBucketLocation":
        return [Need(action, f"arn:aws:s3:::{bucket}", why=S3_ACTIONS)]
    keys = (
        [o["Key"] for o in params["Delete"]["Objects"]] if operation == "DeleteObjects" else [params["Key"]]
    )
    needs = [Need(action, f"arn:aws:s3:::{bucket}/{k}", why=S3_ACTIONS) for k in keys]
    if action in ("s3:GetObject", "s3:PutObject"):  # the bucket's default encryption is the stack's key
        needs.append(
            Need("kms:Decrypt" if action == "s3:GetObject" else "kms:GenerateDataKey", key, why=S3_KMS)
        )
    return needs


def athena_as_caller(
    database: str, bucket: str, key: str, query_ids: list[str], ctas: bool, tables: list[str]
) -> list[Need]:
    """What Athena does with the caller's permissions to run a query over the lake (the user guide)."""
    catalog = glue_arn("catalog")
    needs = [
        Need("glue:GetDatabase", r, why=FINE_GRAINED_GLUE) for r in (catalog, glue_arn("database/default"))
    ]
    for table in tables:  # planning: the table, its ancestors, its partitions; then the data
        for resource in (catalog, glue_arn(f"database/{database}"), glue_arn(f"table/{database}/{table}")):
            needs += [Need(a, resource, why=FINE_GRAINED_GLUE) for a in ("glue:GetDatabase", "glue:GetTable")]
            needs.append(Need("glue:GetPartitions", resource, why=FINE_GRAINED_GLUE))
        needs.append(
            Need("s3:GetObject", f"arn:aws:s3:::{bucket}/{LAKE_PREFIX}{table}/part.parquet", why=S3_ACTIONS)
        )
        prefix = (("s3:prefix", f"{LAKE_PREFIX}{table}/"),)
        needs.append(Need("s3:ListBucket", f"arn:aws:s3:::{bucket}", prefix, S3_ACTIONS))
    for query in query_ids:  # the answer (and a CTAS table) under the result location, SSE-KMS
        where = (
            f"{ATHENA_RESULTS_PREFIX}tables/{query}/part-0" if ctas else f"{ATHENA_RESULTS_PREFIX}{query}.csv"
        )
        for action in ("s3:PutObject", "s3:AbortMultipartUpload"):
            needs.append(Need(action, f"arn:aws:s3:::{bucket}/{where}", why=ATHENA_FULL_ACCESS))
        needs.append(Need("kms:GenerateDataKey", key, why=S3_KMS))
        if ctas:
            temporary = glue_arn(f"table/{database}/temp_table_{query.replace('-', '')}")
            needs += [Need("glue:CreateTable", r, why=FINE_GRAINED_GLUE) for r in (catalog, temporary)]
    return needs


@contextlib.contextmanager
def moto_lake(
    deployment: Deployment,
) -> Iterator[tuple[AthenaLake, list[tuple[str, str, dict[str, Any]]], list[str]]]:
    """The stage's lake as the template defines it, in moto; Athena's answers written where it would
    write them (moto runs no SQL). Yields the adapter, the calls it makes, and the query ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    database, workgroup = lake_resources(deployment)
    bucket = bucket_of(deployment)
    with recorded_aws() as (_, recorder, seeding):
        seeding.client("s3").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        seeding.client("glue").create_database(DatabaseInput=database["DatabaseInput"])
        seeding.client("athena").create_work_group(
            Name=workgroup["Name"], Configuration=workgroup["WorkGroupConfiguration"]
        )
        queries: list[str] = []
        ctas: set[str] = set()

        asked: list[str] = []

        def ask(params: dict[str, Any], **_: Any) -> None:
            asked.append(params["QueryString"])

        def answer(parsed: dict[str, Any], **_: Any) -> None:
            query = parsed["QueryExecutionId"]
            queries.append(query)
            s3 = seeding.client("s3")
            if asked.pop().startswith("CREATE TABLE"):
                ctas.add(query)
                body = io.BytesIO()
                pq.write_table(pa.table({"n": [3]}), body)
                part = f"{ATHENA_RESULTS_PREFIX}tables/{query}/part-0"
                s3.put_object(Bucket=bucket, Key=part, Body=body.getvalue())
                manifest = f"{ATHENA_RESULTS_PREFIX}tables/{query}-manifest.csv"
                s3.put_object(Bucket=bucket, Key=manifest, Body=f"s3://{bucket}/{part}\n".encode())
            else:
                s3.put_object(Bucket=bucket, Key=f"{ATHENA_RESULTS_PREFIX}{query}.csv", Body=b'"n"\n"3"\n')

        def manifest(parsed: dict[str, Any], **_: Any) -> None:
            execution = parsed["QueryExecution"]
            if execution["QueryExecutionId"] in ctas:
                where = f"s3://{bucket}/{ATHENA_RESULTS_PREFIX}tables/{execution['QueryExecutionId']}-manifest.csv"
                execution.setdefault("Statistics", {})["DataManifestLocation"] = where

        session = boto3.DEFAULT_SESSION
        assert session is not None
        session.events.register("before-parameter-build.athena.StartQueryExecution", ask)
        session.events.register("after-call.athena.StartQueryExecution", answer)
        session.events.register("after-call.athena.GetQueryExecution", manifest)
        root = stage_config(deployment.stage).lake_environment(bucket)
        lake = AthenaLake(
            root["CLAIMS_RISK_LAKE_ROOT"],
            root["CLAIMS_RISK_LAKE_DATABASE"],
            root["CLAIMS_RISK_LAKE_WORKGROUP"],
        )
        yield lake, recorder.calls, queries


def run_lake(lake: AthenaLake, queries: list[str]) -> dict[str, list[str]]:
    """Every kind of call the jobs make: a partition written, replaced and emptied, a training table
    with a new column, the catalog read, a query, a chunked (CTAS) query. Query ids by kind."""
    write_outcomes(lake, {"A": True, "B": False}, b"labels", "labels.csv")
    write_outcomes(lake, {"A": True, "B": False, "C": True}, b"labels", "labels.csv")
    lake.write(OUTCOMES, {"load_id": "emptied"}, [])
    lake.write(
        training_table("claims"), {"run_id": "r1"}, [pd.DataFrame({"claim_id": ["A"], "amount": [1.0]})]
    )
    frame = pd.DataFrame({"claim_id": ["A"], "amount": [1.0], "region": ["north"]})
    lake.write(training_table("claims"), {"run_id": "r2"}, [frame])
    assert "outcomes" in lake.tables() and lake.partitions("outcomes")
    before = len(queries)
    assert lake.query("SELECT count(*) AS n FROM outcomes")["n"].tolist() == [3]
    plain = queries[before:]
    assert [len(c) for c in lake.query_chunks('SELECT * FROM "training_claims"', chunk_rows=10)] == [1]
    return {"plain": plain, "ctas": queries[before + len(plain) :]}


@pytest.fixture(scope="module")
def lake_calls(
    deployments: dict[str, Deployment],
) -> dict[str, tuple[list[tuple[str, str, dict[str, Any]]], list[Need]]]:
    """Per stage: the adapter's recorded calls, and every permission they and Athena need."""
    found = {}
    for stage, deployment in deployments.items():
        config = stage_config(stage)
        key, bucket = deployment.substitutions["KmsKeyArn"], bucket_of(deployment)
        with moto_lake(deployment) as (lake, calls, queries):
            kinds = run_lake(lake, queries)
            recorded = list(calls)
        needs = [
            n
            for s, o, p in recorded
            for n in call_needs(s, o, p, config.lake_database, config.lake_workgroup, key)
        ]
        needs += athena_as_caller(config.lake_database, bucket, key, kinds["plain"], False, ["outcomes"])
        needs += athena_as_caller(config.lake_database, bucket, key, kinds["ctas"], True, ["training_claims"])
        found[stage] = (recorded, needs)
    return found


def test_the_lake_calls_are_valid_requests(lake_calls: dict[str, Any]) -> None:
    for recorded, _ in lake_calls.values():
        operations = {(s, o) for s, o, _ in recorded}
        assert {
            ("glue", "CreateTable"),
            ("glue", "UpdateTable"),
            ("glue", "BatchCreatePartition"),
            ("glue", "DeleteTable"),
            ("athena", "StartQueryExecution"),
            ("s3", "DeleteObjects"),
        } <= operations, operations
        assert not [e for s, o, p in recorded for e in request_errors(s, o, p)]


def test_the_job_role_allows_every_lake_call_on_its_resources(
    deployments: dict[str, Deployment], lake_calls: dict[str, Any]
) -> None:
    for stage, (_, needs) in lake_calls.items():
        deployment = deployments[stage]
        assert not missing(deployment, sagemaker_role(deployment), needs), stage


def test_the_job_role_allows_nothing_of_glue_and_athena_beyond_the_lakes_calls(
    deployments: dict[str, Deployment], lake_calls: dict[str, Any]
) -> None:
    for stage, (_, needs) in lake_calls.items():
        deployment = deployments[stage]
        statements = deployment.identity_statements(sagemaker_role(deployment))
        lake = [
            s
            for s in statements
            if any(str(a).startswith(("glue:", "athena:")) for a in _listed(s["Action"]))
        ]
        granted = {a for s in lake for a in _listed(s["Action"])}
        assert granted == {n.action for n in needs if n.action.startswith(("glue:", "athena:"))}, stage
        assert all("*" not in _listed(s["Resource"]) for s in lake)
        for action in granted:  # each an action AWS has: the service's API operation of that name
            service, operation = action.split(":")
            assert operation in service_model(service).operation_names, action


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_job_role_cannot_drop_lake_tables_or_reach_another_database(
    stage: str, deployments: dict[str, Deployment]
) -> None:
    deployment = deployments[stage]
    config = stage_config(stage)
    statements = deployment.identity_statements(sagemaker_role(deployment))
    own, other = config.lake_database, stage_config("prod" if stage == "dev" else "dev").lake_database
    assert allows(statements, "glue:DeleteTable", glue_arn(f"table/{own}/temp_table_0a1b"))
    for table in ("training_claims", "inferences", "outcomes"):
        assert not allows(statements, "glue:DeleteTable", glue_arn(f"table/{own}/{table}"))
    assert not allows(statements, "glue:CreateTable", glue_arn(f"table/{other}/outcomes"))
    assert not allows(statements, "glue:CreateDatabase", glue_arn("database/default"))
    other_workgroup = f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/primary"
    assert not allows(statements, "athena:StartQueryExecution", other_workgroup)
    bucket = bucket_of(deployment)
    assert not allows(statements, "s3:DeleteObject", f"arn:aws:s3:::{bucket}/models/current/model.tar.gz")
