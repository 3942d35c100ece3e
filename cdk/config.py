"""Per-stage settings, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_logs as logs

# Public Powertools for AWS Lambda (Python) V3 layer; it carries pydantic, which the handler needs.
POWERTOOLS_LAYER_ACCOUNT = "017000801446"
POWERTOOLS_LAYER_VERSION = 27


@dataclass(frozen=True)
class StageConfig:
    stage: str
    throttle_rate_per_s: int
    throttle_burst: int
    lambda_memory_mb: int
    log_retention: logs.RetentionDays


STAGES = {
    "dev": StageConfig(
        "dev",
        throttle_rate_per_s=50,
        throttle_burst=100,
        lambda_memory_mb=512,
        log_retention=logs.RetentionDays.TWO_WEEKS,
    ),
    "prod": StageConfig(
        "prod",
        throttle_rate_per_s=200,
        throttle_burst=400,
        lambda_memory_mb=1024,
        log_retention=logs.RetentionDays.THREE_MONTHS,
    ),
}


def stage_config(stage: str) -> StageConfig:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: use one of {sorted(STAGES)}")
    return STAGES[stage]
