"""The alarms that page on-call, defined once.

CDK turns each definition into a CloudWatch alarm on the SNS on-call topic; the local alarm sink
evaluates the same definitions over the local metrics. The drift job publishes the drift metrics
under these names, and the model-quality job (``claims-risk monitor quality`` offline, the quality
job in AWS) the quality metrics, so a renamed metric breaks a test rather than silencing an alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

MONITORING_NAMESPACE: Final = "ClaimsRisk/Monitoring"
# The drift metrics the drift job publishes (dimension: the endpoint's name).
FEATURE_DRIFT_METRIC: Final = "feature_drift_psi_max"
PREDICTION_DRIFT_METRIC: Final = "prediction_drift_psi"
MISSING_RATE_METRIC: Final = "missing_rate_increase_max"
# Model quality once outcomes are known (shared/ml/quality.py), dimension: the endpoint's name. A
# namespace of its own: the drift job publishes every ClaimsRisk/Monitoring metric, these it does not.
QUALITY_NAMESPACE: Final = "ClaimsRisk/ModelQuality"
# The largest fall of recall or precision (at the model's threshold) below the model's test figures,
# over the figures the newest judged day or week had enough claims for: the model-quality alarm's.
QUALITY_DROP_METRIC: Final = "model_quality_drop"
# The figures each run publishes beside it (the dashboard's); ``<name>_drop`` is the model's test
# figure less this one (positive: worse than tested).
RECALL_METRIC: Final = "quality_recall"  # at the model's threshold
PRECISION_METRIC: Final = "quality_precision"
FNR_METRIC: Final = "quality_false_negative_rate"
ROC_AUC_METRIC: Final = "quality_roc_auc"
PR_AUC_METRIC: Final = "quality_pr_auc"
LABELLED_METRIC: Final = "quality_labelled"

Comparison = Literal["GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold"]
Component = Literal["api", "endpoint", "monitoring", "pipeline", "batch", "lambda", "runtime"]
# The local runtime's own health (``claims-risk up``'s supervisor); AWS runs managed services instead.
RUNTIME_NAMESPACE: Final = "ClaimsRisk/LocalRuntime"
PROCESS_RESTARTS_METRIC: Final = "ProcessRestarts"


@dataclass(frozen=True)
class AlarmDefinition:
    key: str
    component: Component
    description: str
    namespace: str
    metric: str
    statistic: str  # Sum, Average, Maximum or a percentile such as p95
    threshold: float
    comparison: Comparison
    period_s: int
    evaluation_periods: int
    datapoints_to_alarm: int
    dimensions: tuple[str, ...]  # names; the deployment gives their values
    # Missing data is "nothing happened": no drift report, no requests, no failures.
    treat_missing_data: Literal["notBreaching", "breaching", "missing", "ignore"] = "notBreaching"

    def alarm_name(self, prefix: str) -> str:
        return f"{prefix}-{self.key}"


ALARMS: Final[tuple[AlarmDefinition, ...]] = (
    AlarmDefinition(
        "feature-drift",
        "monitoring",
        "a feature's distribution moved away from the training data (PSI above 0.25 is a major shift)",
        MONITORING_NAMESPACE,
        FEATURE_DRIFT_METRIC,
        "Maximum",
        0.25,
        "GreaterThanThreshold",
        3600,
        1,
        1,
        ("Endpoint",),
    ),
    AlarmDefinition(
        "prediction-drift",
        "monitoring",
        "the distribution of risk scores moved away from the holdout's (PSI above 0.2)",
        MONITORING_NAMESPACE,
        PREDICTION_DRIFT_METRIC,
        "Maximum",
        0.2,
        "GreaterThanThreshold",
        3600,
        1,
        1,
        ("Endpoint",),
    ),
    AlarmDefinition(
        "missing-values",
        "monitoring",
        "a feature is missing in 10 points more of the claims than in training",
        MONITORING_NAMESPACE,
        MISSING_RATE_METRIC,
        "Maximum",
        0.10,
        "GreaterThanThreshold",
        3600,
        1,
        1,
        ("Endpoint",),
    ),
    AlarmDefinition(
        "model-quality",
        "monitoring",
        "on claims whose outcome is now known, recall or precision at the model's threshold fell more "
        "than 0.10 below the model's test figures (the newest day with enough labels)",
        QUALITY_NAMESPACE,
        QUALITY_DROP_METRIC,
        "Maximum",
        0.10,
        "GreaterThanThreshold",
        # One datum per quality run (a labels file): a minute holds one run, so the newest verdict
        # decides; two runs in one minute count by the worse (Maximum), which errs towards paging.
        60,
        1,
        1,
        ("Endpoint",),
        # Outcomes arrive now and then: between two labels files the last verdict stands.
        treat_missing_data="ignore",
    ),
    AlarmDefinition(
        "quality-job-failed",
        "monitoring",
        "a model-quality job (a labels file under outcomes/incoming/) failed or stopped: its outcomes "
        "were not judged, the file is still where it was dropped",
        "AWS/Events",
        "TriggeredRules",
        "Sum",
        1,
        "GreaterThanOrEqualToThreshold",
        300,
        1,
        1,
        ("RuleName",),
    ),
    AlarmDefinition(
        "endpoint-5xx",
        "endpoint",
        "the model endpoint failed more than 5 invocations in 5 minutes (also rolls a deployment back)",
        "AWS/SageMaker",
        "Invocation5XXErrors",
        "Sum",
        5,
        "GreaterThanThreshold",
        300,
        1,
        1,
        ("EndpointName", "VariantName"),
    ),
    AlarmDefinition(
        "endpoint-latency",
        "endpoint",
        "the model's p95 latency exceeded 250 ms for 3 minutes (also rolls a deployment back)",
        "AWS/SageMaker",
        "ModelLatency",  # microseconds
        "p95",
        250_000,
        "GreaterThanThreshold",
        60,
        3,
        3,
        ("EndpointName", "VariantName"),
    ),
    AlarmDefinition(
        "api-5xx",
        "api",
        "the API answered more than 5 server errors in 5 minutes",
        "AWS/ApiGateway",
        "5XXError",
        "Sum",
        5,
        "GreaterThanThreshold",
        300,
        1,
        1,
        ("ApiName", "Stage"),
    ),
    AlarmDefinition(
        "api-latency",
        "api",
        "the API's p95 latency exceeded 1.5 s for 5 minutes",
        "AWS/ApiGateway",
        "Latency",
        "p95",
        1500,
        "GreaterThanThreshold",
        60,
        5,
        5,
        ("ApiName", "Stage"),
    ),
    AlarmDefinition(
        "api-throttled",
        "api",
        "more than 20% of the API's answers were client errors, throttling (429) included, for 10 minutes",
        "AWS/ApiGateway",
        "4XXError",
        "Average",
        0.2,
        "GreaterThanThreshold",
        300,
        2,
        2,
        ("ApiName", "Stage"),
    ),
    AlarmDefinition(
        "lambda-errors",
        "lambda",
        "a function failed",
        "AWS/Lambda",
        "Errors",
        "Sum",
        0,
        "GreaterThanThreshold",
        300,
        1,
        1,
        ("FunctionName",),
    ),
    AlarmDefinition(
        "lambda-throttles",
        "lambda",
        "a function was throttled by its concurrency limit",
        "AWS/Lambda",
        "Throttles",
        "Sum",
        0,
        "GreaterThanThreshold",
        300,
        1,
        1,
        ("FunctionName",),
    ),
    AlarmDefinition(
        "pipeline-failed",
        "pipeline",
        "a retraining run failed",
        "AWS/States",
        "ExecutionsFailed",
        "Sum",
        1,
        "GreaterThanOrEqualToThreshold",
        300,
        1,
        1,
        ("StateMachineArn",),
    ),
    AlarmDefinition(
        "batch-failed",
        "batch",
        "a drop-folder batch transform job failed or stopped",
        "AWS/Events",
        "TriggeredRules",
        "Sum",
        1,
        "GreaterThanOrEqualToThreshold",
        300,
        1,
        1,
        ("RuleName",),
    ),
)


# Evaluated only by the local alarm sink: in AWS, Lambda and SageMaker restart their own processes.
LOCAL_ALARMS: Final[tuple[AlarmDefinition, ...]] = (
    AlarmDefinition(
        "process-restarts",
        "runtime",
        "a process of the local runtime (model server, API, drop-folder watcher, alarm sink) crashed and "
        "was restarted",
        RUNTIME_NAMESPACE,
        PROCESS_RESTARTS_METRIC,
        "Sum",
        1,
        "GreaterThanOrEqualToThreshold",
        60,
        1,
        1,
        ("Process",),
    ),
)


# The alarms that may start a retraining run (off unless the stage, or the local run, opts in).
RETRAIN_ON_ALARMS: Final = frozenset({"feature-drift", "prediction-drift"})


def alarm(key: str) -> AlarmDefinition:
    for definition in ALARMS:
        if definition.key == key:
            return definition
    raise KeyError(key)
