"""Per-stage settings, in one place: what differs between dev and prod, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs

from shared.auth import DEFAULT_REQUESTS_PER_MINUTE

# Public Powertools for AWS Lambda (Python) V3 layer; it carries pydantic, which the handlers need.
POWERTOOLS_LAYER_ACCOUNT = "017000801446"
POWERTOOLS_LAYER_VERSION = 27


@dataclass(frozen=True)
class StageConfig:
    stage: str
    # API Gateway: the stage's overall limits, and each machine client's (the brief: 100 a minute).
    throttle_rate_per_s: int
    throttle_burst: int
    client_requests_per_minute: int
    client_daily_quota: int
    web_page_requests_per_s: int  # all claims handlers on the web page together
    waf_requests_per_5_min_per_ip: int
    lambda_memory_mb: int
    log_retention: logs.RetentionDays
    removal_policy: RemovalPolicy
    # The real-time endpoint and its guardrails.
    endpoint_instance_type: str
    endpoint_min_instances: int
    endpoint_max_instances: int
    invocations_per_instance_target: int  # per minute, for target tracking
    canary_percent: int
    canary_wait_s: int
    baking_s: int
    capture_percent: int
    # Retraining and batch.
    retrain_schedule_cron: str  # EventBridge cron(...) expression
    retrain_on_schedule: bool
    retrain_on_drift: bool  # as locally: off unless the insurer opts in
    transform_instance_type: str
    monitor_schedule_cron: str  # Model Monitor's own schedule (accounts that have it): hourly at :00
    # Our drift job (EventBridge Scheduler): each hour, after the previous hour's capture is written.
    drift_schedule_cron: str = "cron(10 * * * ? *)"

    @property
    def prefix(self) -> str:
        return f"claims-risk-{self.stage}"


STAGES = {
    "dev": StageConfig(
        "dev",
        throttle_rate_per_s=50,
        throttle_burst=100,
        client_requests_per_minute=DEFAULT_REQUESTS_PER_MINUTE,
        client_daily_quota=20_000,
        web_page_requests_per_s=10,
        waf_requests_per_5_min_per_ip=1000,
        lambda_memory_mb=512,
        log_retention=logs.RetentionDays.TWO_WEEKS,
        removal_policy=RemovalPolicy.DESTROY,
        endpoint_instance_type="ml.m5.large",
        endpoint_min_instances=1,
        endpoint_max_instances=2,
        invocations_per_instance_target=3000,
        canary_percent=50,  # one of two instances: dev runs the smallest fleet
        canary_wait_s=300,
        baking_s=300,
        capture_percent=100,
        retrain_schedule_cron="cron(0 3 ? * MON *)",
        retrain_on_schedule=False,
        retrain_on_drift=False,
        transform_instance_type="ml.m5.large",
        monitor_schedule_cron="cron(0 * ? * * *)",
    ),
    "prod": StageConfig(
        "prod",
        throttle_rate_per_s=200,
        throttle_burst=400,
        client_requests_per_minute=DEFAULT_REQUESTS_PER_MINUTE,
        client_daily_quota=100_000,
        web_page_requests_per_s=50,
        waf_requests_per_5_min_per_ip=2000,
        lambda_memory_mb=1024,
        log_retention=logs.RetentionDays.THREE_MONTHS,
        removal_policy=RemovalPolicy.RETAIN,
        endpoint_instance_type="ml.m5.xlarge",
        endpoint_min_instances=2,
        endpoint_max_instances=6,
        invocations_per_instance_target=6000,
        canary_percent=10,
        canary_wait_s=600,
        baking_s=1200,
        capture_percent=20,
        retrain_schedule_cron="cron(0 3 ? * MON *)",
        retrain_on_schedule=True,
        retrain_on_drift=False,
        transform_instance_type="ml.m5.xlarge",
        monitor_schedule_cron="cron(0 * ? * * *)",
    ),
}


def stage_config(stage: str) -> StageConfig:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: use one of {sorted(STAGES)}")
    return STAGES[stage]
