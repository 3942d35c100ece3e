"""The retraining state machine (Amazon States Language), built from the one pipeline definition.

Every step of :data:`step_functions.pipeline.STEPS` becomes the state of the same name: processing,
tuning and training jobs run through Step Functions' ``.sync`` SageMaker integrations, the gates and
the registration are tasks of the pipeline-tasks Lambda, the deploy step updates the endpoint with
the guardrails and waits until it serves (or rolled back), and ``notify`` publishes to the on-call
topic. Hyperparameter ranges, metric regexes and the run's defaults all come from ``pipeline.py``, so
the local runner and this machine cannot disagree; each job's instances come from the stage
(cdk/config.py), checked against what its step can use.

The definition is plain JSON with ``${Name}`` placeholders for what only the deployment knows (role,
bucket, images, ARNs); CDK fills them through ``DefinitionSubstitutions`` and the moto tests with
:func:`substitute`. It uses JSONPath, which moto's interpreter runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from step_functions.pipeline import (
    HYPERPARAMETERS,
    OBJECTIVE_METRIC,
    STEPS,
    TRAINING_METRIC_DEFINITIONS,
    JobResources,
    Step,
    job_resources,
)

# What the deployment fills in (CDK DefinitionSubstitutions); each appears as ${Name} in the ASL.
PLACEHOLDERS: Final = (
    "SageMakerRoleArn",
    "DataBucket",
    "KmsKeyArn",
    "Image",  # the project's image (sagemaker_jobs/image): every job, the endpoint and transform
    "TasksFunctionArn",
    "TopicArn",
    "EndpointName",
    "ModelPackageGroup",
)
# Only with Model Monitor's schedules (an option for accounts that have Model Monitor): its analyzer.
MODEL_MONITOR_PLACEHOLDERS: Final = ("MonitorImage",)
# The processing steps that reach the claims lake, given its CLAIMS_RISK_LAKE_* variables: validate
# reads --source from it and writes the run's claims and rejected rows; evaluate replays captured
# traffic from its inferences.
LAKE_STEPS: Final = ("validate", "evaluate")
PROCESSING_ROOT: Final = "/opt/ml/processing"
JOB_ENTRYPOINT: Final = "job"  # the image's `job MODULE ARGS...` (sagemaker_jobs/image/install.sh)
VARIANT: Final = "AllTraffic"
PREPARE_STATE: Final = "prepare run"
GIVEN_PACKAGE_CHOICE: Final = "given model package?"
TUNING_CHOICE: Final = "search?"
RAW_DATA_PREFIX: Final = "training/raw"  # where an insurer drops the claims to train on
RUNS_PREFIX: Final = "pipeline/runs"
RUN_TAG: Final = "claims-risk:run"
MODEL_CARD_KEY: Final = "models/current/manifest.json"  # the API's model card (GET /models/current)
# The serving model's feature_spec.json (shared.ml.model.SPEC_FILE), beside the card: the batch
# trigger checks dropped CSV headers against it.
MODEL_SPEC_KEY: Final = f"{MODEL_CARD_KEY.rsplit('/', 1)[0]}/feature_spec.json"
CHAMPION_MODEL_KEY: Final = "models/current/model.tar.gz"  # the serving model, for the champion gate
# Model Monitor's data-quality baseline of the serving model (statistics.json, constraints.json).
MONITORING_BASELINE_PREFIX: Final = "monitoring/baseline"
# Its analyzer profiles at most 100,000 sampled training claims (validate's monitor_baseline).
MONITORING_BASELINE_RESOURCES: Final = JobResources("ml.m5.xlarge")

# Errors worth retrying: throttling and transient service faults, never a job that failed on its own.
RETRY_SAGEMAKER: Final = {
    "ErrorEquals": [
        "SageMaker.AmazonSageMakerException",
        "SageMaker.ThrottlingException",
        "SageMaker.ResourceLimitExceededException",
        "ThrottlingException",
    ],
    "IntervalSeconds": 30,
    "MaxAttempts": 4,
    "BackoffRate": 2.0,
    "JitterStrategy": "FULL",
}
RETRY_LAMBDA: Final = {
    "ErrorEquals": [
        "Lambda.TooManyRequestsException",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
    ],
    "IntervalSeconds": 2,
    "MaxAttempts": 5,
    "BackoffRate": 2.0,
    "JitterStrategy": "FULL",
}
SYNC_RESOURCES: Final = {
    "processing": "arn:aws:states:::sagemaker:createProcessingJob.sync",
    "tuning": "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync",
    "training": "arn:aws:states:::sagemaker:createTrainingJob.sync",
}
# The EventBridge rule Step Functions manages for each .sync job kind: its role must be allowed to
# put and describe it, and creating the state machine checks that it is (Step Functions' "IAM
# policies for using Amazon SageMaker AI" page: the tuning job's rule is ...TuningJobsRule).
SYNC_EVENT_RULES: Final = {
    "processing": "StepFunctionsGetEventsForSageMakerProcessingJobsRule",
    "tuning": "StepFunctionsGetEventsForSageMakerTuningJobsRule",
    "training": "StepFunctionsGetEventsForSageMakerTrainingJobsRule",
}


@dataclass(frozen=True)
class DeploymentGuardrails:
    """Blue/green with canary traffic shifting, rolled back by the endpoint's alarms."""

    canary_percent: int
    canary_wait_s: int
    baking_s: int
    rollback_alarms: tuple[str, ...]
    instance_type: str
    initial_instance_count: int
    capture_percent: int
    # Target tracking on invocations per instance, registered by the deploy step once it serves.
    max_instance_count: int = 2
    invocations_per_instance_target: int = 3000
    # Model Monitor's data-quality baseline after each deployment: only for accounts with Model Monitor.
    model_monitor: bool = False

    def deployment_config(self) -> dict[str, Any]:
        """The ``DeploymentConfig`` of UpdateEndpoint and of the CloudFormation endpoint."""
        return {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "CANARY",
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": self.canary_percent},
                    "WaitIntervalInSeconds": self.canary_wait_s,
                },
                # The final baking period: the old fleet stays, ready for a rollback, this long.
                "TerminationWaitInSeconds": self.baking_s,
                "MaximumExecutionTimeoutInSeconds": self.canary_wait_s + self.baking_s + 1800,
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in self.rollback_alarms]},
        }


def _dollar(name: str) -> str:
    return "${" + name + "}"


def placeholder(name: str) -> str:
    """``${Name}``: a value only the deployment knows, as the definition writes it (e.g. in the lake's
    root, ``s3://${DataBucket}/lake/``)."""
    if name not in PLACEHOLDERS + MODEL_MONITOR_PLACEHOLDERS:
        raise KeyError(f"{name} is not a placeholder of the state machine")
    return _dollar(name)


def _job_name(step_name: str) -> str:
    return f"States.Format('claims-risk-{{}}-{step_name}', $.run.id)"


def _run_uri(item: str) -> str:
    return f"States.Format('{{}}/{item}', $.run.prefix)"


def _catch(step_name: str) -> list[dict[str, Any]]:
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": f"failed at {step_name}"}]


def _hyperparameter_ranges() -> dict[str, list[dict[str, Any]]]:
    """SageMaker's ParameterRanges from the one table of hyperparameters."""
    ranges: dict[str, list[dict[str, Any]]] = {
        "IntegerParameterRanges": [],
        "ContinuousParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for hp in HYPERPARAMETERS:
        if not hp.tunable:
            continue
        if hp.kind == "categorical":
            ranges["CategoricalParameterRanges"].append({"Name": hp.name, "Values": list(hp.choices)})
            continue
        key = "IntegerParameterRanges" if hp.kind == "int" else "ContinuousParameterRanges"
        ranges[key].append(
            {
                "Name": hp.name,
                "MinValue": str(hp.low),
                "MaxValue": str(hp.high),
                "ScalingType": "Logarithmic" if hp.log else "Linear",
            }
        )
    return ranges


def _channel(name: str, uri_expression: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri.$": uri_expression,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }


def _resources(resources: JobResources) -> dict[str, Any]:
    """A processing job's ClusterConfig, or a training job's ResourceConfig (the same members)."""
    return {
        "InstanceCount": resources.instance_count,
        "InstanceType": resources.instance_type,
        "VolumeSizeInGB": resources.volume_gb,
        "VolumeKmsKeyId": _dollar("KmsKeyArn"),
    }


def _distribution(step: Step, input_name: str, resources: JobResources) -> str:
    """On several instances, an input the job reads shard by shard is split by S3 key (each instance
    gets its share of the objects); every other input, and any input on one instance, is copied whole."""
    sharded = resources.instance_count > 1 and input_name in step.shardable_inputs
    return "ShardedByS3Key" if sharded else "FullyReplicated"


def _input_uri(name: str) -> str:
    if name == "raw":
        return f"States.Format('s3://{_dollar('DataBucket')}/{RAW_DATA_PREFIX}/')"
    if name == "model":
        return "$.jobs.train.model"
    return _run_uri(name)


def _container_arguments(step: Step) -> str | None:
    """The job's command line, from the step's fixed arguments and the run's inputs."""
    parts = [f"'{a}'" for a in step.arguments]
    for flag, field_name in step.input_arguments:
        parts += [f"'{flag}'", f"States.Format('{{}}', $.inputs.{field_name})"]
    return f"States.Array({', '.join(parts)})" if parts else None


def _job_task(
    step: Step,
    kind: str,
    parameters: dict[str, Any],
    result: dict[str, str],
    next_state: str,
    *,
    result_path: str | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    """A SageMaker job run to its end (``.sync``), tagged with the run, retried on throttling and
    caught into the step's failure path."""
    return {
        "Type": "Task",
        "Comment": comment or step.description,
        "Resource": SYNC_RESOURCES[kind],
        "Parameters": {**parameters, "Tags": [{"Key": RUN_TAG, "Value.$": "$$.Execution.Name"}]},
        "ResultSelector": result,
        "ResultPath": result_path or f"$.jobs.{step.name}",
        "Retry": [RETRY_SAGEMAKER],
        "Catch": _catch(step.name),
        "Next": next_state,
    }


PROCESSING_RESULT: Final = {"name.$": "$.ProcessingJobName", "status.$": "$.ProcessingJobStatus"}


def _processing_state(
    step: Step, next_state: str, resources: JobResources, lake: Mapping[str, str] | None = None
) -> dict[str, Any]:
    # The image carries the code and every library: nothing to fetch or install when the job starts.
    app_spec: dict[str, Any] = {
        "ImageUri": _dollar("Image"),
        "ContainerEntrypoint": [JOB_ENTRYPOINT, step.module],
    }
    arguments = _container_arguments(step)
    if arguments:
        app_spec["ContainerArguments.$"] = arguments
    # The evaluate job scores the serving model too, for the champion gate (absent on the first run).
    environment = (
        {"CLAIMS_RISK_CHAMPION_URI": f"s3://{_dollar('DataBucket')}/{CHAMPION_MODEL_KEY}"}
        if "champion" in step.optional_inputs
        else {}
    )
    if lake and step.name in LAKE_STEPS:
        environment.update(lake)
    inputs = []
    for name in step.inputs:
        inputs.append(
            {
                "InputName": name,
                "S3Input": {
                    "S3Uri.$": _input_uri(name),
                    "LocalPath": f"{PROCESSING_ROOT}/input/{name}",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": _distribution(step, name, resources),
                },
            }
        )
    outputs = [
        {
            "OutputName": name,
            "S3Output": {
                "S3Uri.$": _run_uri(name),
                "LocalPath": f"{PROCESSING_ROOT}/output/{name}",
                "S3UploadMode": "EndOfJob",
            },
        }
        for name in step.outputs
    ]
    parameters = {
        "ProcessingJobName.$": _job_name(step.name),
        "RoleArn": _dollar("SageMakerRoleArn"),
        "AppSpecification": app_spec,
        "ProcessingInputs": inputs,
        "ProcessingOutputConfig": {"Outputs": outputs, "KmsKeyId": _dollar("KmsKeyArn")},
        "ProcessingResources": {"ClusterConfig": _resources(resources)},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        **({"Environment": environment} if environment else {}),
    }
    return _job_task(step, "processing", parameters, PROCESSING_RESULT, next_state)


def _training_definition(resources: JobResources) -> dict[str, Any]:
    return {
        "AlgorithmSpecification": {
            "TrainingImage": _dollar("Image"),
            "TrainingInputMode": "File",
            "MetricDefinitions": [dict(d) for d in TRAINING_METRIC_DEFINITIONS],
        },
        "RoleArn": _dollar("SageMakerRoleArn"),
        "InputDataConfig": [_channel(name, _run_uri(name)) for name in ("train", "validation")],
        "OutputDataConfig": {"S3OutputPath.$": _run_uri("tuning"), "KmsKeyId": _dollar("KmsKeyArn")},
        "ResourceConfig": _resources(resources),
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        # The run's seed and costs, and its sample size per trial (see pipeline.prepare_run).
        "StaticHyperParameters.$": "$.trial_hyperparameters",
        "EnableNetworkIsolation": True,  # a trial reads its channels and writes its model, nothing else
    }


def _tuning_state(step: Step, next_state: str, resources: JobResources) -> dict[str, Any]:
    parameters = {
        "HyperParameterTuningJobName.$": _job_name(step.name),
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": OBJECTIVE_METRIC},
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs.$": "$.inputs.tuning_trials",
                "MaxParallelTrainingJobs.$": "$.tuning.max_parallel",
                "MaxRuntimeInSeconds.$": "$.tuning.max_runtime_s",  # the run's tuning_timeout_s
            },
            "ParameterRanges": _hyperparameter_ranges(),
            "TrainingJobEarlyStoppingType": "Auto",
        },
        "TrainingJobDefinition": _training_definition(resources),
    }
    result = {
        "best_job.$": "$.BestTrainingJob.TrainingJobName",
        "hyperparameters.$": "$.BestTrainingJob.TunedHyperParameters",
    }
    return _job_task(step, "tuning", parameters, result, next_state)


def _training_state(step: Step, next_state: str, resources: JobResources) -> dict[str, Any]:
    channels = [_channel(name, _run_uri(name)) for name in step.inputs if name != "hyperparameters"]
    parameters = {
        "TrainingJobName.$": _job_name(step.name),
        "AlgorithmSpecification": {
            "TrainingImage": _dollar("Image"),
            "TrainingInputMode": "File",
            "MetricDefinitions": [dict(d) for d in TRAINING_METRIC_DEFINITIONS],
        },
        "RoleArn": _dollar("SageMakerRoleArn"),
        # Fixed values, then the tuner's best, then the run's own overrides (strings, as SageMaker wants).
        "HyperParameters.$": "States.JsonMerge(States.JsonMerge($.static_hyperparameters, "
        "$.jobs.tune.hyperparameters, false), $.hyperparameter_overrides, false)",
        "EnableNetworkIsolation": True,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath.$": _run_uri("model"), "KmsKeyId": _dollar("KmsKeyArn")},
        "ResourceConfig": _resources(resources),
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
    }
    result = {"name.$": "$.TrainingJobName", "model.$": "$.ModelArtifacts.S3ModelArtifacts"}
    return _job_task(step, "training", parameters, result, next_state)


def _tasks_state(
    step: Step, payload: dict[str, Any], result: dict[str, str], next_state: str
) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Comment": step.description,
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {
            "FunctionName": _dollar("TasksFunctionArn"),
            "Payload": {"action": step.name, **payload},
        },
        "ResultSelector": result,
        "ResultPath": f"$.{step.name}",
        "Retry": [RETRY_LAMBDA],
        "Catch": _catch(step.name),
        "Next": next_state,
    }


def _sdk_state(
    action: str,
    parameters: dict[str, Any],
    result: dict[str, str] | None,
    next_state: str,
    service: str = "sagemaker",
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "Type": "Task",
        "Resource": f"arn:aws:states:::aws-sdk:{service}:{action}",
        "Parameters": parameters,
        "Retry": [RETRY_SAGEMAKER],
        "Catch": _catch("deploy"),
        "Next": next_state,
    }
    if result is None:
        state["ResultPath"] = None
    else:
        state["ResultSelector"] = result
        state["ResultPath"] = f"$.deploy.{action}"
    return state


def _monitoring_baseline_state(step: Step, next_state: str) -> dict[str, Any]:
    """Model Monitor's analyzer profiles the new model's training claims: the baseline its hourly
    data-quality job compares captured requests against."""
    baseline_input = f"{PROCESSING_ROOT}/input/baseline_dataset_input"
    parameters = {
        "ProcessingJobName.$": _job_name("baseline"),
        "RoleArn": _dollar("SageMakerRoleArn"),
        "AppSpecification": {"ImageUri": _dollar("MonitorImage")},
        "Environment": {
            "dataset_format": json.dumps({"json": {"lines": True}}),
            "dataset_source": baseline_input,
            "output_path": f"{PROCESSING_ROOT}/output",
            "publish_cloudwatch_metrics": "Disabled",
        },
        "ProcessingInputs": [
            {
                "InputName": "baseline_dataset_input",
                "S3Input": {
                    "S3Uri.$": _run_uri("monitor_baseline"),
                    "LocalPath": baseline_input,
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "baseline",
                    "S3Output": {
                        "S3Uri": f"s3://{_dollar('DataBucket')}/{MONITORING_BASELINE_PREFIX}",
                        "LocalPath": f"{PROCESSING_ROOT}/output",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ],
            "KmsKeyId": _dollar("KmsKeyArn"),
        },
        "ProcessingResources": {"ClusterConfig": _resources(MONITORING_BASELINE_RESOURCES)},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    return _job_task(
        step,
        "processing",
        parameters,
        PROCESSING_RESULT,
        next_state,
        result_path="$.deploy.baseline",
        comment="the data-quality baseline of the model that now serves",
    )


def _deploy_states(
    step: Step, guardrails: DeploymentGuardrails, next_state: str
) -> dict[str, dict[str, Any]]:
    """Model → endpoint config → guarded update (or create, the first time) → wait until it serves.

    With auto-rollback the endpoint ends InService on its *old* config, so success is judged by the
    config it serves, not by its status alone.
    """
    config_name = "$.deploy.config_name"
    variant = {
        "VariantName": VARIANT,
        "ModelName.$": config_name,
        "InstanceType": guardrails.instance_type,
        "InitialInstanceCount": guardrails.initial_instance_count,
    }
    capture = {
        "EnableCapture": True,
        "InitialSamplingPercentage": guardrails.capture_percent,
        "DestinationS3Uri": f"s3://{_dollar('DataBucket')}/monitoring/capture",
        "KmsKeyId": _dollar("KmsKeyArn"),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
    }
    deployment = guardrails.deployment_config()
    states: dict[str, dict[str, Any]] = {
        step.name: {
            "Type": "Pass",
            "Comment": step.description,
            # Model and endpoint config share one name, used again to judge the rollout.
            "Parameters": {"config_name.$": "States.Format('claims-risk-{}', $.run.id)"},
            "ResultPath": "$.deploy",
            "Next": "deploy: model",
        },
        "deploy: model": _sdk_state(
            "createModel",
            {
                "ModelName.$": config_name,
                "ExecutionRoleArn": _dollar("SageMakerRoleArn"),
                "PrimaryContainer": {"ModelPackageName.$": "$.register.model_package_arn"},
                "Tags": [{"Key": RUN_TAG, "Value.$": "$$.Execution.Name"}],
            },
            None,
            "deploy: endpoint config",
        ),
        "deploy: endpoint config": _sdk_state(
            "createEndpointConfig",
            {
                "EndpointConfigName.$": config_name,
                "ProductionVariants": [variant],
                "DataCaptureConfig": capture,
                "KmsKeyId": _dollar("KmsKeyArn"),
            },
            None,
            "deploy: does the endpoint exist?",
        ),
        "deploy: does the endpoint exist?": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:sagemaker:listEndpoints",
            # NameContains matches substrings (claims-risk-dev contains claims-risk): keep exact names
            # only. Paths may filter (https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-paths.html).
            "Parameters": {"NameContains": _dollar("EndpointName"), "MaxResults": 100},
            "ResultSelector": {
                "names.$": f"$.Endpoints[?(@.EndpointName == '{_dollar('EndpointName')}')].EndpointName"
            },
            "ResultPath": "$.deploy.existing",
            "Retry": [RETRY_SAGEMAKER],
            "Catch": _catch("deploy"),
            "Next": "deploy: update or create",
        },
        "deploy: update or create": {
            "Type": "Choice",
            "Choices": [
                {
                    "Variable": "$.deploy.existing.names[0]",
                    "IsPresent": True,
                    "Next": "deploy: guarded update",
                }
            ],
            "Default": "deploy: create endpoint",
        },
        "deploy: guarded update": _sdk_state(
            "updateEndpoint",
            {
                "EndpointName": _dollar("EndpointName"),
                "EndpointConfigName.$": config_name,
                "DeploymentConfig": deployment,
                # Keep the instance count autoscaling has set, whatever the new config's initial count.
                "RetainAllVariantProperties": True,
            },
            None,
            "deploy: wait",
        ),
        "deploy: create endpoint": _sdk_state(
            "createEndpoint",
            {"EndpointName": _dollar("EndpointName"), "EndpointConfigName.$": config_name},
            None,
            "deploy: wait",
        ),
        "deploy: wait": {"Type": "Wait", "Seconds": 60, "Next": "deploy: status"},
        "deploy: status": _sdk_state(
            "describeEndpoint",
            {"EndpointName": _dollar("EndpointName")},
            {"status.$": "$.EndpointStatus", "config.$": "$.EndpointConfigName"},
            "deploy: serving?",
        ),
        "deploy: serving?": {
            "Type": "Choice",
            "Choices": [
                {
                    "And": [
                        {"Variable": "$.deploy.describeEndpoint.status", "StringEquals": "InService"},
                        {
                            "Variable": "$.deploy.describeEndpoint.config",
                            "StringEqualsPath": "$.deploy.config_name",
                        },
                    ],
                    "Next": "deploy: autoscaling",
                },
                {
                    "Or": [
                        {"Variable": "$.deploy.describeEndpoint.status", "StringEquals": "InService"},
                        {"Variable": "$.deploy.describeEndpoint.status", "StringEquals": "Failed"},
                    ],
                    "Next": "deploy: rolled back",
                },
            ],
            "Default": "deploy: wait",
        },
        "deploy: model card": {
            "Type": "Task",
            "Comment": "the serving model's manifest becomes the API's model card, its feature spec "
            "the one dropped CSV headers are checked against, and the model the next run's "
            "challenger must beat",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {
                "FunctionName": _dollar("TasksFunctionArn"),
                "Payload": {
                    "action": "publish_card",
                    "model.$": "$.jobs.train.model",
                    "card": f"s3://{_dollar('DataBucket')}/{MODEL_CARD_KEY}",
                    "champion": f"s3://{_dollar('DataBucket')}/{CHAMPION_MODEL_KEY}",
                    "spec": f"s3://{_dollar('DataBucket')}/{MODEL_SPEC_KEY}",
                },
            },
            "ResultSelector": {"card.$": "$.Payload.card"},
            "ResultPath": "$.deploy.card",
            "Retry": [RETRY_LAMBDA],
            "Catch": _catch("deploy"),
            "Next": "deploy: monitoring baseline" if guardrails.model_monitor else next_state,
        },
        **_autoscaling_states(guardrails, "deploy: model card"),
        "deploy: rolled back": {
            "Type": "Pass",
            "Parameters": {
                "Error": "DeploymentRolledBack",
                "Cause.$": "States.Format('the endpoint serves {} ({}), not the new model: the guardrail "
                "alarms rolled it back or the update failed', $.deploy.describeEndpoint.config, "
                "$.deploy.describeEndpoint.status)",
            },
            "ResultPath": "$.failure",
            "Next": "failed at deploy",
        },
    }
    if guardrails.model_monitor:
        states["deploy: monitoring baseline"] = _monitoring_baseline_state(step, next_state)
    return states


def _autoscaling_states(guardrails: DeploymentGuardrails, next_state: str) -> dict[str, dict[str, Any]]:
    """Target tracking on invocations per instance, (re)registered once the endpoint serves, so the
    endpoint scales whichever way its first model arrived. Both calls are idempotent, and a new model
    on the same instance type keeps its scaling ("Update endpoints that use auto scaling", SageMaker
    developer guide)."""
    target = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": f"endpoint/{_dollar('EndpointName')}/variant/{VARIANT}",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    return {
        "deploy: autoscaling": _sdk_state(
            "registerScalableTarget",
            {
                **target,
                "MinCapacity": guardrails.initial_instance_count,
                "MaxCapacity": guardrails.max_instance_count,
            },
            None,
            "deploy: scaling policy",
            service="applicationautoscaling",
        ),
        "deploy: scaling policy": _sdk_state(
            "putScalingPolicy",
            {
                **target,
                "PolicyName": f"{_dollar('EndpointName')}-invocations-per-instance",
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": guardrails.invocations_per_instance_target,
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                    },
                    "ScaleInCooldown": 600,
                    "ScaleOutCooldown": 120,
                },
            },
            None,
            next_state,
            service="applicationautoscaling",
        ),
    }


def _given_package_states(first_step: str, deploy_step: str) -> dict[str, dict[str, Any]]:
    """``{"model_package_arn": ...}`` deploys an approved package instead of training one, through the
    same deploy step: the endpoint has one owner whichever way its model arrives."""
    return {
        GIVEN_PACKAGE_CHOICE: {
            "Type": "Choice",
            "Choices": [
                {
                    "And": [
                        {"Variable": "$.inputs.model_package_arn", "IsPresent": True},
                        {"Variable": "$.inputs.model_package_arn", "IsString": True},
                    ],
                    "Next": "given package: model data",
                }
            ],
            "Default": first_step,
        },
        "given package: model data": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeModelPackage",
            "Parameters": {"ModelPackageName.$": "$.inputs.model_package_arn"},
            "ResultSelector": {
                "model.$": "$.InferenceSpecification.Containers[0].ModelDataUrl",
                "model_package_arn.$": "$.ModelPackageArn",
                "approval.$": "$.ModelApprovalStatus",
            },
            "ResultPath": "$.jobs.train",
            "Retry": [RETRY_SAGEMAKER],
            "Catch": _catch(deploy_step),
            "Next": "given package: approved?",
        },
        "given package: approved?": {
            "Type": "Choice",
            "Choices": [
                {
                    "Variable": "$.jobs.train.approval",
                    "StringEquals": "Approved",
                    "Next": "given package: gates",
                }
            ],
            "Default": "given package: not approved",
        },
        "given package: not approved": {
            "Type": "Pass",
            "Parameters": {
                "Error": "ModelPackageNotApproved",
                "Cause.$": "States.Format('model package {} is {}, not Approved: nothing was deployed', "
                "$.jobs.train.model_package_arn, $.jobs.train.approval)",
            },
            "ResultPath": "$.failure",
            "Next": f"failed at {deploy_step}",
        },
        "given package: gates": {
            "Type": "Pass",
            "Comment": "an approved package passed its gates when it was registered",
            "Result": {"passed": True, "summary": "an approved model package, deployed as given"},
            "ResultPath": "$.gates",
            "Next": "given package: registration",
        },
        "given package: registration": {
            "Type": "Pass",
            "Parameters": {"model_package_arn.$": "$.jobs.train.model_package_arn", "model_version": "given"},
            "ResultPath": "$.register",
            "Next": deploy_step,
        },
    }


def definition(
    guardrails: DeploymentGuardrails,
    resources: Mapping[str, JobResources] | None = None,
    lake: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The state machine, as an ASL document with ``${Name}`` placeholders; ``resources``: the
    stage's instances per job step (cdk/config.py), checked by :func:`job_resources`; ``lake``: the
    claims lake's variables for the steps of :data:`LAKE_STEPS` (none: they write no lake)."""
    unknown = sorted(set(LAKE_STEPS) - {s.name for s in STEPS if s.kind == "processing"})
    if unknown:
        raise ValueError(f"LAKE_STEPS names no processing step {unknown}")
    jobs = job_resources(resources)
    names = [s.name for s in STEPS]
    main = [s for s in STEPS if s.kind != "notify"]
    states: dict[str, Any] = {
        PREPARE_STATE: {
            "Type": "Task",
            "Comment": "check the run's input and fill every default (nested ones too), so a console "
            "start with {} runs the whole pipeline and a typo fails before any job is paid for",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {
                "FunctionName": _dollar("TasksFunctionArn"),
                "Payload": {"action": "prepare", "input.$": "$$.Execution.Input"},
            },
            "ResultSelector": {
                "inputs.$": "$.Payload.inputs",
                "static_hyperparameters.$": "$.Payload.static_hyperparameters",
                "trial_hyperparameters.$": "$.Payload.trial_hyperparameters",
                "hyperparameter_overrides.$": "$.Payload.hyperparameter_overrides",
                "tuning.$": "$.Payload.tuning",
                "run": {
                    "id.$": "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 0)",
                    "execution.$": "$$.Execution.Name",
                },
            },
            "ResultPath": "$",
            "Retry": [RETRY_LAMBDA],
            "Catch": _catch(PREPARE_STATE),
            "Next": "name run folder",
        },
        "name run folder": {
            "Type": "Pass",
            "Parameters": {
                "id.$": "$.run.id",
                "execution.$": "$.run.execution",
                "prefix.$": f"States.Format('s3://{_dollar('DataBucket')}/{RUNS_PREFIX}/{{}}', $.run.id)",
            },
            "ResultPath": "$.run",
            "Next": GIVEN_PACKAGE_CHOICE,
        },
        **_given_package_states(first_step=names[0], deploy_step="deploy"),
    }
    for position, step in enumerate(main):
        following = main[position + 1].name if position + 1 < len(main) else "notify"
        if position + 1 < len(main) and main[position + 1].kind == "tuning":
            following = TUNING_CHOICE
        if step.kind == "processing":
            states[step.name] = _processing_state(step, following, jobs[step.name], lake)
        elif step.kind == "tuning":
            states[step.name] = _tuning_state(step, following, jobs[step.name])
            # SageMaker's tuner needs at least one trial: 0 trials means the defaults, no search.
            states[TUNING_CHOICE] = {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.inputs.tuning_trials", "NumericGreaterThan": 0, "Next": step.name}
                ],
                "Default": f"{step.name}: skipped",
            }
            states[f"{step.name}: skipped"] = {
                "Type": "Pass",
                "Comment": "tuning_trials 0: the final training uses the defaults and the run's overrides",
                "Result": {"best_job": "", "hyperparameters": {}},
                "ResultPath": f"$.jobs.{step.name}",
                "Next": following,
            }
        elif step.kind == "training":
            states[step.name] = _training_state(step, following, jobs[step.name])
        elif step.kind == "gates":
            states[step.name] = _tasks_state(
                step,
                {
                    "quality.$": _run_uri("quality/data_quality.json"),
                    "evaluation.$": _run_uri("evaluation/evaluation.json"),
                    "gates.$": "$.inputs.gates",
                    # Named here, the gates step tracks every challenger in the model registry,
                    # rejected ones included, with the gated report beside it in the run folder.
                    "model.$": "$.jobs.train.model",
                    "image": _dollar("Image"),
                    "model_package_group": _dollar("ModelPackageGroup"),
                    "run.$": "$.run.execution",
                    "run_folder.$": "$.run.prefix",
                },
                {
                    "passed.$": "$.Payload.passed",
                    "summary.$": "$.Payload.summary",
                    "tracked.$": "$.Payload.tracked",
                    "report.$": "$.Payload.report",
                },
                "gates passed?",
            )
            states["gates passed?"] = {
                "Type": "Choice",
                "Choices": [{"Variable": "$.gates.passed", "BooleanEquals": True, "Next": following}],
                "Default": step.on_stop_next or "notify",
            }
        elif step.kind == "register":
            states[step.name] = _tasks_state(
                step,
                {
                    "model.$": "$.jobs.train.model",
                    "quality.$": _run_uri("quality/data_quality.json"),
                    "evaluation.$": _run_uri("evaluation/evaluation.json"),
                    "report.$": _run_uri("evaluation/report.html"),
                    "gates.$": "$.inputs.gates",
                    "image": _dollar("Image"),
                    "model_package_group": _dollar("ModelPackageGroup"),
                    "run.$": "$.run.execution",
                    "run_folder.$": "$.run.prefix",
                },
                {
                    "model_package_arn.$": "$.Payload.model_package_arn",
                    "model_version.$": "$.Payload.model_version",
                },
                following,
            )
        elif step.kind == "deploy":
            states.update(_deploy_states(step, guardrails, following))
    states["notify"] = {
        "Type": "Task",
        "Comment": next(s.description for s in STEPS if s.kind == "notify"),
        "Resource": "arn:aws:states:::sns:publish",
        "Parameters": {
            "TopicArn": _dollar("TopicArn"),
            # SNS subjects are under 100 characters and execution names up to 80: the name is in the message.
            "Subject": "claims-risk retraining ended",
            "Message.$": "$",
        },
        "ResultPath": None,
        "Retry": [
            {"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 5, "MaxAttempts": 3, "BackoffRate": 2.0}
        ],
        "Next": "outcome",
    }
    states["outcome"] = {
        "Type": "Choice",
        "Choices": [
            {"Variable": "$.failure", "IsPresent": True, "Next": "run failed"},
            {
                "And": [
                    {"Variable": "$.gates", "IsPresent": True},
                    {"Variable": "$.gates.passed", "BooleanEquals": True},
                ],
                "Next": "promoted",
            },
        ],
        "Default": "not promoted",
    }
    states["promoted"] = {"Type": "Succeed", "Comment": "the challenger serves and is the champion"}
    states["not promoted"] = {"Type": "Succeed", "Comment": "the gates kept the champion"}
    states["run failed"] = {
        "Type": "Fail",
        "Error": "RetrainingFailed",
        "Cause": "a step failed; see the notification",
    }
    for failed in [PREPARE_STATE, *(s.name for s in main)]:
        states[f"failed at {failed}"] = {
            "Type": "Pass",
            "Result": failed,
            "ResultPath": "$.failed_step",
            "Next": "notify",
        }
    return {
        "Comment": "claims-risk retraining: " + " → ".join(names),
        "StartAt": PREPARE_STATE,
        "States": states,
    }


def definition_json(
    guardrails: DeploymentGuardrails,
    resources: Mapping[str, JobResources] | None = None,
    lake: Mapping[str, str] | None = None,
) -> str:
    return json.dumps(definition(guardrails, resources, lake), indent=1, ensure_ascii=False)


def substitute(asl: str, values: dict[str, str]) -> str:
    """Fill the ``${Name}`` placeholders as Step Functions' DefinitionSubstitutions would."""
    missing = set(re.findall(r"\$\{(\w+)\}", asl)) - set(values)
    if missing:
        raise KeyError(f"no value for placeholders {sorted(missing)}")
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], asl)


def step_states(asl: dict[str, Any]) -> list[str]:
    """The pipeline steps in the order a run meets them, read off the state machine."""
    names = {s.name for s in STEPS}
    order: list[str] = []
    state_name: str | None = asl["StartAt"]
    seen: set[str] = set()
    while state_name and state_name not in seen:
        seen.add(state_name)
        if state_name in names:
            order.append(state_name)
        state = asl["States"][state_name]
        if state_name == GIVEN_PACKAGE_CHOICE:  # a training run, not the deployment of a given package
            state_name = state["Default"]
        elif state["Type"] == "Choice":
            # Follow the happy path: the first choice (gates passed, endpoint serving).
            state_name = state["Choices"][0]["Next"]
            if state_name in seen:
                state_name = state.get("Default")
        else:
            state_name = state.get("Next")
    return order
