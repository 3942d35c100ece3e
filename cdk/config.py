"""Per-stage settings, in one place: what differs between dev and prod, and nothing else."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs

from shared.auth import DEFAULT_REQUESTS_PER_MINUTE
from shared.batch_jobs import USEFUL_INSTANCES_PER_JOB, BatchSettings, BatchStrategy
from shared.drift_jobs import check_instance_count
from step_functions.pipeline import STEPS, JobResources, job_resources

# Public Powertools for AWS Lambda (Python) V3 layer; it carries pydantic, which the handlers need.
POWERTOOLS_LAYER_ACCOUNT = "017000801446"
POWERTOOLS_LAYER_VERSION = 27
# The claims lake's prefix in the data bucket, and where Athena writes query results (cdk/lake.py).
LAKE_PREFIX: Final = "lake/"
ATHENA_RESULTS_PREFIX: Final = "athena-results/"
# Athena reads Glue names in lower case: a database is lower case letters, digits and underscores.
_GLUE_DATABASE: Final = re.compile(r"^[a-z0-9_]{1,255}$")
_ATHENA_WORKGROUP: Final = re.compile(r"^[a-zA-Z0-9._-]{1,128}$")  # botocore's WorkGroupName
# botocore's athena model: WorkGroupConfiguration.BytesScannedCutoffPerQuery, min 10,000,000.
MIN_BYTES_SCANNED_CUTOFF: Final = 10_000_000
GB: Final = 1024**3


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
    monitor_schedule_cron: str  # Model Monitor's own schedule (accounts that have it): hourly at :00
    # Scale-out, on SageMaker's own instances (README, "Scaling out per stage"). Each pipeline job
    # (validate, features, tune: each trial, train, evaluate) and the drift job: type, count, volume.
    # A count above 1 needs a job that reads its input shard by shard (ShardedByS3Key); no pipeline
    # step does yet, and each says why (step_functions/pipeline.py): they scale up.
    jobs: Mapping[str, JobResources]
    # The drift job on several instances maps over shards of the hour's capture objects, and a
    # one-instance reduce merges their counts into the same figures (shared/drift_jobs.py). Each
    # instance copies only its shard onto its volume. It pays when an hour's capture outgrows one
    # instance's volume or MaxRuntimeInSeconds, not before: a second job's start-up costs minutes.
    drift_job: JobResources
    # Batch transform of a dropped file: CreateTransformJob's TransformResources, MaxConcurrentTransforms,
    # MaxPayloadInMB and BatchStrategy, given to the batch trigger through its environment.
    transform_instance_type: str
    transform_instance_count: int  # 1: a job scores one object, which SageMaker gives to one instance
    transform_max_concurrent: int  # requests in flight per instance
    transform_max_payload_mb: int  # per mini-batch; times transform_max_concurrent at most 100
    transform_batch_strategy: BatchStrategy
    # The claims lake (cdk/lake.py): Athena cancels a query once it has scanned this much (billed per
    # TB scanned), and its results under athena-results/ expire after this many days.
    lake_bytes_scanned_cutoff_gb: int
    athena_results_days: int
    # Our drift job (EventBridge Scheduler): each hour, after the previous hour's capture is written.
    drift_schedule_cron: str = "cron(10 * * * ? *)"

    def __post_init__(self) -> None:
        """A setting SageMaker would refuse, or one that only pays for idle instances, fails synthesis."""
        job_steps = {s.name for s in STEPS if s.is_job}
        if set(self.jobs) != job_steps:
            raise ValueError(
                f"{self.stage}: jobs must set exactly {sorted(job_steps)}, not {sorted(self.jobs)}"
            )
        job_resources(self.jobs)  # each count against what its step can use
        check_instance_count(self.drift_job.instance_count)
        if self.transform_instance_count > USEFUL_INSTANCES_PER_JOB:
            raise ValueError(
                f"{self.stage}: transform_instance_count {self.transform_instance_count}: a job scores one "
                "dropped object, which SageMaker gives to one instance; the others would idle"
            )
        self.batch_settings()  # SageMaker's bounds: MaxPayloadInMB and its product with the concurrency
        if not _GLUE_DATABASE.match(self.lake_database):
            raise ValueError(f"{self.stage}: Glue database {self.lake_database!r}: lower case, digits, _")
        if not _ATHENA_WORKGROUP.match(self.lake_workgroup):
            raise ValueError(
                f"{self.stage}: Athena workgroup {self.lake_workgroup!r} is not a workgroup name"
            )
        if self.lake_bytes_scanned_cutoff < MIN_BYTES_SCANNED_CUTOFF:
            raise ValueError(
                f"{self.stage}: Athena's per-query cutoff is at least {MIN_BYTES_SCANNED_CUTOFF} bytes"
            )
        if self.athena_results_days < 1:
            raise ValueError(f"{self.stage}: athena_results_days must be at least 1")

    def batch_settings(self) -> BatchSettings:
        return BatchSettings(
            instance_type=self.transform_instance_type,
            instance_count=self.transform_instance_count,
            max_payload_mb=self.transform_max_payload_mb,
            max_concurrent_transforms=self.transform_max_concurrent,
            batch_strategy=self.transform_batch_strategy,
        )

    def transform_environment(self) -> dict[str, str]:
        """The batch trigger's variables for its jobs (shared/settings.py, BatchTriggerSettings)."""
        return {
            "TRANSFORM_INSTANCE_TYPE": self.transform_instance_type,
            "TRANSFORM_INSTANCE_COUNT": str(self.transform_instance_count),
            "TRANSFORM_MAX_CONCURRENT": str(self.transform_max_concurrent),
            "TRANSFORM_MAX_PAYLOAD_MB": str(self.transform_max_payload_mb),
            "TRANSFORM_BATCH_STRATEGY": self.transform_batch_strategy,
        }

    def drift_environment(self) -> dict[str, str]:
        """The drift trigger's variables for its job (shared/settings.py, DriftTriggerSettings)."""
        return {
            "CLAIMS_RISK_DRIFT_INSTANCE_TYPE": self.drift_job.instance_type,
            "CLAIMS_RISK_DRIFT_INSTANCE_COUNT": str(self.drift_job.instance_count),
            "CLAIMS_RISK_DRIFT_VOLUME_GB": str(self.drift_job.volume_gb),
        }

    @property
    def prefix(self) -> str:
        return f"claims-risk-{self.stage}"

    @property
    def lake_database(self) -> str:
        return re.sub(r"[^a-z0-9_]", "_", f"claims_risk_{self.stage}".lower())

    @property
    def lake_workgroup(self) -> str:
        return self.prefix

    @property
    def lake_bytes_scanned_cutoff(self) -> int:
        return self.lake_bytes_scanned_cutoff_gb * GB

    def lake_environment(self, bucket_name: str) -> dict[str, str]:
        """Where a job finds the lake (shared/settings.py, LakeSettings): the one definition given to
        the state machine's lake steps and to the drift trigger for its job."""
        return {
            "CLAIMS_RISK_LAKE_ROOT": f"s3://{bucket_name}/{LAKE_PREFIX}",
            "CLAIMS_RISK_LAKE_DATABASE": self.lake_database,
            "CLAIMS_RISK_LAKE_WORKGROUP": self.lake_workgroup,
        }


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
        monitor_schedule_cron="cron(0 * ? * * *)",
        jobs={
            "validate": JobResources("ml.m5.xlarge"),
            "features": JobResources("ml.m5.large"),
            "tune": JobResources("ml.m5.xlarge"),
            "train": JobResources("ml.m5.xlarge"),
            "evaluate": JobResources("ml.m5.xlarge"),
        },
        drift_job=JobResources("ml.m5.large", volume_gb=20),  # dev's traffic: one instance, no reduce
        transform_instance_type="ml.m5.large",
        transform_instance_count=1,
        # Two in flight: the server scores one mini-batch on every core while the next one waits,
        # read and ready; more would only queue (it scores one request at a time).
        transform_max_concurrent=2,
        transform_max_payload_mb=6,  # SageMaker's default: about 10,000 claims a mini-batch
        transform_batch_strategy="MultiRecord",
        lake_bytes_scanned_cutoff_gb=10,  # at most about $0.05 a query
        athena_results_days=7,
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
        monitor_schedule_cron="cron(0 * ? * * *)",
        jobs={
            # Every row in memory at once (pandas), and the raw files copied onto the volume.
            "validate": JobResources("ml.m5.2xlarge", volume_gb=100),
            "features": JobResources("ml.m5.xlarge"),
            "tune": JobResources("ml.m5.xlarge"),  # trials sample at most tuning_max_rows
            "train": JobResources("ml.m5.2xlarge"),  # all rows, every core for XGBoost
            "evaluate": JobResources("ml.m5.2xlarge"),  # five cross-validation refits on every row
        },
        # One instance: at most 6 endpoint instances at 6000 invocations a minute each, 20% captured,
        # is about 430,000 exchanges (0.7 GB) an hour, about 10 s of the job's binning on an
        # ml.m5.large (README, Scaling); a map and a reduce would add a job start-up for nothing.
        # Shard (instance_count > 1) once an hour's capture nears the 20 GB volume (~12M exchanges).
        drift_job=JobResources("ml.m5.large", volume_gb=20),
        transform_instance_type="ml.m5.xlarge",
        transform_instance_count=1,
        transform_max_concurrent=2,
        transform_max_payload_mb=6,
        transform_batch_strategy="MultiRecord",
        lake_bytes_scanned_cutoff_gb=100,  # at most about $0.50 a query; a year of inferences is less
        athena_results_days=30,
    ),
}


def stage_config(stage: str) -> StageConfig:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: use one of {sorted(STAGES)}")
    return STAGES[stage]
