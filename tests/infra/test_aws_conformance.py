"""AWS conformance (issue 11): the stack checked against AWS's own definitions, not ours.

- Every request the retraining state machine builds is resolved by an ASL interpreter
  (tests/infra/asl.py) on every path through the machine (each Choice branch, each Catch), from
  ``{}`` and from a full input, and validated against botocore's service model of its integration;
  so is every AWS call the Lambda functions make (the drift trigger, the batch trigger, the pipeline
  tasks). Validation is botocore's own ``ParamValidator`` plus the model's constraints it leaves to the
  service (maximum lengths and values, patterns, enums).
- What each integration needs of IAM comes from AWS's documented requirements (tables below, each
  row citing its page), checked against the synthesized roles with a small IAM evaluator.
- Every S3 input of every SageMaker job is listable and readable by the role that reads it (and its
  KMS key usable); every output writable.
- Two syntheses of the same commit give identical templates and asset hashes.
- Template facts the other infra tests do not pin: the managed rules' names, the state machine's
  creation order, the drift schedule.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import functools
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import boto3
import botocore.session
import pytest
from botocore.model import OperationModel, ServiceModel, Shape
from botocore.validate import ParamValidator
from moto import mock_aws

from cdk.config import stage_config
from cdk.endpoint import guardrails
from step_functions.pipeline import PipelineInputs, job_arguments, prepare_run
from step_functions.pipeline import step as pipeline_step
from step_functions.state_machine import PLACEHOLDERS, definition_json
from tests.aws_fakes import FakeLambdaContext, offline_credentials
from tests.infra import asl
from tests.infra.conftest import Synthesized

ACCOUNT: Final = "123456789012"
REGION: Final = "eu-west-1"
PARTITION: Final = "aws"
NOW: Final = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
EXECUTION_NAME: Final = "3f2c9a4e-7b1d-4c8e-9f60-2d5b8e1a7c34"  # a console start's generated name

# -- AWS's documented requirements ----------------------------------------------------------------

STEP_FUNCTIONS_SAGEMAKER_IAM: Final = (
    "https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html"
)
SAGEMAKER_API_PERMISSIONS: Final = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/api-permissions-reference.html"
)
SDK_INTEGRATION_IAM: Final = (
    "https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html"
)
LAMBDA_IAM: Final = "https://docs.aws.amazon.com/step-functions/latest/dg/lambda-iam.html"
SNS_IAM: Final = "https://docs.aws.amazon.com/step-functions/latest/dg/sns-iam.html"
SNS_SSE: Final = "https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html"
S3_ACTIONS: Final = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-with-s3-policy-actions.html"
S3_KMS: Final = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html"
AUTOSCALING_PREREQUISITES: Final = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-prerequisites.html"
)
# What registering an endpoint variant's scaling needs besides Application Auto Scaling's own actions
# (SageMaker's "Auto scaling prerequisites": Application Auto Scaling acts on the caller's behalf).
AUTOSCALING_ON_BEHALF: Final = {
    "RegisterScalableTarget": (
        "sagemaker:DescribeEndpoint",
        "sagemaker:DescribeEndpointConfig",
        "sagemaker:UpdateEndpointWeightsAndCapacities",
    ),
    "PutScalingPolicy": ("cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"),
}
AUTOSCALING_SERVICE: Final = "sagemaker.application-autoscaling.amazonaws.com"
# "the maximum input or result data size for a task ... 256 KiB of data as a UTF-8 encoded string when
# you send to, or receive data from, another service" (the developer guide's service pages, Quotas).
TASK_DATA_LIMIT: Final = 262_144


@dataclass(frozen=True)
class SyncRequirement:
    """What a ``.sync`` SageMaker integration needs of the state machine's role (Run a Job, static
    resources): the job's actions on the job, ``sagemaker:ListTags``, ``iam:PassRole`` of the job's
    role to SageMaker, and ``events:PutTargets/PutRule/DescribeRule`` on the managed rule."""

    resource_type: str  # the job's ARN resource type
    name_field: tuple[str, ...]  # where the request names the job
    actions: tuple[str, ...]
    rule: str  # the EventBridge rule Step Functions manages for the job kind
    role_field: tuple[str, ...] | None  # where the request names the role it passes
    doc: str = STEP_FUNCTIONS_SAGEMAKER_IAM


SYNC_REQUIREMENTS: Final = {
    "arn:aws:states:::sagemaker:createTrainingJob.sync": SyncRequirement(
        "training-job",
        ("TrainingJobName",),
        ("sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"),
        "StepFunctionsGetEventsForSageMakerTrainingJobsRule",
        ("RoleArn",),
    ),
    "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync": SyncRequirement(
        "hyper-parameter-tuning-job",
        ("HyperParameterTuningJobName",),
        (
            "sagemaker:CreateHyperParameterTuningJob",
            "sagemaker:DescribeHyperParameterTuningJob",
            "sagemaker:StopHyperParameterTuningJob",
            "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
        ),
        "StepFunctionsGetEventsForSageMakerTuningJobsRule",
        ("TrainingJobDefinition", "RoleArn"),
    ),
    "arn:aws:states:::sagemaker:createProcessingJob.sync": SyncRequirement(
        "processing-job",
        ("ProcessingJobName",),
        ("sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob"),
        "StepFunctionsGetEventsForSageMakerProcessingJobsRule",
        ("RoleArn",),
    ),
    "arn:aws:states:::sagemaker:createTransformJob.sync": SyncRequirement(
        "transform-job",
        ("TransformJobName",),
        ("sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob", "sagemaker:StopTransformJob"),
        "StepFunctionsGetEventsForSageMakerTransformJobsRule",
        None,  # a transform job runs as its model's role: the request passes none
    ),
}
SYNC_COMMON_ACTIONS: Final = ("sagemaker:ListTags",)  # on "*" in the page's policies
SYNC_RULE_ACTIONS: Final = ("events:PutTargets", "events:PutRule", "events:DescribeRule")
WRONG_TUNING_RULE: Final = "StepFunctionsGetEventsForSageMakerHyperParameterTuningJobsRule"

# SageMaker's API permissions reference: kms:CreateGrant "required only if the associated
# ResourceConfig/ProcessingResources/TransformResources has a specified VolumeKmsKeyId and the
# associated role does not have a policy that permits this action", and for CreateEndpoint "required
# only if the associated EndPointConfig has a KmsKeyId specified".
VOLUME_KEY_FIELDS: Final = {
    "CreateProcessingJob": ("ProcessingResources", "ClusterConfig", "VolumeKmsKeyId"),
    "CreateTrainingJob": ("ResourceConfig", "VolumeKmsKeyId"),
    "CreateHyperParameterTuningJob": ("TrainingJobDefinition", "ResourceConfig", "VolumeKmsKeyId"),
    "CreateTransformJob": ("TransformResources", "VolumeKmsKeyId"),
}
# Where a SageMaker request names the resource its IAM action applies to (the API permissions
# reference's Resources column): (resource type, request field); None for "*".
SAGEMAKER_RESOURCES: Final[dict[str, tuple[str, str] | None]] = {
    "CreateModel": ("model", "ModelName"),
    "CreateEndpointConfig": ("endpoint-config", "EndpointConfigName"),
    "CreateEndpoint": ("endpoint", "EndpointName"),
    "UpdateEndpoint": ("endpoint", "EndpointName"),
    "DescribeEndpoint": ("endpoint", "EndpointName"),
    "DescribeEndpointConfig": ("endpoint-config", "EndpointConfigName"),
    "ListEndpoints": None,
    "DescribeModelPackage": ("model-package", "ModelPackageName"),
    "CreateProcessingJob": ("processing-job", "ProcessingJobName"),
    "CreateTrainingJob": ("training-job", "TrainingJobName"),
    "CreateTransformJob": ("transform-job", "TransformJobName"),
    "CreateModelPackageGroup": ("model-package-group", "ModelPackageGroupName"),
    "DescribeModelPackageGroup": ("model-package-group", "ModelPackageGroupName"),
    "UpdateModelPackage": ("model-package", "ModelPackageArn"),
}
# Requests that pass a role to SageMaker (iam:PassRole, the API permissions reference).
PASSED_ROLE_FIELDS: Final = {
    "CreateModel": ("ExecutionRoleArn",),
    "CreateProcessingJob": ("RoleArn",),
    "CreateTrainingJob": ("RoleArn",),
    "CreateHyperParameterTuningJob": ("TrainingJobDefinition", "RoleArn"),
}


# -- botocore's service models ----------------------------------------------------------------------


@functools.cache
def botocore_session() -> Any:
    return botocore.session.get_session()


@functools.cache
def service_model(name: str) -> ServiceModel:
    model: ServiceModel = botocore_session().get_service_model(name)
    return model


@functools.cache
def sdk_service(name: str) -> str:
    """The botocore service behind an ``aws-sdk:<name>:`` integration: the SDKs name it after the
    model's serviceId (``Application Auto Scaling`` → ``applicationautoscaling``)."""
    for candidate in botocore_session().get_available_services():
        if candidate.replace("-", "") == name:
            service_id = service_model(candidate).metadata["serviceId"]
            if service_id.replace(" ", "").replace("-", "").lower() == name:
                return str(candidate)
    raise LookupError(f"no AWS service is named {name!r} in the SDK")


@dataclass(frozen=True)
class Integration:
    resource: str
    service: str  # botocore's name
    operation: str  # the API's name
    sdk: bool
    pattern: str  # "" (request-response), ".sync" or ".waitForTaskToken"

    @property
    def model(self) -> OperationModel:
        return service_model(self.service).operation_model(self.operation)

    @property
    def iam_action(self) -> str:
        return f"{service_model(self.service).signing_name}:{self.operation}"


_RESOURCE = re.compile(
    r"arn:aws:states:::(?P<sdk>aws-sdk:)?(?P<service>[a-z0-9-]+):(?P<action>[a-zA-Z0-9]+)"
    r"(?P<pattern>\.sync(:2)?|\.waitForTaskToken)?"
)
OPTIMIZED: Final = {"sagemaker": "sagemaker", "lambda": "lambda", "sns": "sns"}


def integration(resource: str) -> Integration:
    """The API call behind a Task's Resource; an integration AWS does not have raises."""
    found = _RESOURCE.fullmatch(resource)
    if not found:
        raise LookupError(f"{resource} is not a Step Functions service integration")
    sdk = bool(found["sdk"])
    service = sdk_service(found["service"]) if sdk else OPTIMIZED[found["service"]]
    action = found["action"]
    operation = action[0].upper() + action[1:]
    if operation not in service_model(service).operation_names:
        raise LookupError(f"{service} has no operation {operation} ({resource})")
    return Integration(resource, service, operation, sdk, found["pattern"] or "")


def api_request(target: Integration, parameters: Any) -> dict[str, Any]:
    """The API request a Task's resolved Parameters become: the optimized Lambda and SNS
    integrations serialize a JSON Payload or Message (the developer guide's examples pass objects)."""
    request = copy.deepcopy(parameters)
    if target.service == "lambda" and not isinstance(request.get("Payload"), str | bytes):
        request["Payload"] = json.dumps(request["Payload"]).encode()
    if target.service == "sns" and not isinstance(request.get("Message"), str):
        request["Message"] = json.dumps(request["Message"])
    return dict(request)


# -- validation against the model ------------------------------------------------------------------


def java_regex(pattern: str) -> str:
    """A Java regular expression of a service model, in Python's dialect: Unicode classes widened
    to Python's nearest (never narrower), surrogate-pair ranges as code points."""
    pattern = pattern.replace(r"\uD800\uDC00-\uDBFF\uDFFF", r"\U00010000-\U0010FFFF")
    pattern = re.sub(r"\$\{\d+,\d+\}", "$", pattern)  # a quantified end anchor: Java ignores it
    classes = {
        "L": r"\w",
        "N": r"\w",
        "M": r"\w",
        "Alnum": "a-zA-Z0-9",
        "Z": r"\s",
        "S": r"\W",
        "P": r"\W",
        "Print": r"\x20-\x7E",
        "ASCII": r"\x00-\x7F",
    }
    out = ""
    inside = False
    position = 0
    while position < len(pattern):
        char = pattern[position]
        unicode_class = re.compile(r"\\p\{(\w+)\}").match(pattern, position)
        if unicode_class:
            body = classes.get(unicode_class.group(1), r"\s\S")  # a class not listed: anything
            out += body if inside else f"[{body}]"
            position = unicode_class.end()
            continue
        if char == "\\":
            escaped = pattern[position : position + 2]
            out += r"\Z" if escaped == r"\z" else escaped  # Java's end of input
            position += 2
            continue
        if char == "[" and not inside:
            inside = True
        elif char == "]" and inside:
            inside = False
        out += char
        position += 1
    return out


@functools.cache
def compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(java_regex(pattern), flags=re.DOTALL)


def constraint_errors(shape: Shape, value: Any, where: str) -> list[str]:
    """The model's constraints botocore leaves to the service: maximum lengths and values,
    patterns (matched whole) and enums. (Types, required members and minimums: ParamValidator.)"""
    errors: list[str] = []
    metadata = shape.metadata
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            if name in value:
                errors += constraint_errors(member, value[name], f"{where}.{name}")
        return errors
    if kind == "list" and isinstance(value, list):
        if "max" in metadata and len(value) > metadata["max"]:
            errors.append(f"{where}: {len(value)} items, at most {metadata['max']}")
        for position, item in enumerate(value):
            errors += constraint_errors(shape.member, item, f"{where}[{position}]")  # type: ignore[attr-defined]
        return errors
    if kind == "map" and isinstance(value, dict):
        if "max" in metadata and len(value) > metadata["max"]:
            errors.append(f"{where}: {len(value)} entries, at most {metadata['max']}")
        for key, item in value.items():
            errors += constraint_errors(shape.key, key, f"{where} key {key!r}")  # type: ignore[attr-defined]
            errors += constraint_errors(shape.value, item, f"{where}[{key!r}]")  # type: ignore[attr-defined]
        return errors
    if kind == "string" and isinstance(value, str):
        if "max" in metadata and len(value) > metadata["max"]:
            errors.append(f"{where}: {len(value)} characters, at most {metadata['max']}: {value!r}")
        if "min" in metadata and len(value) < metadata["min"]:
            errors.append(f"{where}: {len(value)} characters, at least {metadata['min']}")
        enum = metadata.get("enum")
        if enum and value not in enum:
            errors.append(f"{where}: {value!r} is not one of {enum}")
        if "pattern" in metadata and not compiled(metadata["pattern"]).fullmatch(value):
            errors.append(f"{where}: {value!r} does not match {metadata['pattern']!r}")
        return errors
    if kind in ("integer", "long", "float", "double") and isinstance(value, int | float):
        if "max" in metadata and value > metadata["max"]:
            errors.append(f"{where}: {value} is above {metadata['max']}")
        if "min" in metadata and value < metadata["min"]:
            errors.append(f"{where}: {value} is below {metadata['min']}")
    if kind == "blob" and isinstance(value, bytes) and "max" in metadata and len(value) > metadata["max"]:
        errors.append(f"{where}: {len(value)} bytes, at most {metadata['max']}")
    return errors


def request_errors(service: str, operation: str, params: Mapping[str, Any]) -> list[str]:
    """botocore's validation of a request, and the model's other constraints."""
    shape = input_shape(service, operation)
    report = ParamValidator().validate(dict(params), shape)
    errors = [report.generate_report()] if report.has_errors() else []
    return errors + constraint_errors(shape, params, f"{service}.{operation}")


def input_shape(service: str, operation: str) -> Any:
    shape = service_model(service).operation_model(operation).input_shape
    assert shape is not None, (service, operation)
    return shape


def response_errors(service: str, operation: str, response: Mapping[str, Any]) -> list[str]:
    model = service_model(service).operation_model(operation)
    if model.output_shape is None:
        return []
    report = ParamValidator().validate(dict(response), model.output_shape)
    return [report.generate_report()] if report.has_errors() else []


# -- a deployment of a synthesized template, in a fake account -------------------------------------


class Deployment:
    """One synthesized stack as CloudFormation would deploy it in account 123456789012, eu-west-1:
    intrinsic functions resolved, every resource a deterministic physical name."""

    def __init__(self, synthesized: Synthesized) -> None:
        self.stage = synthesized.stage
        self.directory = synthesized.directory
        self.template: dict[str, Any] = synthesized.template_json
        self.resources: dict[str, dict[str, Any]] = self.template["Resources"]
        self.stack_name = f"ClaimsRisk-{self.stage}"

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.resources.items() if r["Type"] == kind}

    def one(self, kind: str) -> tuple[str, dict[str, Any]]:
        [(name, resource)] = self.of_type(kind).items()
        return name, resource

    # physical names

    def _name(self, logical: str, limit: int = 64, *, lower: bool = False) -> str:
        name = f"{self.stack_name}-{logical}"[:limit]
        return name.lower() if lower else name

    def _given(self, logical: str, prop: str) -> str | None:
        value = self.resources[logical].get("Properties", {}).get(prop)
        return None if value is None else str(self.resolve(value))

    def ref(self, logical: str) -> Any:
        if logical.startswith("AWS::"):
            return {
                "AWS::Partition": PARTITION,
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT,
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackName": self.stack_name,
                "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{self.stack_name}/"
                "5f0a1c20-cafe-11ee-9c3d-0a1b2c3d4e5f",
                "AWS::NoValue": None,
            }[logical]
        if logical in self.template.get("Parameters", {}):
            return self.template["Parameters"][logical].get("Default", "")
        kind = self.resources[logical]["Type"]
        if kind == "AWS::S3::Bucket":
            return self._given(logical, "BucketName") or self._name(logical, 63, lower=True)
        if kind == "AWS::IAM::Role":
            return self._given(logical, "RoleName") or self._name(logical)
        if kind == "AWS::KMS::Key":
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.stack_name}/{logical}"))
        if kind == "AWS::Lambda::Function":
            return self._given(logical, "FunctionName") or self._name(logical)
        if kind == "AWS::SNS::Topic":
            name = self._given(logical, "TopicName") or self._name(logical)
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}"
        if kind == "AWS::StepFunctions::StateMachine":
            name = self._given(logical, "StateMachineName") or self._name(logical)
            return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self._name(logical, 80)}"
        if kind == "AWS::DynamoDB::Table":
            return self._given(logical, "TableName") or self._name(logical)
        if kind == "AWS::Logs::LogGroup":
            return self._given(logical, "LogGroupName") or self._name(logical)
        if kind == "AWS::Events::Rule":
            return self._given(logical, "Name") or self._name(logical)
        return f"{logical}-physical-id"

    def attribute(self, logical: str, attribute: str) -> Any:
        kind = self.resources[logical]["Type"]
        name = self.ref(logical)
        arns = {
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
            "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{name}",
            "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{str(name).rsplit('/', 1)[-1]}",
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::Events::Rule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}",
            "AWS::SNS::Topic": name,
            "AWS::StepFunctions::StateMachine": name,
        }
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        if kind == "AWS::SNS::Topic" and attribute == "TopicName":
            return str(name).rsplit(":", 1)[-1]
        if kind == "AWS::SQS::Queue" and attribute == "QueueName":
            return str(name).rsplit("/", 1)[-1]
        return f"{logical}.{attribute}"

    def resolve(self, value: Any) -> Any:
        """A template value with its intrinsic functions (Ref, GetAtt, Join, Sub, Select, Split,
        FindInMap) evaluated; ``AWS::NoValue`` drops the key or item."""
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not None]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            [(function, argument)] = value.items()
            if function == "Ref":
                return self.ref(argument)
            if function == "Fn::GetAtt":
                logical, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.attribute(logical, attribute)
            if function == "Fn::Join":
                separator, items = argument
                return str(separator).join(str(self.resolve(i)) for i in self.resolve(items))
            if function == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if function == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(separator)
            if function == "Fn::FindInMap":
                mapping, first, second = (self.resolve(a) for a in argument)
                return self.template["Mappings"][mapping][first][second]
            if function == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                variables = {k: self.resolve(v) for k, v in variables.items()}

                def substituted(found: re.Match[str]) -> str:
                    name = found.group(1)
                    if name in variables:
                        return str(variables[name])
                    if "." in name and not name.startswith("AWS::"):
                        logical, attribute = name.split(".", 1)
                        return str(self.attribute(logical, attribute))
                    return str(self.ref(name))

                return re.sub(r"\$\{([^}!]+)\}", substituted, text)
            if function.startswith("Fn::"):
                raise NotImplementedError(f"{function} is not resolved by this test")
        return {k: r for k, r in ((k, self.resolve(v)) for k, v in value.items()) if r is not None}

    # what the tests look up

    def logical_by_arn(self, kind: str, arn: str) -> str:
        for logical in self.of_type(kind):
            if self.attribute(logical, "Arn") == arn:
                return logical
        raise LookupError(f"no {kind} has the ARN {arn}")

    def identity_statements(self, role: str) -> list[dict[str, Any]]:
        """Every statement of the role's identity policies (its policy resources and inline ones)."""
        statements: list[dict[str, Any]] = []
        for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for policy in self.of_type(kind).values():
                if {"Ref": role} in policy["Properties"].get("Roles", []):
                    statements += self.resolve(policy["Properties"]["PolicyDocument"])["Statement"]
        for inline in self.resources[role]["Properties"].get("Policies", []):
            statements += self.resolve(inline["PolicyDocument"])["Statement"]
        return statements

    def role_of_function(self, handler: str) -> str:
        [function] = [
            f
            for f in self.of_type("AWS::Lambda::Function").values()
            if f["Properties"].get("Handler") == handler
        ]
        role: str = function["Properties"]["Role"]["Fn::GetAtt"][0]
        return role

    def function_environment(self, handler: str) -> dict[str, str]:
        [function] = [
            f
            for f in self.of_type("AWS::Lambda::Function").values()
            if f["Properties"].get("Handler") == handler
        ]
        variables: dict[str, str] = self.resolve(function["Properties"]["Environment"]["Variables"])
        return {k: str(v) for k, v in variables.items()}

    @functools.cached_property
    def buckets(self) -> dict[str, str]:
        """Bucket name → logical id."""
        return {self.ref(logical): logical for logical in self.of_type("AWS::S3::Bucket")}

    def bucket_key(self, bucket: str) -> str | None:
        """The KMS key ARN a bucket encrypts with by default (None: S3-managed keys)."""
        if bucket not in self.buckets:
            return None  # not the stack's
        properties = self.resources[self.buckets[bucket]]["Properties"]
        rules = properties.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
        for rule in rules:
            default = rule.get("ServerSideEncryptionByDefault", {})
            if default.get("SSEAlgorithm") == "aws:kms":
                return str(self.resolve(default["KMSMasterKeyID"]))
        return None

    def bucket_policy(self, bucket: str) -> list[dict[str, Any]]:
        logical = self.buckets.get(bucket)
        statements: list[dict[str, Any]] = []
        for policy in self.of_type("AWS::S3::BucketPolicy").values():
            if policy["Properties"]["Bucket"] == {"Ref": logical}:
                statements += self.resolve(policy["Properties"]["PolicyDocument"])["Statement"]
        return statements

    def key_policy(self, key_arn: str) -> list[dict[str, Any]]:
        logical = self.logical_by_arn("AWS::KMS::Key", key_arn)
        statements: list[dict[str, Any]] = self.resolve(self.resources[logical]["Properties"]["KeyPolicy"])[
            "Statement"
        ]
        return statements

    def depends_on(self, name: str, target: str) -> bool:
        """Whether CloudFormation creates ``target`` before ``name`` (DependsOn or a reference)."""
        seen: set[str] = set()
        pending = [name]
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            resource = self.resources[current]
            direct = resource.get("DependsOn", [])
            direct = [direct] if isinstance(direct, str) else list(direct)
            text = json.dumps(resource.get("Properties", {}))
            direct += re.findall(r'"Ref": "([A-Za-z0-9]+)"', text)
            direct += re.findall(r'"Fn::GetAtt": \["([A-Za-z0-9]+)"', text)
            direct += re.findall(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z]+)?\}", text)
            direct = [d for d in direct if d in self.resources]
            if target in direct:
                return True
            pending += direct
        return False

    # the state machine as deployed

    @functools.cached_property
    def machine(self) -> tuple[str, dict[str, Any]]:
        return self.one("AWS::StepFunctions::StateMachine")

    @functools.cached_property
    def substitutions(self) -> dict[str, str]:
        values: dict[str, Any] = self.resolve(self.machine[1]["Properties"]["DefinitionSubstitutions"])
        return {k: str(v) for k, v in values.items()}

    @functools.cached_property
    def definition(self) -> dict[str, Any]:
        """The ASL Step Functions runs: the definition with DefinitionSubstitutions filled in."""
        return substituted(self.machine[1]["Properties"]["DefinitionString"], self.substitutions)

    @functools.cached_property
    def machine_role(self) -> str:
        role: str = self.machine[1]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
        return role


def substituted(asl_text: str, values: Mapping[str, str]) -> dict[str, Any]:
    """``${Name}`` replaced as Step Functions' DefinitionSubstitutions does."""
    missing = set(re.findall(r"\$\{(\w+)\}", asl_text)) - set(values)
    assert not missing, f"no value for {sorted(missing)}"
    document: dict[str, Any] = json.loads(re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], asl_text))
    return document


# -- IAM evaluation -------------------------------------------------------------------------------


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _condition_holds(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    """IAM's condition operators the stack uses; a key missing from the request fails a positive
    operator and satisfies a negated one."""
    keys = {k.lower(): v for k, v in context.items()}
    for operator, tests in conditions.items():
        for key, expected in tests.items():
            given = keys.get(key.lower())
            values = [str(v) for v in _listed(expected)]
            if operator == "Null":
                holds = (given is None) == (values[0].lower() == "true")
            elif given is None:
                holds = operator.startswith(("StringNot", "ArnNot"))
            elif operator in ("StringEquals", "ArnEquals"):
                holds = given in values
            elif operator == "StringEqualsIgnoreCase":
                holds = given.lower() in (v.lower() for v in values)
            elif operator in ("StringLike", "ArnLike"):
                holds = any(_wildcard(v, given) for v in values)
            elif operator in ("StringNotEquals", "ArnNotEquals"):
                holds = given not in values
            elif operator in ("StringNotLike", "ArnNotLike"):
                holds = not any(_wildcard(v, given) for v in values)
            elif operator == "Bool":
                holds = given.lower() in (v.lower() for v in values)
            else:
                raise NotImplementedError(f"IAM condition operator {operator}")
            if not holds:
                return False
    return True


def _applies(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    if "Action" in statement:
        if not any(_wildcard(a, action, ignore_case=True) for a in _listed(statement["Action"])):
            return False
    elif any(_wildcard(a, action, ignore_case=True) for a in _listed(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_wildcard(r, resource) for r in _listed(statement["Resource"])):
            return False
    elif "NotResource" in statement and any(
        _wildcard(r, resource) for r in _listed(statement["NotResource"])
    ):
        return False
    return _condition_holds(statement.get("Condition", {}), context)


def allows(
    statements: list[dict[str, Any]], action: str, resource: str, context: Mapping[str, str] | None = None
) -> bool:
    """An explicit Allow and no explicit Deny among ``statements``."""
    context = context or {}
    matching = [s for s in statements if _applies(s, action, resource, context)]
    return any(s["Effect"] == "Allow" for s in matching) and not any(s["Effect"] == "Deny" for s in matching)


def denies(statements: list[dict[str, Any]], action: str, resource: str, context: Mapping[str, str]) -> bool:
    return any(s["Effect"] == "Deny" and _applies(s, action, resource, context) for s in statements)


@dataclass(frozen=True)
class Need:
    """One permission a call needs: an action on a resource, in a request context, and why."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    why: str = ""

    def describe(self) -> str:
        context = f" with {dict(self.context)}" if self.context else ""
        return f"{self.action} on {self.resource}{context} ({self.why})"


def missing(deployment: Deployment, role: str, needs: list[Need]) -> list[str]:
    statements = deployment.identity_statements(role)
    return sorted(
        {n.describe() for n in needs if not allows(statements, n.action, n.resource, dict(n.context))}
    )


def sagemaker_arn(resource_type: str, name: str) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{resource_type}/{name.lower()}"


def field_at(request: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = request
    for step in path:
        if not isinstance(value, Mapping) or step not in value:
            return None
        value = value[step]
    return value


PASS_TO_SAGEMAKER: Final = (("iam:PassedToService", "sagemaker.amazonaws.com"),)


def sagemaker_call_needs(operation: str, request: Mapping[str, Any], why: str) -> list[Need]:
    """What a SageMaker API call needs of its caller (the API permissions reference)."""
    needs: list[Need] = []
    where = SAGEMAKER_RESOURCES.get(operation, ("*", ""))
    resource = "*" if where is None else sagemaker_arn(where[0], str(request.get(where[1], "")))
    needs.append(Need(f"sagemaker:{operation}", resource, why=why))
    if operation == "CreateEndpoint":
        endpoint_config = sagemaker_arn("endpoint-config", request["EndpointConfigName"])
        needs.append(Need("sagemaker:CreateEndpoint", endpoint_config, why=why))
    if operation == "CreateModelPackage":  # a version of a group: the group and its versions
        group = str(request["ModelPackageGroupName"])
        needs = [
            Need("sagemaker:CreateModelPackage", sagemaker_arn("model-package-group", group), why=why),
            Need("sagemaker:CreateModelPackage", sagemaker_arn("model-package", f"{group}/1"), why=why),
        ]
    if request.get("Tags"):  # tags given at creation are added with AddTags's permission
        needs.append(Need("sagemaker:AddTags", resource, why=f"{why}: Tags"))
    role_field = PASSED_ROLE_FIELDS.get(operation)
    if role_field:
        needs.append(Need("iam:PassRole", str(field_at(request, role_field)), PASS_TO_SAGEMAKER, why))
    return needs


# -- synthesized responses, in the shapes AWS returns -----------------------------------------------


def arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


def echo(target: Integration, request: Mapping[str, Any], output_operation: str) -> dict[str, Any]:
    """The request's members that the Describe operation's output repeats."""
    output = service_model(target.service).operation_model(output_operation).output_shape
    assert output is not None
    return {k: copy.deepcopy(v) for k, v in request.items() if k in output.members}


def tuned_hyperparameters(ranges: Mapping[str, list[dict[str, Any]]]) -> dict[str, str]:
    """A best trial's values: inside each range, as the tuner reports them (strings)."""
    values = {r["Name"]: r["Values"][-1] for r in ranges.get("CategoricalParameterRanges", [])}
    for r in ranges.get("IntegerParameterRanges", []):
        values[r["Name"]] = str((int(r["MinValue"]) + int(r["MaxValue"])) // 2)
    for r in ranges.get("ContinuousParameterRanges", []):
        values[r["Name"]] = repr((float(r["MinValue"]) + float(r["MaxValue"])) / 2)
    return values


@dataclass
class Scenario:
    """A run's input and what AWS answers along the way."""

    name: str
    start: dict[str, Any]
    outcome: str  # the last state entered
    gates_pass: bool = True
    endpoint_exists: bool = True
    other_endpoints: tuple[str, ...] = ()  # the account's other endpoints (names may contain ours)
    endpoint_statuses: tuple[str, ...] = ("InService",)  # DescribeEndpoint's answers, in turn
    serves_new_config: bool = True
    approval: str = "Approved"
    fail: str | None = None  # a Task state whose call fails
    execution_name: str = EXECUTION_NAME


@dataclass
class ServiceCall:
    state: str
    target: Integration
    request: dict[str, Any]


@dataclass
class LambdaWorld:
    """The pipeline-tasks handler's real results (run once in moto) and the AWS calls it made."""

    results: dict[str, dict[str, Any]]
    calls: list[tuple[str, str, dict[str, Any]]]
    run: Callable[[dict[str, Any]], dict[str, Any]] | None = None


class FakeAws:
    """Step Functions' integrations for one execution: records each request and answers it as the
    service would (the response validated against the operation's output shape)."""

    def __init__(self, scenario: Scenario, world: LambdaWorld, bucket: str) -> None:
        self.scenario = scenario
        self.bucket = bucket
        self.world = world
        self.calls: list[ServiceCall] = []
        self.statuses = list(scenario.endpoint_statuses)
        self.config_name = ""
        self.endpoint_exists = scenario.endpoint_exists

    def __call__(self, call: asl.TaskCall) -> Any:
        target = integration(call.resource)
        if call.state == self.scenario.fail:
            raise asl.TaskFailure(
                f"{service_model(target.service).service_id}.ServiceException", "fails here"
            )
        request = api_request(target, call.parameters)
        self.calls.append(ServiceCall(call.state, target, request))
        response, extra = self.respond(target, request, call.parameters)
        # A .sync job's result is its Describe operation's answer once the job has ended.
        answered = (
            target.operation.replace("Create", "Describe", 1)
            if target.pattern == ".sync"
            else target.operation
        )
        errors = response_errors(target.service, answered, response)
        assert not errors, f"the fake {answered} answer is not in AWS's shape: {errors}"
        return {**as_states_json(response), **extra}

    def respond(self, target: Integration, request: dict[str, Any], parameters: Any) -> tuple[Any, Any]:
        operation = target.operation
        if target.service == "lambda":
            payload = parameters["Payload"]
            result = self.lambda_result(payload)
            response = {
                "StatusCode": 200,
                "ExecutedVersion": "$LATEST",
                "Payload": json.dumps(result).encode(),
            }
            return response, {"Payload": result, "SdkHttpMetadata": {"HttpStatusCode": 200}}
        if target.service == "sns":
            return {"MessageId": str(uuid.uuid5(uuid.NAMESPACE_URL, request["Message"]))}, {}
        if target.service == "application-autoscaling":
            if operation == "PutScalingPolicy":
                policy = arn("autoscaling", f"scalingPolicy:1a2b:resource/{request['ResourceId']}")
                alarm = f"TargetTracking-{request['ResourceId']}-AlarmHigh-0a1b2c3d"
                alarms = [{"AlarmName": alarm, "AlarmARN": arn("cloudwatch", f"alarm:{alarm}")}]
                return {"PolicyARN": policy, "Alarms": alarms}, {}
            return {"ScalableTargetARN": arn("application-autoscaling", "scalable-target/0a1b")}, {}
        return self.sagemaker(target, request), {}

    def lambda_result(self, payload: dict[str, Any]) -> dict[str, Any]:
        action = payload["action"]
        if self.world.run is not None:
            return self.world.run(payload)
        if action == "prepare":  # what the handler answers (test_the_prepare_task_is_one_the_handler_runs)
            return prepare_run(payload["input"])
        key = "gates-failed" if action == "gates" and not self.scenario.gates_pass else action
        return copy.deepcopy(self.world.results[key])

    def sagemaker(self, target: Integration, request: dict[str, Any]) -> dict[str, Any]:
        operation = target.operation
        if operation == "CreateProcessingJob":
            name = request["ProcessingJobName"]
            return {
                **echo(target, request, "DescribeProcessingJob"),
                "ProcessingJobArn": sagemaker_arn("processing-job", name),
                "ProcessingJobStatus": "Completed",
                "CreationTime": NOW,
                "ProcessingEndTime": NOW,
            }
        if operation == "CreateTrainingJob":
            name = request["TrainingJobName"]
            output = request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
            return {
                **echo(target, request, "DescribeTrainingJob"),
                "TrainingJobArn": sagemaker_arn("training-job", name),
                "TrainingJobStatus": "Completed",
                "SecondaryStatus": "Completed",
                "ModelArtifacts": {"S3ModelArtifacts": f"{output}/{name}/output/model.tar.gz"},
                "CreationTime": NOW,
            }
        if operation == "CreateHyperParameterTuningJob":
            name = request["HyperParameterTuningJobName"]
            trials = request["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"]
            best = f"{name}-{min(trials, 7):03d}-1a2b3c4d"
            ranges = request["HyperParameterTuningJobConfig"]["ParameterRanges"]
            return {
                **echo(target, request, "DescribeHyperParameterTuningJob"),
                "HyperParameterTuningJobArn": sagemaker_arn("hyper-parameter-tuning-job", name),
                "HyperParameterTuningJobStatus": "Completed",
                "CreationTime": NOW,
                "TrainingJobStatusCounters": {"Completed": trials},
                "ObjectiveStatusCounters": {"Succeeded": trials},
                "BestTrainingJob": {
                    "TrainingJobName": best,
                    "TrainingJobArn": sagemaker_arn("training-job", best),
                    "CreationTime": NOW,
                    "TrainingJobStatus": "Completed",
                    "TunedHyperParameters": tuned_hyperparameters(ranges),
                },
            }
        if operation == "CreateModel":
            return {"ModelArn": sagemaker_arn("model", request["ModelName"])}
        if operation == "CreateEndpointConfig":
            self.config_name = request["EndpointConfigName"]
            return {"EndpointConfigArn": sagemaker_arn("endpoint-config", request["EndpointConfigName"])}
        if operation in ("UpdateEndpoint", "DescribeEndpoint") and not self.endpoint_exists:
            name = request["EndpointName"]
            raise asl.TaskFailure("SageMaker.SageMakerException", f"Could not find endpoint {name}.")
        if operation in ("CreateEndpoint", "UpdateEndpoint"):
            self.endpoint_exists = True
            return {"EndpointArn": sagemaker_arn("endpoint", request["EndpointName"])}
        if operation == "ListEndpoints":
            # "returns only endpoints whose name contains the specified string", 10 by default, oldest first
            ours = request.get("NameContains", "")
            names = [*self.scenario.other_endpoints, *([ours] if self.endpoint_exists else [])]
            summaries = [
                {
                    "EndpointName": name,
                    "EndpointArn": sagemaker_arn("endpoint", name),
                    "CreationTime": NOW,
                    "LastModifiedTime": NOW,
                    "EndpointStatus": "InService",
                }
                for name in names
                if ours in name
            ]
            return {"Endpoints": summaries[: request.get("MaxResults", 10)]}
        if operation == "DescribeEndpoint":
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            serving = self.config_name if self.scenario.serves_new_config else "claims-risk-previous"
            return {
                "EndpointName": request["EndpointName"],
                "EndpointArn": sagemaker_arn("endpoint", request["EndpointName"]),
                "EndpointConfigName": serving,
                "EndpointStatus": status,
                "CreationTime": NOW,
                "LastModifiedTime": NOW,
            }
        if operation == "DescribeModelPackage":
            package = request["ModelPackageName"]
            group, version = package.rsplit("/", 2)[-2:]
            return {
                "ModelPackageName": group,
                "ModelPackageGroupName": group,
                "ModelPackageVersion": int(version),
                "ModelPackageArn": package,
                "CreationTime": NOW,
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": []},
                "ModelApprovalStatus": self.scenario.approval,
                "InferenceSpecification": {
                    "Containers": [
                        {
                            "Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/claims-risk:earlier",
                            "ModelDataUrl": f"s3://{self.bucket}/pipeline/runs/1f2e3d4c/model/"
                            "claims-risk-1f2e3d4c-train/output/model.tar.gz",
                        }
                    ],
                    "SupportedContentTypes": ["application/json"],
                    "SupportedResponseMIMETypes": ["application/json"],
                },
            }
        raise AssertionError(f"no fake answer for sagemaker {operation}")


def as_states_json(value: Any) -> Any:
    """A response as a Task receives it: JSON (timestamps as ISO 8601 strings, blobs as text)."""
    if isinstance(value, dict):
        return {k: as_states_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_states_json(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.decode()
    return value


# -- the runs: every path through the machine ------------------------------------------------------


def full_input() -> dict[str, Any]:
    """Every PipelineInputs field set (to values other than the defaults), but the model package."""
    start = {
        "spec": "claims",
        "tuning_trials": 7,
        "tuning_timeout_s": 900.5,
        "tuning_folds": 4,
        "tuning_max_rows": 5000,
        "hyperparameters": {"xgb_max_depth": 6, "model_family": "xgboost", "nn_epochs": 30},
        "cv_folds": 3,
        "costs": {"missed_high_risk": 9, "needless_review": 2},
        "gates": {
            "min_data_quality_score": 0.8,
            "metric_floors": {"roc_auc": 0.75, "pr_auc": 0.4, "recall": 0.6},
            "metric_ceilings": {"false_negative_rate": 0.35},
            "champion_metric": "roc_auc",
            "champion_tolerance": 0.02,
            "max_false_negative_rate_difference": 0.2,
            "min_selection_rate_ratio": 0.6,
            "max_replay_flip_rate": 0.05,
            "overrides": {"pr_auc_lift": 2.0, "recall_lift": None},  # what --gate sets
        },
        "seed": 11,
        "source": "glue:training_claims",  # the raw claims from the lake's table
        "replay_days": 3,  # the evaluation's replay of live traffic
    }
    PipelineInputs.model_validate(start)
    return start


MODEL_PACKAGE_ARN: Final = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/claims-risk-dev-models/7"


def test_the_full_input_sets_every_field() -> None:
    from shared.decision import DecisionCosts
    from shared.gates import GateConfig

    start = full_input()
    assert set(start) == set(PipelineInputs.model_fields) - {"model_package_arn"}
    assert set(start["gates"]) == set(GateConfig.model_fields)
    assert set(start["costs"]) == set(DecisionCosts.model_fields)
    defaults = PipelineInputs().model_dump(mode="json")
    assert all(start[name] != defaults[name] for name in start if name != "spec")  # one spec is built in
    assert PipelineInputs.model_validate(given_input()).model_package_arn == MODEL_PACKAGE_ARN


def given_input() -> dict[str, Any]:
    return {**full_input(), "model_package_arn": MODEL_PACKAGE_ARN}


def base_scenarios() -> list[Scenario]:
    return [
        Scenario("defaults", {}, "promoted"),
        Scenario("full input", full_input(), "promoted"),
        Scenario("given package", given_input(), "promoted"),
        Scenario("given package not approved", given_input(), "run failed", approval="PendingManualApproval"),
        Scenario("no search", {"tuning_trials": 0}, "promoted"),
        Scenario("gates refuse", {}, "not promoted", gates_pass=False),
        Scenario("first deployment", {}, "promoted", endpoint_exists=False),
        Scenario("first package deployment", given_input(), "promoted", endpoint_exists=False),
        Scenario(
            "slow rollout", full_input(), "promoted", endpoint_statuses=("Updating", "Updating", "InService")
        ),
        Scenario("rolled back", {}, "run failed", serves_new_config=False),
        Scenario("update failed", {}, "run failed", endpoint_statuses=("Failed",), serves_new_config=False),
    ]


def failing_scenarios(definition: Mapping[str, Any], reached: Mapping[str, Scenario]) -> list[Scenario]:
    """One run per Task state, failing there (each Catch), from a run that reaches it."""
    return [
        dataclasses.replace(reached[name], name=f"fails at {name}", fail=name, outcome="run failed")
        for name, state in definition["States"].items()
        if state["Type"] == "Task" and state.get("Catch")
    ]


@dataclass
class Walk:
    stage: str
    variant: str
    scenario: Scenario
    execution: asl.Execution
    calls: list[ServiceCall]


def walk(
    stage: str, variant: str, definition: Mapping[str, Any], scenario: Scenario, world: LambdaWorld
) -> Walk:
    fake = FakeAws(scenario, world, data_bucket(definition))
    draw = random.Random(scenario.name)
    execution = asl.run(
        definition,
        scenario.start,
        fake,
        name=scenario.execution_name,
        uuid=lambda: str(uuid.UUID(int=draw.getrandbits(128), version=4)),
    )
    return Walk(stage, variant, scenario, execution, fake.calls)


def data_bucket(definition: Mapping[str, Any]) -> str:
    """The data bucket the machine's jobs read (the raw claims' S3Uri names it)."""
    uri = definition["States"]["validate"]["Parameters"]["ProcessingInputs"][0]["S3Input"]["S3Uri.$"]
    found = re.search(r"s3://([^/]+)/", uri)
    assert found, uri
    return found.group(1)


def walk_all(stage: str, variant: str, definition: Mapping[str, Any], world: LambdaWorld) -> list[Walk]:
    walks = [walk(stage, variant, definition, s, world) for s in base_scenarios()]
    reached: dict[str, Scenario] = {}
    for done in walks:
        for name in done.execution.entered:
            reached.setdefault(name, done.scenario)
    walks += [walk(stage, variant, definition, s, world) for s in failing_scenarios(definition, reached)]
    return walks


# -- the pipeline-tasks Lambda, for real, in moto ---------------------------------------------------


def reports(gates_pass: bool) -> tuple[dict[str, Any], dict[str, Any], str]:
    """What the validate and evaluate jobs leave in a run folder: the data quality, the evaluation (a
    weak challenger's, or a good one's) and the report (the unit tests' examples)."""
    from tests.unit.test_challengers import REPORT
    from tests.unit.test_gates import GOOD_QUALITY, evaluation

    return GOOD_QUALITY, evaluation(**({} if gates_pass else {"roc_auc": 0.6})), REPORT


def model_archive(version: str) -> bytes:
    buffer = io.BytesIO()
    manifest = {"model_version": version, "family": "xgboost", "threshold": 0.2}
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in (
            (f"{version}/model.ubj", b"x" * 10),
            (f"{version}/manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@dataclass
class Recorder:
    """Every AWS call the clients of a boto3 session make: (service, operation, params)."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, params: dict[str, Any], model: OperationModel, **_: Any) -> None:
        self.calls.append((model.service_model.service_name, model.name, copy.deepcopy(params)))


@contextlib.contextmanager
def recorded_aws() -> Iterator[tuple[pytest.MonkeyPatch, Recorder, Any]]:
    """moto's AWS, offline; boto3's default session records every call its clients make. Yields the
    monkeypatch, the recorder, and a session that is not recorded (to seed moto with)."""
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        offline_credentials(patch, REGION)
        patch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
        patch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
        session = boto3.Session(region_name=REGION)
        # After botocore's own handlers (S3's CopySource, ...): the parameters it then validates and sends.
        session.events.register("before-parameter-build", recorder)
        patch.setattr(boto3, "DEFAULT_SESSION", session)
        yield patch, recorder, boto3.Session(region_name=REGION)


def split_s3_uri(uri: str) -> tuple[str, str]:
    found = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    assert found, uri
    return found.group(1), found.group(2)


def real_pipeline_tasks(deployment: Deployment) -> LambdaWorld:
    """Runs the machine once with the pipeline-tasks handler itself answering its Lambda tasks (in
    moto: S3 and the model registry), the gates once more on a weak challenger, and keeps what it
    returned and every AWS call it made."""
    from lambdas.pipeline_tasks import handler

    with recorded_aws() as (patch, recorder, seeding):
        patch.setenv("MLFLOW_TRACKING_URI", "")
        caches = (handler.artifact_store, handler.model_packages, handler.mlflow_registry)
        for cached in caches:
            cached.cache_clear()
        bucket = deployment.substitutions["DataBucket"]
        s3 = seeding.client("s3")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        world = LambdaWorld({}, recorder.calls)

        def put(uri: str, body: bytes) -> None:
            target_bucket, key = split_s3_uri(uri)
            s3.put_object(Bucket=target_bucket, Key=key, Body=body)

        def run_handler(payload: dict[str, Any], gates_pass: bool) -> dict[str, Any]:
            action = payload["action"]
            if action == "gates":  # what the validate and evaluate jobs left in the run folder
                quality, evaluation, report = reports(gates_pass)
                put(payload["quality"], json.dumps(quality).encode())
                put(payload["evaluation"], json.dumps(evaluation).encode())
                put(payload["evaluation"].rsplit("/", 1)[0] + "/report.html", report.encode())
            if action == "publish_card":  # what the training job wrote
                put(payload["model"], model_archive("v2"))
            result: dict[str, Any] = handler.lambda_handler(payload, FakeLambdaContext("claims-risk-tasks"))
            world.results["gates-failed" if action == "gates" and not gates_pass else action] = result
            return result

        for scenario in (
            Scenario("defaults", {}, "promoted"),
            Scenario("weak", {}, "not promoted", gates_pass=False),
        ):
            world.run = functools.partial(run_handler, gates_pass=scenario.gates_pass)
            done = walk(deployment.stage, "template", deployment.definition, scenario, world)
            assert done.execution.status == "SUCCEEDED", (done.execution.error, done.execution.cause)
        world.run = None
        for cached in caches:
            cached.cache_clear()
    return world


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployments(synthesized_stages: dict[str, Synthesized]) -> dict[str, Deployment]:
    return {stage: Deployment(s) for stage, s in synthesized_stages.items()}


@pytest.fixture(scope="module")
def world(deployments: dict[str, Deployment]) -> LambdaWorld:
    return real_pipeline_tasks(deployments["dev"])


def model_monitor_definition(deployment: Deployment) -> dict[str, Any]:
    """The definition with Model Monitor's baseline step (``-c model_monitor=true``), deployed alike."""
    with_monitor = guardrails(stage_config(deployment.stage), model_monitor=True)
    monitor_image = f"468650794304.dkr.ecr.{REGION}.amazonaws.com/sagemaker-model-monitor-analyzer"
    return substituted(
        definition_json(with_monitor), {**deployment.substitutions, "MonitorImage": monitor_image}
    )


@pytest.fixture(scope="module")
def walks(deployments: dict[str, Deployment], world: LambdaWorld) -> list[Walk]:
    done: list[Walk] = []
    for stage, deployment in deployments.items():
        done += walk_all(stage, "template", deployment.definition, world)
    done += walk_all("dev", "model monitor", model_monitor_definition(deployments["dev"]), world)
    return done


def walks_of(walks: list[Walk], stage: str, variant: str = "template") -> list[Walk]:
    return [w for w in walks if w.stage == stage and w.variant == variant]


# -- the interpreter itself ------------------------------------------------------------------------


def runtime(context: Any = None) -> asl.Runtime:
    return asl.Runtime(context=context or {"Execution": {"Name": "run-1"}}, uuid=lambda: "0a1b2c3d-4e5f")


def test_paths_read_what_they_name_and_fail_on_what_is_missing() -> None:
    data = {"a": {"b": [1, {"c": "x"}]}, "list": [{"n": 1}, {"n": 2}, {}], "d e": 3}
    context = {"Execution": {"Name": "run-1", "Input": {"k": 1}}}
    assert asl.read_path(data, "$", context) == data
    assert asl.read_path(data, "$.a.b[1].c", context) == "x"
    assert asl.read_path(data, "$.a.b[-1]", context) == {"c": "x"}
    assert asl.read_path(data, "$['d e']", context) == 3
    assert asl.read_path(data, "$.list[*].n", context) == [1, 2]
    assert asl.read_path(data, "$.list[?(@.n == 2)]", context) == [{"n": 2}]
    assert asl.read_path(data, "$.list[?(@.n == 3)].n", context) == []
    assert asl.read_path({"e": [{"a": {"b": "x"}, "k": 1}]}, "$.e[?(@.a.b == 'x')].k", context) == [1]
    assert asl.read_path(data, "$$.Execution.Input.k", context) == 1
    assert asl.path_exists(data, "$.a.b[1]", context)
    assert not asl.path_exists(data, "$.a.b[2]", context)
    assert not asl.path_exists({"a": None}, "$.a.b", context)
    assert asl.path_exists({"a": None}, "$.a", context)
    with pytest.raises(asl.StatesError) as missing_path:
        asl.read_path(data, "$.a.nothing", context)
    assert missing_path.value.error == "States.Runtime"
    with pytest.raises(asl.StatesError):
        asl.read_path(data, "$.list[?(@.n > 1)]", context)  # filters are refused, not misread


def test_result_path_sets_merges_replaces_and_discards() -> None:
    data = {"a": {"keep": 1}, "b": 2}
    assert asl.write_path(data, "$.a.new", 3) == {"a": {"keep": 1, "new": 3}, "b": 2}
    assert asl.write_path(data, "$.x.y", 3) == {"a": {"keep": 1}, "b": 2, "x": {"y": 3}}
    assert asl.write_path(data, "$", 3) == 3
    assert asl.write_path(data, None, 3) == data
    assert data == {"a": {"keep": 1}, "b": 2}  # never changed in place
    with pytest.raises(asl.StatesError):
        asl.write_path(data, "$.b.c", 3)  # b is a number, not an object


def test_intrinsic_functions_as_the_developer_guide_documents_them() -> None:
    data = {"id": "a1", "n": 7, "o": {"x": 1, "y": 2}, "p": {"y": 3}, "s": "a,b,,c", "f": 9.5, "t": True}
    r = runtime()
    assert asl.evaluate_intrinsic("States.Format('run-{}-{}', $.id, $.n)", data, r) == "run-a1-7"
    assert asl.evaluate_intrinsic("States.Format('{} {} {}', $.f, $.t, $.o.x)", data, r) == "9.5 true 1"
    assert asl.evaluate_intrinsic(r"States.Format('a \{\} b \'q\' {}', $.id)", data, r) == "a {} b 'q' a1"
    assert asl.evaluate_intrinsic("States.Format('{}', $$.Execution.Name)", data, r) == "run-1"
    with pytest.raises(asl.StatesError):
        asl.evaluate_intrinsic("States.Format('{}', $.o)", data, r)  # objects are not formatted
    with pytest.raises(asl.StatesError):
        asl.evaluate_intrinsic("States.Format('{} {}', $.id)", data, r)
    assert asl.evaluate_intrinsic("States.JsonMerge($.o, $.p, false)", data, r) == {"x": 1, "y": 3}
    nested = {"a": {"x": {"k": 1}}, "b": {"x": {"j": 2}}}
    assert asl.evaluate_intrinsic("States.JsonMerge($.a, $.b, false)", nested, r) == {"x": {"j": 2}}
    assert asl.evaluate_intrinsic("States.JsonMerge($.a, $.b, true)", nested, r) == {"x": {"k": 1, "j": 2}}
    assert asl.evaluate_intrinsic("States.StringSplit($.s, ',')", data, r) == ["a", "b", "c"]
    assert asl.evaluate_intrinsic("States.StringSplit('This.is+a,test', '.+,')", data, r) == [
        "This",
        "is",
        "a",
        "test",
    ]
    uuid_item = "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 0)"
    assert asl.evaluate_intrinsic(uuid_item, data, r) == "0a1b2c3d"
    assert asl.evaluate_intrinsic("States.Array('a', $.n, States.Format('{}', $.id))", data, r) == [
        "a",
        7,
        "a1",
    ]
    assert asl.evaluate_intrinsic("States.ArrayLength(States.Array(1, 2))", data, r) == 2
    assert asl.evaluate_intrinsic("States.StringToJson('{\"k\": [1]}')", data, r) == {"k": [1]}
    assert asl.evaluate_intrinsic("States.JsonToString($.o)", data, r) == '{"x":1,"y":2}'
    assert asl.evaluate_intrinsic("States.MathAdd($.n, -2)", data, r) == 5
    with pytest.raises(asl.StatesError):
        asl.evaluate_intrinsic("States.ArrayGetItem(States.Array(1), 3)", data, r)
    real_uuid = asl.Runtime().uuid()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", real_uuid)


def test_payload_templates_resolve_paths_and_functions_at_any_depth() -> None:
    template = {
        "Name.$": "States.Format('job-{}', $.id)",
        "Fixed": {"Deep": [{"Value.$": "$$.Execution.Name", "Key": "k"}], "n": 1},
        "List.$": "$.items[*].v",
    }
    data = {"id": "a1", "items": [{"v": 1}, {"v": 2}]}
    assert asl.apply_template(template, data, runtime()) == {
        "Name": "job-a1",
        "Fixed": {"Deep": [{"Value": "run-1", "Key": "k"}], "n": 1},
        "List": [1, 2],
    }
    with pytest.raises(asl.StatesError):
        asl.apply_template({"x.$": "$.missing"}, data, runtime())


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"Variable": "$.s", "StringEquals": "a"}, True),
        ({"Variable": "$.s", "StringEqualsPath": "$.t"}, False),
        ({"Variable": "$.n", "NumericGreaterThan": 0}, True),
        ({"Variable": "$.n", "NumericLessThanEquals": 3}, True),
        ({"Variable": "$.n", "StringEquals": "3"}, False),  # another type: no match, no error
        ({"Variable": "$.b", "BooleanEquals": True}, True),
        ({"Variable": "$.b", "BooleanEquals": 1}, False),
        ({"Variable": "$.none", "IsNull": True}, True),
        ({"Variable": "$.none", "IsPresent": True}, True),
        ({"Variable": "$.missing", "IsPresent": False}, True),
        ({"Variable": "$.s", "IsString": True}, True),
        ({"Variable": "$.n", "IsNumeric": True}, True),
        ({"Variable": "$.ts", "IsTimestamp": True}, True),
        ({"Variable": "$.ts", "TimestampLessThan": "2027-01-01T00:00:00Z"}, True),
        ({"Variable": "$.s", "StringMatches": "a*"}, True),
        ({"Variable": "$.list[0]", "IsPresent": True}, False),
        (
            {
                "And": [
                    {"Variable": "$.missing", "IsPresent": True},
                    {"Variable": "$.missing", "IsString": True},
                ]
            },
            False,
        ),
        ({"Or": [{"Variable": "$.s", "StringEquals": "z"}, {"Variable": "$.n", "NumericEquals": 3}]}, True),
        ({"Not": {"Variable": "$.s", "StringEquals": "a"}}, False),
    ],
)
def test_choice_rules(rule: dict[str, Any], expected: bool) -> None:
    data = {"s": "a", "t": "b", "n": 3, "b": True, "none": None, "ts": "2026-12-01T09:00:00Z", "list": []}
    assert asl.evaluate_rule(rule, data, runtime()) is expected


def test_a_choice_on_a_missing_variable_fails_the_execution() -> None:
    with pytest.raises(asl.StatesError) as failed:
        asl.evaluate_rule({"Variable": "$.missing", "BooleanEquals": True}, {}, runtime())
    assert failed.value.error == "States.Runtime"


MINI: Final = {
    "StartAt": "task",
    "States": {
        "task": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "InputPath": "$.in",
            "Parameters": {"FunctionName": "f", "Payload": {"x.$": "$.x"}},
            "ResultSelector": {"y.$": "$.Payload.y"},
            "ResultPath": "$.in.result",
            "OutputPath": "$.in",
            "Catch": [{"ErrorEquals": ["Custom.Error"], "ResultPath": "$.failure", "Next": "caught"}],
            "Next": "check",
        },
        "check": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.result.y", "NumericGreaterThan": 1, "Next": "wait"}],
            "Default": "fail",
        },
        "wait": {"Type": "Wait", "Seconds": 60, "Next": "pass"},
        "pass": {"Type": "Pass", "Result": {"done": True}, "ResultPath": "$.status", "Next": "end"},
        "end": {"Type": "Succeed"},
        "caught": {"Type": "Pass", "OutputPath": "$.failure", "Next": "fail"},
        "fail": {"Type": "Fail", "Error": "Failed", "Cause": "no"},
    },
}


def test_an_execution_follows_input_parameters_result_and_output_processing() -> None:
    calls: list[asl.TaskCall] = []

    def tasks(call: asl.TaskCall) -> Any:
        calls.append(call)
        return {"Payload": {"y": call.parameters["Payload"]["x"] * 2}, "StatusCode": 200}

    done = asl.run(MINI, {"in": {"x": 2}, "other": 1}, tasks)
    assert done.status == "SUCCEEDED"
    assert done.entered == ["task", "check", "wait", "pass", "end"]
    assert calls[0].parameters == {"FunctionName": "f", "Payload": {"x": 2}}
    assert done.output == {"x": 2, "result": {"y": 4}, "status": {"done": True}}
    assert done.transitions == {("task", "Next"), ("check", "Choices[0]"), ("wait", "Next"), ("pass", "Next")}

    low = asl.run(MINI, {"in": {"x": 0}}, tasks)
    assert (low.status, low.error, low.entered[-1]) == ("FAILED", "Failed", "fail")
    assert ("check", "Default") in low.transitions


def test_catch_takes_the_errors_it_names_and_never_a_runtime_error() -> None:
    def failing(error: str) -> Callable[[asl.TaskCall], Any]:
        def tasks(call: asl.TaskCall) -> Any:
            raise asl.TaskFailure(error, "boom")

        return tasks

    caught = asl.run(MINI, {"in": {"x": 1}}, failing("Custom.Error"))
    assert caught.entered == ["task", "caught", "fail"]
    assert caught.first("caught").output == {"Error": "Custom.Error", "Cause": "boom"}
    assert ("task", "Catch[0]") in caught.transitions
    uncaught = asl.run(MINI, {"in": {"x": 1}}, failing("Other.Error"))
    assert (uncaught.status, uncaught.error) == ("FAILED", "Other.Error")
    # A result that lacks what the ResultSelector reads fails the execution, whatever the Catch.
    broken = asl.run(MINI, {"in": {"x": 1}}, lambda call: {"Payload": {}})
    assert (broken.status, broken.error) == ("FAILED", "States.Runtime")
    no_input = asl.run(MINI, {"other": 1}, failing("Custom.Error"))
    assert (no_input.status, no_input.error) == ("FAILED", "States.Runtime")


def test_the_interpreter_agrees_with_motos_on_the_machines_data_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same Pass/Choice machine (the intrinsics and paths the definition uses) in moto's
    interpreter and in ours ends with the same output."""
    machine = {
        "StartAt": "prepare",
        "States": {
            "prepare": {
                "Type": "Pass",
                "Parameters": {
                    "inputs.$": "$.inputs",
                    "hp.$": "States.JsonMerge(States.JsonMerge($.a, $.b, false), $.c, false)",
                    "run": {
                        "id.$": "States.ArrayGetItem(States.StringSplit($.uuid, '-'), 0)",
                        "execution.$": "$$.Execution.Name",
                    },
                    "args.$": "States.Array('--seed', States.Format('{}', $.inputs.seed))",
                },
                "ResultPath": "$",
                "Next": "name",
            },
            "name": {
                "Type": "Pass",
                "Parameters": {"prefix.$": "States.Format('s3://b/runs/{}', $.run.id)", "id.$": "$.run.id"},
                "ResultPath": "$.run",
                "Next": "given?",
            },
            "given?": {
                "Type": "Choice",
                "Choices": [
                    {
                        "And": [
                            {"Variable": "$.inputs.arn", "IsPresent": True},
                            {"Variable": "$.inputs.arn", "IsString": True},
                        ],
                        "Next": "given",
                    }
                ],
                "Default": "trials?",
            },
            "given": {"Type": "Pass", "Result": "given", "ResultPath": "$.path", "Next": "done"},
            "trials?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.inputs.trials", "NumericGreaterThan": 0, "Next": "search"}],
                "Default": "done",
            },
            "search": {"Type": "Pass", "Result": {"best": ""}, "ResultPath": "$.jobs.tune", "Next": "done"},
            "done": {"Type": "Succeed"},
        },
    }
    inputs: list[dict[str, Any]] = [
        {"inputs": {"seed": 11, "trials": 3, "arn": None}, "a": {"x": "1"}, "b": {"y": "2"}, "c": {"x": "3"}},
        {"inputs": {"seed": 0, "trials": 0, "arn": "arn:p/7"}, "a": {}, "b": {}, "c": {}},
    ]
    offline_credentials(monkeypatch, REGION)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name=REGION)
        role = f"arn:aws:iam::{ACCOUNT}:role/machine"
        machine_arn = sfn.create_state_machine(name="m", definition=json.dumps(machine), roleArn=role)[
            "stateMachineArn"
        ]
        for position, given in enumerate(inputs):
            start = {**given, "uuid": "5e3b2a1c-0000-4000-8000-000000000000"}
            name = f"run-{position}"
            execution = sfn.start_execution(stateMachineArn=machine_arn, name=name, input=json.dumps(start))
            described: dict[str, Any] = {}
            for _ in range(400):
                described = sfn.describe_execution(executionArn=execution["executionArn"])
                if described["status"] != "RUNNING":
                    break
                time.sleep(0.02)
            assert described["status"] == "SUCCEEDED", described
            theirs = json.loads(described["output"])
            ours = asl.run(machine, start, lambda call: None, name=name)
            assert ours.output == theirs


# -- the state machine's integrations and requests ---------------------------------------------------


def definitions(deployments: dict[str, Deployment]) -> dict[str, dict[str, Any]]:
    found = {f"{stage} template": d.definition for stage, d in deployments.items()}
    found["dev model monitor"] = model_monitor_definition(deployments["dev"])
    return found


def test_every_task_calls_an_api_aws_has(deployments: dict[str, Deployment]) -> None:
    for variant, definition in definitions(deployments).items():
        for name, state in definition["States"].items():
            if state["Type"] == "Task":
                target = integration(state["Resource"])  # raises for an integration AWS lacks
                assert target.model.name == target.operation, (variant, name)
    assert integration("arn:aws:states:::aws-sdk:applicationautoscaling:registerScalableTarget").service == (
        "application-autoscaling"
    )
    with pytest.raises(LookupError):
        integration("arn:aws:states:::aws-sdk:sagemaker:createEndpoints")
    with pytest.raises(LookupError):
        integration("arn:aws:states:::aws-sdk:applicationautoscalling:registerScalableTarget")


def test_the_placeholders_are_what_the_template_substitutes(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        assert set(deployment.substitutions) == set(PLACEHOLDERS)
        assert "${" not in json.dumps(deployment.definition)
        values = deployment.substitutions
        assert re.fullmatch(rf"arn:aws:iam::{ACCOUNT}:role/[\w+=,.@-]+", values["SageMakerRoleArn"])
        assert re.fullmatch(
            rf"\d{{12}}\.dkr\.ecr\.{REGION}\.amazonaws\.com/[a-z0-9-]+:[0-9a-f]{{64}}", values["Image"]
        )
        assert values["DataBucket"] in deployment.buckets


def test_every_run_ends_where_its_scenario_says(walks: list[Walk]) -> None:
    """No run ends on a States.Runtime error (a path that is not there, a Choice on a missing
    variable): each ends where its scenario says, on-call told, a failure caught where it happened."""
    assert len(walks) > 80
    for done in walks:
        execution = done.execution
        where = (done.stage, done.variant, done.scenario.name)
        assert execution.error in (None, "RetrainingFailed"), (where, execution.error, execution.cause)
        assert execution.entered[-1] == done.scenario.outcome, (where, execution.entered)
        assert execution.entered.count("notify") == 1, where
        if done.scenario.fail:
            failed = execution.first(done.scenario.fail)
            assert failed.via == "Catch[0]" and failed.next is not None, where
            assert failed.next.startswith("failed at "), (where, failed.next)
            assert failed.output["failure"]["Error"].endswith(".ServiceException"), where


def test_every_state_choice_branch_and_catch_is_walked(
    deployments: dict[str, Deployment], walks: list[Walk]
) -> None:
    for variant, definition in definitions(deployments).items():
        stage, kind = variant.split(" ", 1)
        mine = walks_of(walks, stage, kind)
        entered = {name for w in mine for name in w.execution.entered}
        taken = {t for w in mine for t in w.execution.transitions}
        assert entered == set(definition["States"]), (variant, set(definition["States"]) - entered)
        for name, state in definition["States"].items():
            if state["Type"] == "Choice":
                branches = {f"Choices[{i}]" for i in range(len(state["Choices"]))} | {"Default"}
                assert {(name, b) for b in branches} <= taken, (variant, name)
            for position, _ in enumerate(state.get("Catch", [])):
                assert (name, f"Catch[{position}]") in taken, (variant, name)


def test_every_request_the_machine_makes_is_valid_for_its_api(walks: list[Walk]) -> None:
    """botocore's validator and the model's own constraints, on each request of each path."""
    errors: set[str] = set()
    checked: set[tuple[str, str]] = set()
    for done in walks:
        for call in done.calls:
            checked.add((call.target.service, call.target.operation))
            size = len(json.dumps(call.request, default=lambda b: b.decode()).encode())
            if size > TASK_DATA_LIMIT:
                errors.add(f"{call.state}: {size} bytes, over Step Functions' {TASK_DATA_LIMIT} for a task")
            for error in request_errors(call.target.service, call.target.operation, call.request):
                errors.add(f"{done.stage}/{done.variant}/{done.scenario.name} {call.state}: {error}")
            if call.target.operation == "CreateHyperParameterTuningJob":
                # SageMaker refuses a hyperparameter that is both static and tuned.
                static = set(call.request["TrainingJobDefinition"].get("StaticHyperParameters", {}))
                ranges = call.request["HyperParameterTuningJobConfig"]["ParameterRanges"].values()
                tuned = {r["Name"] for kind in ranges for r in kind}
                if static & tuned:
                    errors.add(f"{call.state}: {sorted(static & tuned)} both static and tuned")
    assert not errors, "\n".join(sorted(errors))
    assert {
        ("sagemaker", "CreateProcessingJob"),
        ("sagemaker", "CreateHyperParameterTuningJob"),
        ("sagemaker", "CreateTrainingJob"),
        ("sagemaker", "CreateModel"),
        ("sagemaker", "CreateEndpointConfig"),
        ("sagemaker", "ListEndpoints"),
        ("sagemaker", "UpdateEndpoint"),
        ("sagemaker", "CreateEndpoint"),
        ("sagemaker", "DescribeEndpoint"),
        ("sagemaker", "DescribeModelPackage"),
        ("application-autoscaling", "RegisterScalableTarget"),
        ("application-autoscaling", "PutScalingPolicy"),
        ("lambda", "Invoke"),
        ("sns", "Publish"),
    } == checked


def test_the_validation_would_catch_a_bad_request() -> None:
    """The checks above can fail: what botocore leaves to the service is checked too."""
    good = {"EndpointName": "claims-risk", "EndpointConfigName": "claims-risk-0a1b2c3d"}
    assert request_errors("sagemaker", "UpdateEndpoint", good) == []
    assert request_errors("sagemaker", "UpdateEndpoint", {"EndpointName": "claims-risk"})  # required
    assert request_errors("sagemaker", "UpdateEndpoint", {**good, "Endpoint": "x"})  # unknown member
    assert request_errors("sagemaker", "UpdateEndpoint", {**good, "EndpointName": "claims_risk"})  # pattern
    assert request_errors("sagemaker", "UpdateEndpoint", {**good, "EndpointName": "c" * 64})  # max length
    job = {"HyperParameterTuningJobName": "claims-risk-0a1b2c3d-search-tune-x"}  # 33 > 32 characters
    tuning = input_shape("sagemaker", "CreateHyperParameterTuningJob")
    assert any("at most 32" in e for e in constraint_errors(tuning, job, "job"))
    scaling = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/e/variant/v",
        "ScalableDimension": "x",
    }
    assert any(
        "is not one of" in e
        for e in request_errors("application-autoscaling", "RegisterScalableTarget", scaling)
    )


def test_the_run_inputs_reach_the_requests(walks: list[Walk]) -> None:
    [full] = [w for w in walks_of(walks, "prod") if w.scenario.name == "full input"]
    requests = {c.state: c.request for c in full.calls}
    start = full_input()
    limits = requests["tune"]["HyperParameterTuningJobConfig"]["ResourceLimits"]
    assert limits == {"MaxNumberOfTrainingJobs": 7, "MaxParallelTrainingJobs": 2, "MaxRuntimeInSeconds": 901}
    static = requests["tune"]["TrainingJobDefinition"]["StaticHyperParameters"]
    assert (static["seed"], static["max_rows"], static["cv_folds"]) == ("11", "5000", "4")
    final = requests["train"]["HyperParameters"]
    assert final["xgb_max_depth"] == "6" and final["nn_epochs"] == "30"  # the run's overrides win
    assert final["cost_missed_high_risk"] == "9.0" and final["cost_needless_review"] == "2.0"
    tuned = tuned_hyperparameters(requests["tune"]["HyperParameterTuningJobConfig"]["ParameterRanges"])
    assert final["xgb_eta"] == tuned["xgb_eta"]  # the tuner's best reaches the final training
    assert requests["validate"]["AppSpecification"]["ContainerArguments"] == [
        "--spec",
        "claims",
        "--seed",
        "11",
        "--source",
        "glue:training_claims",
    ]
    # The same command line the local runner gives the job (step_functions/pipeline.py).
    inputs = PipelineInputs.model_validate(start)
    assert requests["evaluate"]["AppSpecification"]["ContainerArguments"] == job_arguments(
        pipeline_step("evaluate"), inputs
    )
    assert requests["evaluate"]["AppSpecification"]["ContainerArguments"][:4] == [
        "--cv-folds",
        "3",
        "--seed",
        "11",
    ]
    gates = json.loads(requests["gates"]["Payload"])
    assert gates["gates"] == start["gates"]
    [defaults] = [w for w in walks_of(walks, "dev") if w.scenario.name == "defaults"]
    default_requests = {c.state: c.request for c in defaults.calls}
    assert json.loads(default_requests["prepare run"]["Payload"]) == {"action": "prepare", "input": {}}


# -- the Lambda tasks' payloads and the handler ------------------------------------------------------


def test_the_pipeline_tasks_handler_accepts_every_payload_the_machine_sends(walks: list[Walk]) -> None:
    from lambdas.pipeline_tasks.handler import TASKS

    actions: set[str] = set()
    for done in walks:
        for call in done.calls:
            if call.target.service == "lambda":
                payload = json.loads(call.request["Payload"])
                actions.add(payload["action"])
                TASKS.validate_python(payload)  # the handler's own parsing
    assert actions == {"prepare", "gates", "register", "publish_card"}


def test_the_prepare_task_is_one_the_handler_runs(
    walks: list[Walk], deployments: dict[str, Deployment]
) -> None:
    from lambdas.pipeline_tasks import handler

    [defaults] = [w for w in walks_of(walks, "dev") if w.scenario.name == "full input"]
    call = defaults.calls[0]
    assert call.state == "prepare run"
    payload = json.loads(call.request["Payload"])
    result = handler.lambda_handler(payload, FakeLambdaContext("claims-risk-tasks"))
    selector = deployments["dev"].definition["States"]["prepare run"]["ResultSelector"]
    selected = asl.apply_template(selector, {"Payload": result}, runtime())
    assert {k: v for k, v in selected.items() if k != "run"} == prepare_run(full_input())


def test_the_handlers_real_results_carry_what_the_result_selectors_read(
    world: LambdaWorld, deployments: dict[str, Deployment]
) -> None:
    states = deployments["dev"].definition["States"]
    selectors = {
        "gates": states["gates"],
        "register": states["register"],
        "publish_card": states["deploy: model card"],
    }
    for action, state in selectors.items():
        asl.apply_template(state["ResultSelector"], {"Payload": world.results[action]}, runtime())
    assert world.results["gates"]["passed"] is True
    assert world.results["gates-failed"]["passed"] is False
    assert world.results["register"]["model_package_arn"].startswith(f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:")


METADATA: Final = "CustomerMetadataProperties"


def pipeline_task_errors(world: LambdaWorld) -> list[str]:
    return [e for s, o, p in world.calls for e in request_errors(s, o, p)]


def test_the_pipeline_tasks_aws_calls_are_valid_and_allowed(
    world: LambdaWorld, deployments: dict[str, Deployment]
) -> None:
    """Registering a challenger (rejected ones too), approving it and publishing the model card: each
    SDK call the handler made, valid for its API (the metadata aside: next test) and allowed to its role."""
    deployment = deployments["dev"]
    role = deployment.role_of_function("lambdas.pipeline_tasks.handler.lambda_handler")
    operations = {(s, o) for s, o, _ in world.calls}
    assert {("sagemaker", "CreateModelPackage"), ("sagemaker", "UpdateModelPackage")} <= operations
    assert {("s3", "GetObject"), ("s3", "PutObject"), ("s3", "CopyObject")} <= operations
    errors = [e for e in pipeline_task_errors(world) if METADATA not in e]
    assert not errors, "\n".join(errors)
    needs = [n for s, o, p in world.calls for n in call_needs(deployment, s, o, p, "pipeline tasks")]
    assert not missing(deployment, role, needs)


def test_the_model_package_metadata_is_what_sagemaker_accepts(world: LambdaWorld) -> None:
    errors = [e for e in pipeline_task_errors(world) if METADATA in e]
    assert not errors, "\n".join(errors)


# -- IAM of the state machine ----------------------------------------------------------------------


def call_needs(
    deployment: Deployment, service: str, operation: str, params: Mapping[str, Any], why: str
) -> list[Need]:
    """What an SDK call of a Lambda function needs of its role."""
    why = f"{why}: {service} {operation}"
    if service == "s3":
        bucket = params["Bucket"]
        bucket_arn = f"arn:aws:s3:::{bucket}"
        key_arn = deployment.bucket_key(bucket)
        if operation in ("ListObjectsV2", "ListObjects"):
            return [Need("s3:ListBucket", bucket_arn, (("s3:prefix", params.get("Prefix", "")),), why)]
        object_arn = f"{bucket_arn}/{params['Key']}"
        if operation in ("GetObject", "HeadObject"):
            needs = [Need("s3:GetObject", object_arn, why=why)]
            if params.get("VersionId"):
                needs.append(Need("s3:GetObjectVersion", object_arn, why=why))
            return needs + ([Need("kms:Decrypt", key_arn, why=why)] if key_arn else [])
        if operation in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
            return [Need("s3:PutObject", object_arn, why=why)] + (
                [Need("kms:GenerateDataKey", key_arn, why=why)] if key_arn else []
            )
        if operation in ("CopyObject", "UploadPartCopy"):
            source = params["CopySource"]
            source_arn = (
                f"arn:aws:s3:::{source['Bucket']}/{source['Key']}"
                if isinstance(source, dict)
                else f"arn:aws:s3:::{source.lstrip('/')}"
            )
            needs = [Need("s3:GetObject", source_arn, why=why), Need("s3:PutObject", object_arn, why=why)]
            return needs + (
                [Need("kms:Decrypt", key_arn, why=why), Need("kms:GenerateDataKey", key_arn, why=why)]
                if key_arn
                else []
            )
    if service == "sagemaker":
        return sagemaker_call_needs(operation, params, why)
    if service == "sagemaker-runtime" and operation == "InvokeEndpoint":
        return [Need("sagemaker:InvokeEndpoint", sagemaker_arn("endpoint", params["EndpointName"]), why=why)]
    if service == "stepfunctions" and operation == "StartExecution":
        return [Need("states:StartExecution", params["stateMachineArn"], why=why)]
    if service == "dynamodb":
        return [
            Need(
                f"dynamodb:{operation}",
                f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{params['TableName']}",
                why=why,
            )
        ]
    return [Need(f"{service_model(service).signing_name}:{operation}", "*", why=why)]


def task_needs(deployment: Deployment, done: Walk, call: ServiceCall) -> list[Need]:
    """What one Task's integration needs of the state machine's role, from AWS's tables."""
    target, request = call.target, call.request
    why = f"{call.state} ({target.resource})"
    if target.pattern == ".sync":
        row = SYNC_REQUIREMENTS[target.resource]
        job = sagemaker_arn(row.resource_type, str(field_at(request, row.name_field)))
        needs = [Need(a, job, why=f"{why}; {row.doc}") for a in (*row.actions, *SYNC_COMMON_ACTIONS)]
        rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{row.rule}"
        needs += [Need(a, rule, why=f"{why}; {row.doc}") for a in SYNC_RULE_ACTIONS]
        if row.role_field:
            needs.append(Need("iam:PassRole", str(field_at(request, row.role_field)), PASS_TO_SAGEMAKER, why))
        if request.get("Tags"):
            needs.append(Need("sagemaker:AddTags", job, why=f"{why}: Tags"))
        return needs
    if target.service == "lambda":
        function = request["FunctionName"]
        return [Need("lambda:InvokeFunction", function, why=f"{why}; {LAMBDA_IAM}")]
    if target.service == "sns":
        topic = request["TopicArn"]
        needs = [Need("sns:Publish", topic, why=f"{why}; {SNS_IAM}")]
        [topic_logical] = [t for t in deployment.of_type("AWS::SNS::Topic") if deployment.ref(t) == topic]
        master_key = deployment.resources[topic_logical]["Properties"].get("KmsMasterKeyId")
        if master_key:  # publishing to an encrypted topic uses its key
            key_arn = str(deployment.resolve(master_key))
            needs += [
                Need(a, key_arn, why=f"{why}; {SNS_SSE}") for a in ("kms:GenerateDataKey", "kms:Decrypt")
            ]
        return needs
    if target.service == "sagemaker":
        return sagemaker_call_needs(target.operation, request, f"{why}; {SAGEMAKER_API_PERMISSIONS}")
    needs = [Need(target.iam_action, "*", why=f"{why}; {SDK_INTEGRATION_IAM}")]
    if target.service == "application-autoscaling":
        needs += autoscaling_needs(done, target.operation, request, why)
    return needs


def autoscaling_needs(done: Walk, operation: str, request: Mapping[str, Any], why: str) -> list[Need]:
    why = f"{why}; {AUTOSCALING_PREREQUISITES}"
    endpoint = request["ResourceId"].split("/")[1]  # endpoint/<name>/variant/<variant>
    configs = [
        c.request["EndpointConfigName"] for c in done.calls if c.target.operation == "CreateEndpointConfig"
    ]
    resources = {
        "sagemaker:DescribeEndpoint": [sagemaker_arn("endpoint", endpoint)],
        "sagemaker:UpdateEndpointWeightsAndCapacities": [sagemaker_arn("endpoint", endpoint)],
        "sagemaker:DescribeEndpointConfig": [sagemaker_arn("endpoint-config", c) for c in configs],
    }
    alarm = arn("cloudwatch", f"alarm:TargetTracking-{request['ResourceId']}-AlarmHigh-0a1b2c3d")
    needs = [
        Need(action, resource, why=why)
        for action in AUTOSCALING_ON_BEHALF[operation]
        for resource in resources.get(action, [alarm])
    ]
    if operation == "RegisterScalableTarget":  # the first registration creates the service-linked role
        role = (
            f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/{AUTOSCALING_SERVICE}/"
            "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
        )
        needs.append(
            Need("iam:CreateServiceLinkedRole", role, (("iam:AWSServiceName", AUTOSCALING_SERVICE),), why)
        )
    return needs


def test_the_sync_table_covers_every_sync_integration_the_machine_uses(
    deployments: dict[str, Deployment],
) -> None:
    for definition in definitions(deployments).values():
        for state in definition["States"].values():
            if str(state.get("Resource", "")).endswith(".sync"):
                assert state["Resource"] in SYNC_REQUIREMENTS


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_state_machine_role_has_what_each_integration_needs(
    stage: str, deployments: dict[str, Deployment], walks: list[Walk]
) -> None:
    deployment = deployments[stage]
    needs = [n for w in walks if w.stage == stage for c in w.calls for n in task_needs(deployment, w, c)]
    assert len({n.action for n in needs}) > 20
    assert not missing(deployment, deployment.machine_role, needs)


def test_the_iam_evaluator_would_catch_a_missing_grant(deployments: dict[str, Deployment]) -> None:
    deployment = deployments["dev"]
    statements = deployment.identity_statements(deployment.machine_role)
    tuning_rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/StepFunctionsGetEventsForSageMakerTuningJobsRule"
    assert allows(statements, "events:PutRule", tuning_rule)
    assert not allows(statements, "events:PutRule", tuning_rule.replace("Tuning", "HyperParameterTuning"))
    role = deployment.substitutions["SageMakerRoleArn"]
    assert allows(statements, "iam:PassRole", role, {"iam:PassedToService": "sagemaker.amazonaws.com"})
    assert not allows(statements, "iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"})
    assert not allows(statements, "iam:PassRole", role)  # no service in the request: the condition fails
    job = sagemaker_arn("training-job", "claims-risk-0a1b2c3d-train")
    assert allows(statements, "SageMaker:createTrainingJob", job)  # actions are case-insensitive
    assert not allows(statements, "sagemaker:CreateTrainingJob", sagemaker_arn("training-job", "other-train"))
    assert not allows(
        [*statements, {"Effect": "Deny", "Action": "sagemaker:*", "Resource": "*"}],
        "sagemaker:CreateTrainingJob",
        job,
    )


def key_arns_of(
    deployment: Deployment, operation: str, request: Mapping[str, Any], walk_calls: list[ServiceCall]
) -> str | None:
    if operation in VOLUME_KEY_FIELDS:
        value = field_at(request, VOLUME_KEY_FIELDS[operation])
        return None if value is None else str(value)
    if operation == "CreateEndpoint":
        configs = [c.request for c in walk_calls if c.target.operation == "CreateEndpointConfig"]
        for config in configs:
            if config["EndpointConfigName"] == request["EndpointConfigName"]:
                return str(config["KmsKeyId"]) if config.get("KmsKeyId") else None
    return None


def test_kms_grants_where_sagemaker_documents_them(
    deployments: dict[str, Deployment],
    walks: list[Walk],
    drift_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    context = (("kms:GrantIsForAWSResource", "true"), ("kms:ViaService", f"sagemaker.{REGION}.amazonaws.com"))
    problems: set[str] = set()

    def check(
        deployment: Deployment,
        caller: str,
        operation: str,
        request: Mapping[str, Any],
        calls: list[ServiceCall],
        why: str,
    ) -> None:
        key = key_arns_of(deployment, operation, request, calls)
        if key is None:
            return
        roles = [caller]
        passed = PASSED_ROLE_FIELDS.get(operation)
        if passed and operation in VOLUME_KEY_FIELDS:  # "...and the associated role does not permit it"
            roles.append(deployment.logical_by_arn("AWS::IAM::Role", str(field_at(request, passed))))
        need = Need("kms:CreateGrant", key, context, f"{why}; {SAGEMAKER_API_PERMISSIONS}")
        if all(missing(deployment, role, [need]) for role in roles):
            problems.add(need.describe())

    for done in walks:
        deployment = deployments[done.stage]
        for call in done.calls:
            if call.target.service == "sagemaker":
                check(
                    deployment,
                    deployment.machine_role,
                    call.target.operation,
                    call.request,
                    done.calls,
                    call.state,
                )
    for stage, calls in drift_calls.items():
        deployment = deployments[stage]
        role = deployment.role_of_function("lambdas.drift_trigger.handler.lambda_handler")
        for service, operation, params in calls:
            if service == "sagemaker":
                check(deployment, role, operation, params, [], "drift trigger")
    assert not problems, "\n".join(sorted(problems))


# -- S3: every job's inputs readable, outputs writable, by the role that runs it ---------------------


def read_needs(deployment: Deployment, uri: str, why: str, *, prefix: bool) -> list[Need]:
    """SageMaker lists an S3Prefix input (ListObjectsV2: s3:ListBucket) and gets each object."""
    bucket, key = split_s3_uri(uri)
    last = key.rstrip("/").rsplit("/", 1)[-1]
    object_key = key if "." in last and not key.endswith("/") else f"{key.rstrip('/')}/part-00000"
    needs = [Need("s3:GetObject", f"arn:aws:s3:::{bucket}/{object_key}", why=f"{why}; {S3_ACTIONS}")]
    if prefix:
        needs.append(
            Need("s3:ListBucket", f"arn:aws:s3:::{bucket}", (("s3:prefix", key),), f"{why}; {S3_ACTIONS}")
        )
    key_arn = deployment.bucket_key(bucket)
    if key_arn:
        needs.append(Need("kms:Decrypt", key_arn, why=f"{why}; {S3_KMS}"))
    return needs


def write_needs(deployment: Deployment, uri: str, kms_key: str | None, why: str) -> list[Need]:
    bucket, key = split_s3_uri(uri)
    needs = [
        Need(
            "s3:PutObject", f"arn:aws:s3:::{bucket}/{key.rstrip('/')}/part-00000", why=f"{why}; {S3_ACTIONS}"
        )
    ]
    for key_arn in {k for k in (kms_key, deployment.bucket_key(bucket)) if k}:
        needs.append(Need("kms:GenerateDataKey", key_arn, why=f"{why}; {S3_KMS}"))
    return needs


def job_data_needs(
    deployment: Deployment, operation: str, request: Mapping[str, Any], why: str
) -> list[Need]:
    """What the role a SageMaker job runs as needs of S3 and KMS for the job's data."""
    from shared.batch_jobs import REJECTED_URI_ENV

    needs: list[Need] = []
    if operation == "CreateProcessingJob":
        for item in request.get("ProcessingInputs", []):
            s3_input = item["S3Input"]
            needs += read_needs(
                deployment,
                s3_input["S3Uri"],
                f"{why} input {item['InputName']}",
                prefix=s3_input["S3DataType"] == "S3Prefix",
            )
        output = request.get("ProcessingOutputConfig", {})
        for item in output.get("Outputs", []):
            needs += write_needs(
                deployment,
                item["S3Output"]["S3Uri"],
                output.get("KmsKeyId"),
                f"{why} output {item['OutputName']}",
            )
    definition = request.get("TrainingJobDefinition", request) if operation != "CreateTransformJob" else {}
    if operation in ("CreateTrainingJob", "CreateHyperParameterTuningJob"):
        for channel in definition.get("InputDataConfig", []):
            source = channel["DataSource"]["S3DataSource"]
            needs += read_needs(
                deployment,
                source["S3Uri"],
                f"{why} channel {channel['ChannelName']}",
                prefix=source["S3DataType"] == "S3Prefix",
            )
        output = definition["OutputDataConfig"]
        needs += write_needs(deployment, output["S3OutputPath"], output.get("KmsKeyId"), f"{why} output")
    if operation == "CreateTransformJob":
        source = request["TransformInput"]["DataSource"]["S3DataSource"]
        needs += read_needs(
            deployment, source["S3Uri"], f"{why} input", prefix=source["S3DataType"] == "S3Prefix"
        )
        output = request["TransformOutput"]
        needs += write_needs(deployment, output["S3OutputPath"], output.get("KmsKeyId"), f"{why} output")
    for name, value in request.get("Environment", {}).items():  # the job's own reads and writes
        if isinstance(value, str) and value.startswith("s3://"):
            if name == REJECTED_URI_ENV:
                needs += write_needs(deployment, value, None, f"{why} {name}")
            else:
                needs += read_needs(deployment, value, f"{why} {name}", prefix=False)
    return needs


def role_of_request(deployment: Deployment, operation: str, request: Mapping[str, Any]) -> str:
    path = PASSED_ROLE_FIELDS.get(operation) or ()
    value = field_at(request, path) if path else deployment.substitutions["SageMakerRoleArn"]
    return deployment.logical_by_arn("AWS::IAM::Role", str(value))


def test_every_job_input_is_listable_and_readable_and_every_output_writable(
    deployments: dict[str, Deployment],
    walks: list[Walk],
    drift_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
    batch_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    problems: set[str] = set()
    seen: set[str] = set()
    context = {"aws:SecureTransport": "true"}

    def check(deployment: Deployment, operation: str, request: Mapping[str, Any], why: str) -> None:
        needs = job_data_needs(deployment, operation, request, why)
        if not needs:
            return
        seen.add(operation)
        role = role_of_request(deployment, operation, request)
        problems.update(f"{deployment.stage}: {p}" for p in missing(deployment, role, needs))
        for need in needs:  # the bucket's own policy must not deny it either
            if need.action.startswith("s3:"):
                bucket = need.resource.split(":::", 1)[1].split("/", 1)[0]
                if denies(deployment.bucket_policy(bucket), need.action, need.resource, context):
                    problems.add(f"{deployment.stage}: the bucket policy denies {need.describe()}")
            else:
                assert key_delegates_to_iam(deployment, need.resource), need.resource

    for done in walks:
        deployment = deployments[done.stage]
        for call in done.calls:
            check(deployment, call.target.operation, call.request, f"{done.scenario.name} {call.state}")
        # The endpoint serves with the model's role: it reads the model and writes the capture.
        models = [c.request for c in done.calls if c.target.operation == "CreateModel"]
        configs = [c.request for c in done.calls if c.target.operation == "CreateEndpointConfig"]
        cards = [json.loads(c.request["Payload"]) for c in done.calls if c.state == "deploy: model card"]
        for model, config, card in zip(models, configs, cards, strict=False):
            role = deployment.logical_by_arn("AWS::IAM::Role", model["ExecutionRoleArn"])
            capture = config["DataCaptureConfig"]
            needs = read_needs(deployment, card["model"], "the endpoint's model", prefix=False)
            needs += write_needs(
                deployment, capture["DestinationS3Uri"], capture.get("KmsKeyId"), "data capture"
            )
            problems.update(missing(deployment, role, needs))
    for stage, calls in {**drift_calls}.items():
        for service, operation, params in calls:
            if service == "sagemaker":
                check(deployments[stage], operation, params, "drift job")
    for stage, calls in batch_calls.items():
        for service, operation, params in calls:
            if service == "sagemaker":
                check(deployments[stage], operation, params, "batch transform")
    assert {
        "CreateProcessingJob",
        "CreateTrainingJob",
        "CreateHyperParameterTuningJob",
        "CreateTransformJob",
    } <= seen
    assert not problems, "\n".join(sorted(problems))


def key_delegates_to_iam(deployment: Deployment, key_arn: str) -> bool:
    """A key policy that lets the account's IAM policies grant the key (the default key policy)."""
    root = f"arn:aws:iam::{ACCOUNT}:root"
    for statement in deployment.key_policy(key_arn):
        principals = _listed(statement.get("Principal", {}).get("AWS", []))
        if statement["Effect"] == "Allow" and root in principals and "kms:*" in _listed(statement["Action"]):
            return True
    return False


def test_the_s3_checks_would_catch_an_unlistable_bucket(deployments: dict[str, Deployment]) -> None:
    deployment = deployments["dev"]
    bucket = deployment.substitutions["DataBucket"]
    role = deployment.logical_by_arn("AWS::IAM::Role", deployment.substitutions["SageMakerRoleArn"])
    needs = read_needs(deployment, f"s3://{bucket}/pipeline/runs/0a1b2c3d/train", "probe", prefix=True)
    assert [n.action for n in needs] == ["s3:GetObject", "s3:ListBucket", "kms:Decrypt"]
    assert not missing(deployment, role, needs)
    statements = [
        s for s in deployment.identity_statements(role) if "s3:ListBucket" not in _listed(s["Action"])
    ]
    list_bucket = needs[1]
    assert not allows(statements, list_bucket.action, list_bucket.resource, dict(list_bucket.context))
    other = read_needs(deployment, "s3://someone-elses-bucket/data/", "probe", prefix=True)
    assert missing(deployment, role, other)


# -- the Lambda functions' own AWS calls -------------------------------------------------------------


def run_drift_trigger(deployment: Deployment) -> list[tuple[str, str, dict[str, Any]]]:
    """The drift trigger as the schedule invokes it, with the environment the template gives it."""
    from lambdas.drift_trigger import handler
    from shared.drift_jobs import CAPTURE_PREFIX

    environment = deployment.function_environment("lambdas.drift_trigger.handler.lambda_handler")
    with recorded_aws() as (patch, recorder, seeding):
        for name, value in environment.items():
            patch.setenv(name, value)
        bucket = environment["CLAIMS_RISK_DATA_BUCKET"]
        s3 = seeding.client("s3")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        endpoint = environment["SAGEMAKER_ENDPOINT_NAME"]
        captured = f"{CAPTURE_PREFIX}/{endpoint}/AllTraffic/2026/12/01/08/capture-0001.jsonl"
        s3.put_object(Bucket=bucket, Key=captured, Body=b"{}\n")
        handler.wire(None, None, None)
        try:
            answer = handler.start_drift_job(
                handler.ScheduledInvocation(scheduled_time=NOW.replace(minute=10))
            )
        finally:
            handler.wire(None, None, None)
        assert answer["started"], answer
        return list(recorder.calls)


def run_batch_trigger(deployment: Deployment) -> list[tuple[str, str, dict[str, Any]]]:
    """The batch trigger for a CSV dropped under incoming/, with the environment the template gives it."""
    from lambdas.batch_trigger import handler
    from tests.factories import minimal_claim

    environment = deployment.function_environment("lambdas.batch_trigger.handler.lambda_handler")
    with recorded_aws() as (patch, recorder, seeding):
        for name, value in environment.items():
            patch.setenv(name, value)
        bucket = deployment.substitutions["DataBucket"]
        s3 = seeding.client("s3")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        claim = minimal_claim()
        body = (",".join(claim) + "\n" + ",".join(str(v) for v in claim.values()) + "\n").encode()
        key = f"{environment['INCOMING_PREFIX']}2026/12/claims.csv"
        version = s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]
        seeding.client("dynamodb").create_table(
            TableName=environment["IDEMPOTENCY_TABLE"],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        sagemaker = seeding.client("sagemaker")
        image = deployment.substitutions["Image"]
        sagemaker.create_model(
            ModelName="claims-risk-0a1b2c3d",
            ExecutionRoleArn=deployment.substitutions["SageMakerRoleArn"],
            PrimaryContainer={
                "Image": image,
                "ModelDataUrl": f"s3://{bucket}/pipeline/runs/0a1b2c3d/model.tar.gz",
            },
        )
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": "claims-risk-0a1b2c3d",
            "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large",
        }
        sagemaker.create_endpoint_config(
            EndpointConfigName="claims-risk-0a1b2c3d", ProductionVariants=[variant]
        )
        sagemaker.create_endpoint(
            EndpointName=environment["SAGEMAKER_ENDPOINT_NAME"], EndpointConfigName="claims-risk-0a1b2c3d"
        )
        event = {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": REGION,
                    "eventTime": "2026-12-01T09:00:00.000Z",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "incoming",
                        "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                        "object": {
                            "key": key,
                            "size": len(body),
                            "versionId": version,
                            "sequencer": "0065A1B2C3D4E5F6",
                        },
                    },
                }
            ]
        }
        handler.reset_wiring()
        try:
            summary = handler.lambda_handler(event, FakeLambdaContext("claims-risk-batch-trigger"))
        finally:
            handler.reset_wiring()
        assert summary["started"], summary
        return list(recorder.calls)


def run_api(deployment: Deployment) -> list[tuple[str, str, dict[str, Any]]]:
    """The API function, as API Gateway invokes it with a token's scopes: a claim scored, the model card
    read, a retraining started (against moto, which answers or refuses: the requests are what count)."""
    from lambdas.api import handler
    from shared import auth
    from tests.factories import minimal_claim

    handler_name = "lambdas.api.handler.lambda_handler"
    environment = deployment.function_environment(handler_name)
    template = json.loads(
        (REPO_ROOT / "tests/unit/events/apigateway_aws_proxy.json").read_text(encoding="utf-8")
    )
    with recorded_aws() as (patch, recorder, seeding):
        for name, value in environment.items():
            patch.setenv(name, value)
        bucket, card = split_s3_uri(environment["CLAIMS_RISK_MODEL_CARD_S3"])
        s3 = seeding.client("s3")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_object(Bucket=bucket, Key=card, Body=json.dumps({"model_version": "v2"}).encode())
        handler.use_ports()
        try:
            for (method, path), scope in sorted(auth.ROUTE_SCOPES.items()):
                body = {"POST": json.dumps(minimal_claim()), "GET": None}[method]
                if path.endswith("/batch"):
                    body = json.dumps({"claims": [minimal_claim()]})
                if path.endswith("/retrain"):
                    body = "{}"
                event = copy.deepcopy(template)
                event.update(
                    httpMethod=method, path=path, body=body, pathParameters={"proxy": path.lstrip("/")}
                )
                event["requestContext"].update(httpMethod=method, path=f"/{deployment.stage}{path}")
                event["requestContext"]["authorizer"] = {"claims": {"sub": "handler-7", "scope": scope}}
                with contextlib.suppress(Exception):  # moto's answers are not the point: the requests are
                    handler.lambda_handler(event, FakeLambdaContext("claims-risk-api"))
        finally:
            handler.use_ports()
        return list(recorder.calls)


@pytest.fixture(scope="module")
def api_calls(deployments: dict[str, Deployment]) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    return {stage: run_api(d) for stage, d in deployments.items()}


@pytest.fixture(scope="module")
def drift_calls(deployments: dict[str, Deployment]) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    return {stage: run_drift_trigger(d) for stage, d in deployments.items()}


@pytest.fixture(scope="module")
def batch_calls(deployments: dict[str, Deployment]) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    return {stage: run_batch_trigger(d) for stage, d in deployments.items()}


def lambda_calls_problems(
    deployment: Deployment, handler: str, calls: list[tuple[str, str, dict[str, Any]]], why: str
) -> list[str]:
    problems = [e for s, o, p in calls for e in request_errors(s, o, p)]
    role = deployment.role_of_function(handler)
    needs = [n for s, o, p in calls for n in call_needs(deployment, s, o, p, why)]
    return problems + missing(deployment, role, needs)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_drift_triggers_calls_are_valid_and_allowed(
    stage: str,
    deployments: dict[str, Deployment],
    drift_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    calls = drift_calls[stage]
    assert {("s3", "ListObjectsV2"), ("sagemaker", "CreateProcessingJob")} <= {(s, o) for s, o, _ in calls}
    handler = "lambdas.drift_trigger.handler.lambda_handler"
    assert not lambda_calls_problems(deployments[stage], handler, calls, "drift trigger")


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_batch_triggers_calls_are_valid_and_allowed(
    stage: str,
    deployments: dict[str, Deployment],
    batch_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    calls = batch_calls[stage]
    operations = {(s, o) for s, o, _ in calls}
    assert {
        ("s3", "GetObject"),
        ("sagemaker", "DescribeEndpoint"),
        ("sagemaker", "CreateTransformJob"),
    } <= operations
    handler = "lambdas.batch_trigger.handler.lambda_handler"
    assert not lambda_calls_problems(deployments[stage], handler, calls, "batch trigger")


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_api_functions_calls_are_valid_and_allowed(
    stage: str,
    deployments: dict[str, Deployment],
    api_calls: dict[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    calls = api_calls[stage]
    operations = {(s, o) for s, o, _ in calls}
    expected = {
        ("sagemaker-runtime", "InvokeEndpoint"),
        ("stepfunctions", "StartExecution"),
        ("s3", "GetObject"),
    }
    assert expected <= operations, operations
    handler = "lambdas.api.handler.lambda_handler"
    assert not lambda_calls_problems(deployments[stage], handler, calls, "API")


# -- determinism ------------------------------------------------------------------------------------


REPO_ROOT: Final = Path(__file__).resolve().parents[2]
# What a synthesis reads: the app, its context and lock, the code bundled into the functions and the
# image, the web page.
SYNTHESIS_SOURCES: Final = (
    "app.py",
    "cdk.json",
    "pyproject.toml",
    "uv.lock",
    "cdk",
    "lambdas",
    "shared",
    "step_functions",
    "sagemaker_jobs",
    "local/web",
)


def source_digest() -> str:
    """The synthesis's inputs and the commit, by content."""
    digest = hashlib.sha256()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    digest.update(head.stdout.encode())
    for source in SYNTHESIS_SOURCES:
        root = REPO_ROOT / source
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# Taken when the module is collected, before any test synthesizes the app.
SOURCES_AT_COLLECTION: Final = source_digest()


def assembly_digest(directory: Path) -> dict[str, str]:
    """Each file of a cloud assembly but the tree and the manifest's metadata, by content."""
    digests = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name not in ("tree.json", "manifest.json"):
            digests[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def synthesize(outdir: Path) -> Path:
    """``build_app`` in a process of its own: CDK caches bundles within a process, and a second
    synthesis in the same one would reuse them rather than bundle again."""
    script = f"from app import build_app; build_app({{'stage': 'dev'}}, outdir={str(outdir)!r}).synth()"
    environment = {
        **os.environ,
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    answer = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    return outdir


def test_two_syntheses_of_the_same_commit_are_identical(
    synthesized_stages: dict[str, Synthesized], tmp_path: Path
) -> None:
    """Same commit, same template and same assets (so CDK uploads and builds nothing new)."""
    if source_digest() == SOURCES_AT_COLLECTION:
        first = synthesized_stages["dev"].directory
        before = SOURCES_AT_COLLECTION
    else:  # the sources changed since the suite's synthesis (a shared work tree): two of our own
        before = source_digest()
        first = synthesize(tmp_path / "first")
    second = synthesize(tmp_path / "second")
    if source_digest() != before:
        pytest.skip("the sources changed while the app was synthesized: not one commit")
    name = "ClaimsRisk-dev.template.json"
    assert (second / name).read_bytes() == (first / name).read_bytes()
    assets_name = "ClaimsRisk-dev.assets.json"
    first_assets = json.loads((first / assets_name).read_text(encoding="utf-8"))
    second_assets = json.loads((second / assets_name).read_text(encoding="utf-8"))
    for kind in ("files", "dockerImages"):
        assert set(first_assets[kind]) == set(second_assets[kind]), kind
    assert first_assets["dockerImages"], "the project image is an asset: its hash is pinned here"
    assert assembly_digest(first) == assembly_digest(second)
    for path in (first / "manifest.json", second / "manifest.json"):
        assert "missing" not in json.loads(path.read_text(encoding="utf-8"))


# -- template facts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_machine_may_manage_the_documented_rules_and_is_created_after_them(
    stage: str, deployments: dict[str, Deployment]
) -> None:
    deployment = deployments[stage]
    used = {
        SYNC_REQUIREMENTS[s["Resource"]].rule
        for s in deployment.definition["States"].values()
        if s.get("Resource") in SYNC_REQUIREMENTS
    }
    assert "StepFunctionsGetEventsForSageMakerTuningJobsRule" in used
    assert WRONG_TUNING_RULE not in json.dumps(deployment.template)
    statements = deployment.identity_statements(deployment.machine_role)
    granting: set[str] = set()
    for rule in used:
        rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"
        for action in SYNC_RULE_ACTIONS:
            assert allows(statements, action, rule_arn), (action, rule)
        for logical, policy in deployment.of_type("AWS::IAM::Policy").items():
            document = deployment.resolve(policy["Properties"]["PolicyDocument"])["Statement"]
            if allows(document, "events:PutRule", rule_arn):
                granting.add(logical)
    # Step Functions checks that its role may manage these rules when the machine is created.
    machine, _ = deployment.machine
    assert granting and all(deployment.depends_on(machine, p) for p in granting), granting


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_drift_schedule_invokes_the_trigger_after_the_hour_closes(
    stage: str, deployments: dict[str, Deployment]
) -> None:
    from shared.drift_jobs import DriftWindow

    deployment = deployments[stage]
    name, schedule = deployment.one("AWS::Scheduler::Schedule")
    target = deployment.resolve(schedule["Properties"]["Target"])
    [trigger] = [
        logical
        for logical, f in deployment.of_type("AWS::Lambda::Function").items()
        if f["Properties"].get("Handler") == "lambdas.drift_trigger.handler.lambda_handler"
    ]
    assert target["Arn"] == deployment.attribute(trigger, "Arn")
    role = deployment.logical_by_arn("AWS::IAM::Role", target["RoleArn"])
    trust = deployment.resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert any(s["Principal"].get("Service") == "scheduler.amazonaws.com" for s in trust)
    assert allows(deployment.identity_statements(role), "lambda:InvokeFunction", target["Arn"])
    assert deployment.depends_on(name, trigger)
    # cron(minute hour day-of-month month day-of-week year): each hour at a minute past it.
    expression = schedule["Properties"]["ScheduleExpression"]
    fields = re.fullmatch(r"cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)", expression)
    assert fields and fields.group(1).isdigit() and fields.group(2) == "*", expression
    fires = NOW.replace(minute=int(fields.group(1)))
    window = DriftWindow.hour_before(fires)
    assert window.end - window.start == dt.timedelta(hours=1)
    assert dt.timedelta(minutes=5) <= fires - window.end < dt.timedelta(hours=1), expression
    assert schedule["Properties"].get("ScheduleExpressionTimezone", "UTC") in ("UTC", "Etc/UTC")


def test_the_first_deployment_creates_the_endpoint_beside_similarly_named_ones(
    deployments: dict[str, Deployment], world: LambdaWorld
) -> None:
    scenario = Scenario(
        "a similar name",
        {},
        "promoted",
        endpoint_exists=False,
        other_endpoints=("claims-risk-dev", "claims-risk-v1"),
    )
    done = walk("prod", "template", deployments["prod"].definition, scenario, world)
    assert "deploy: create endpoint" in done.execution.entered, done.execution.entered
    assert done.execution.entered[-1] == "promoted"


def test_the_notification_subject_fits_any_execution_name(
    deployments: dict[str, Deployment], world: LambdaWorld
) -> None:
    longest = input_shape("stepfunctions", "StartExecution").members["name"]
    name = "r" * int(longest.metadata["max"])
    scenario = Scenario("long name", {}, "promoted", execution_name=name)
    done = walk("dev", "template", deployments["dev"].definition, scenario, world)
    [publish] = [c.request for c in done.calls if c.target.service == "sns"]
    assert len(publish["Subject"]) < 100, publish["Subject"]
