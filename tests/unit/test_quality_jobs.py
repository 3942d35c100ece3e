"""Late outcomes in AWS: which quality job a dropped labels file gets, the trigger starting it (with
fakes), and the figures the job publishes for the model-quality alarm.

tests/unit/events/s3_object_created_eventbridge.json is the "Object created" example of "EventBridge
event message structure" (Amazon S3 user guide,
https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html) with this system's bucket, a
labels file's key (URL-encoded, as S3 sends keys) and this account and region.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import botocore.session
import numpy as np
import pytest
from botocore.validate import ParamValidator
from pydantic import ValidationError
from sklearn.metrics import average_precision_score, roc_auc_score

from lambdas.quality_trigger import handler
from shared.alarm_evaluation import Datapoint, evaluate
from shared.alarms import ALARMS, QUALITY_DROP_METRIC, QUALITY_NAMESPACE, alarm
from shared.ml.quality import (
    DEFAULT_TOLERANCE,
    SCORE_BINS,
    Baseline,
    BucketQuality,
    QualityMetrics,
    QualityReport,
    Ranking,
    judged_drops,
    quality_metric_data,
    quality_queries,
    ranking_from_bins,
)
from shared.quality_jobs import (
    KEY_ENV,
    OUTCOMES_PREFIX,
    QUALITY_JOB_MODULE,
    VERSION_ENV,
    NoQualityJob,
    QualityJobConfig,
    QualityJobPlan,
    plan_quality_job,
    quality_job_name,
    spread,
)
from shared.settings import QualityJobSettings, QualityTriggerSettings, SettingsError
from tests.aws_fakes import FakeLambdaContext
from tests.unit.test_lake import functions_unknown_to_trino

EVENTS: Final = Path(__file__).parent / "events"
ACCOUNT: Final = "123456789012"
KEY_ARN: Final = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
BUCKET: Final = "claims-risk-data"
LAKE: Final = {
    "CLAIMS_RISK_LAKE_ROOT": f"s3://{BUCKET}/lake/",
    "CLAIMS_RISK_LAKE_DATABASE": "claims_risk_dev",
    "CLAIMS_RISK_LAKE_WORKGROUP": "claims-risk-dev",
}
CONFIG: Final = QualityJobConfig(
    image=f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/claims-risk:abc",
    role_arn=f"arn:aws:iam::{ACCOUNT}:role/claims-risk-sagemaker",
    kms_key_arn=KEY_ARN,
    bucket=BUCKET,
    endpoint="claims-risk",
    job_prefix="claims-risk-dev",
    model_card_uri=f"s3://{BUCKET}/models/current/manifest.json",
    lake=LAKE,
)
NAME_PATTERN: Final = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # ProcessingJobName's


def created_event(**object_fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "s3_object_created_eventbridge.json").read_text())
    event["detail"]["object"].update(object_fields)
    return event


def sagemaker_request_errors(request: Mapping[str, Any]) -> list[str]:
    """botocore's own check of a CreateProcessingJob (types, required members), then the bounds it
    leaves to the service: the name's pattern, and the environment's sizes."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateProcessingJob").input_shape
    assert shape is not None
    report = ParamValidator().validate(dict(request), shape)
    errors = [report.generate_report()] if report.has_errors() else []
    if not NAME_PATTERN.fullmatch(request["ProcessingJobName"]) or len(request["ProcessingJobName"]) > 63:
        errors.append(f"name {request['ProcessingJobName']!r}")
    environment = model.shape_for("ProcessingEnvironmentMap")
    key, value = model.shape_for("ProcessingEnvironmentKey"), model.shape_for("ProcessingEnvironmentValue")
    if len(request["Environment"]) > environment.metadata["max"]:
        errors.append("too many variables")
    for name, text in request["Environment"].items():
        if not re.fullmatch(key.metadata["pattern"], name) or len(name) > key.metadata["max"]:
            errors.append(f"variable {name!r}")
        if len(text) > value.metadata["max"]:
            errors.append(f"{name}: {len(text)} characters")
    instance_types = model.shape_for("ProcessingInstanceType").metadata["enum"]
    if request["ProcessingResources"]["ClusterConfig"]["InstanceType"] not in instance_types:
        errors.append("instance type")
    return errors


# -- the labels file's reference, through a 256-character environment ------------------------------


@pytest.mark.parametrize("length", [1, 255, 256, 257, 700, 1024])
def test_a_key_of_any_length_s3_allows_reaches_the_job_whole(length: int) -> None:
    key = (OUTCOMES_PREFIX + "é ab/" * 300)[:length]
    variables = spread(KEY_ENV, key)
    assert all(len(v) <= 256 for v in variables.values()) and len(variables) == -(-length // 256)
    assert QualityJobSettings.model_validate(variables).outcomes_key() == key  # spaces kept as they are


def test_a_key_longer_than_s3_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="1025 characters"):
        spread(KEY_ENV, "k" * 1025)


# -- names ------------------------------------------------------------------------------------------


def test_one_name_per_object_version_with_the_files_name_in_it() -> None:
    key = f"{OUTCOMES_PREFIX}2026-11/Investigations Closed.csv"
    first = quality_job_name("claims-risk-dev", BUCKET, key, "v1")
    assert first == quality_job_name("claims-risk-dev", BUCKET, key, "v1")  # a repeated event: the same
    assert first.startswith("claims-risk-dev-quality-investigations-closed-")
    assert quality_job_name("claims-risk-dev", BUCKET, key, "v2") != first  # an upload again: a re-run
    long_name = quality_job_name("claims-risk-prod", BUCKET, OUTCOMES_PREFIX + "x" * 300 + ".csv", "v1")
    assert len(long_name) <= 63 and NAME_PATTERN.fullmatch(long_name)
    odd = quality_job_name("claims-risk-dev", BUCKET, OUTCOMES_PREFIX + "---.csv", "v1")
    assert NAME_PATTERN.fullmatch(odd) and re.fullmatch(r"claims-risk-dev-quality-[0-9a-f]{16}", odd)


def test_a_stage_prefix_that_leaves_no_room_is_a_deployment_error() -> None:
    with pytest.raises(ValueError, match="no room"):
        QualityJobConfig(**{**CONFIG.__dict__, "job_prefix": "p" * 40})
    with pytest.raises(ValueError, match="s3://"):
        QualityJobConfig(**{**CONFIG.__dict__, "lake": {**LAKE, "CLAIMS_RISK_LAKE_ROOT": "/lake"}})
    with pytest.raises(ValueError, match="data bucket"):
        QualityJobConfig(**{**CONFIG.__dict__, "model_card_uri": "s3://elsewhere/manifest.json"})


# -- the request -------------------------------------------------------------------------------------


def test_the_documented_event_plans_the_job_of_that_version_valid_for_sagemaker() -> None:
    plan = plan_quality_job(created_event(), CONFIG)
    assert isinstance(plan, QualityJobPlan)
    key = f"{OUTCOMES_PREFIX}2026-11/investigations closed.csv"  # '+' was a space, as S3 encodes keys
    assert plan.uri == f"s3://{BUCKET}/{key}" and plan.version_id == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"
    request = plan.request
    assert not sagemaker_request_errors(request)
    assert request["AppSpecification"] == {
        "ImageUri": CONFIG.image,
        "ContainerEntrypoint": ["job", QUALITY_JOB_MODULE],
    }
    environment = request["Environment"]
    assert QualityJobSettings.model_validate(environment).outcomes_key() == key
    assert (
        environment[VERSION_ENV] == plan.version_id and environment["publish_cloudwatch_metrics"] == "Enabled"
    )
    assert {k: environment[k] for k in LAKE} == LAKE
    assert environment["CLAIMS_RISK_MODEL_CARD_S3"] == CONFIG.model_card_uri
    cluster = request["ProcessingResources"]["ClusterConfig"]
    assert cluster == {
        "InstanceCount": 1,
        "InstanceType": "ml.t3.medium",
        "VolumeSizeInGB": 10,
        "VolumeKmsKeyId": KEY_ARN,
    }
    assert request["RoleArn"] == CONFIG.role_arn


def test_a_long_key_is_handed_on_in_parts_sagemaker_takes() -> None:
    key = OUTCOMES_PREFIX + "deep/" * 150 + "labels.csv"
    plan = plan_quality_job(created_event(key=key), CONFIG)
    assert isinstance(plan, QualityJobPlan)
    assert not sagemaker_request_errors(plan.request)
    assert f"{KEY_ENV}_3" in plan.request["Environment"]
    assert QualityJobSettings.model_validate(plan.request["Environment"]).outcomes_key() == key


def test_an_unversioned_upload_is_told_apart_by_its_sequencer() -> None:
    first = plan_quality_job(created_event(**{"version-id": None, "sequencer": "617f08299329d189"}), CONFIG)
    second = plan_quality_job(created_event(**{"version-id": None, "sequencer": "617f08299329d190"}), CONFIG)
    assert isinstance(first, QualityJobPlan) and isinstance(second, QualityJobPlan)
    assert first.job_name != second.job_name and VERSION_ENV not in first.request["Environment"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"key": "incoming/2026/claims.csv"}, "not under outcomes/incoming/"),
        ({"key": f"{OUTCOMES_PREFIX}2026-11/"}, "folder marker"),
    ],
)
def test_other_objects_start_nothing_and_say_why(change: dict[str, Any], reason: str) -> None:
    plan = plan_quality_job(created_event(**change), CONFIG)
    assert isinstance(plan, NoQualityJob) and reason in plan.reason


def test_another_buckets_file_starts_nothing() -> None:
    event = created_event()
    event["detail"]["bucket"]["name"] = "another-stages-data"
    plan = plan_quality_job(event, CONFIG)
    assert isinstance(plan, NoQualityJob) and "not this stack's data bucket" in plan.reason


def test_an_event_of_another_shape_is_refused_loudly() -> None:
    event = created_event()
    del event["detail"]["object"]["key"]
    with pytest.raises(ValidationError, match="key"):
        plan_quality_job(event, CONFIG)
    with pytest.raises(ValidationError, match="detail-type"):
        plan_quality_job({**created_event(), "detail-type": "Object Deleted"}, CONFIG)


def test_the_trigger_settings_give_the_config_and_name_what_is_wrong() -> None:
    environment = {
        "CLAIMS_RISK_IMAGE_URI": CONFIG.image,
        "CLAIMS_RISK_SAGEMAKER_ROLE_ARN": CONFIG.role_arn,
        "CLAIMS_RISK_DATA_BUCKET": BUCKET,
        "SAGEMAKER_ENDPOINT_NAME": "claims-risk",
        "CLAIMS_RISK_KMS_KEY_ARN": KEY_ARN,
        "CLAIMS_RISK_JOB_PREFIX": "claims-risk-dev",
        "CLAIMS_RISK_MODEL_CARD_S3": CONFIG.model_card_uri,
        "CLAIMS_RISK_OUTCOMES_PREFIX": "outcomes/incoming",
        **LAKE,
    }
    assert QualityTriggerSettings.model_validate(environment).quality_job() == CONFIG  # the '/' added
    without_card = {k: v for k, v in environment.items() if k != "CLAIMS_RISK_MODEL_CARD_S3"}
    with pytest.raises(SettingsError, match="missing CLAIMS_RISK_MODEL_CARD_S3"):
        QualityTriggerSettings.model_validate(without_card).quality_job()
    with pytest.raises(SettingsError, match="data bucket"):
        QualityTriggerSettings.model_validate(
            {**environment, "CLAIMS_RISK_MODEL_CARD_S3": "s3://elsewhere/models/current/manifest.json"}
        ).quality_job()


# -- the trigger --------------------------------------------------------------------------------------


class FakeLauncher:
    """SageMaker's CreateProcessingJob as the launcher sees it: a second job of one name is refused,
    which the real launcher answers with the name (shared/adapters/processing_jobs.py)."""

    def __init__(self) -> None:
        self.started: dict[str, dict[str, Any]] = {}

    def start(self, request: Mapping[str, Any]) -> str:
        name = str(request["ProcessingJobName"])
        if name in self.started:
            return name
        self.started[name] = copy.deepcopy(dict(request))
        return f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:processing-job/{name}"


@pytest.fixture
def launcher() -> Iterator[FakeLauncher]:
    fake = FakeLauncher()
    handler.wire(CONFIG, fake)
    yield fake
    handler.wire()


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = handler.lambda_handler(event, FakeLambdaContext("claims-risk-quality-trigger"))
    return answer


def test_the_trigger_starts_one_job_however_often_the_event_comes(launcher: FakeLauncher) -> None:
    first, again = invoke(created_event()), invoke(created_event())  # EventBridge: at least once
    assert first["job_name"] == again["job_name"] and again["started"] == first["job_name"]
    assert first["started"].endswith(f":processing-job/{first['job_name']}")
    [request] = launcher.started.values()
    plan = plan_quality_job(created_event(), CONFIG)
    assert isinstance(plan, QualityJobPlan) and request == plan.request
    # The same file uploaded again is a new version: a re-run, with a job of its own.
    invoke(created_event(**{"version-id": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"}))
    assert len(launcher.started) == 2


def test_the_trigger_answers_a_folder_marker_with_no_job(launcher: FakeLauncher) -> None:
    answer = invoke(created_event(key=OUTCOMES_PREFIX, size=0))
    assert answer["started"] is None and "folder marker" in answer["reason"] and not launcher.started


# -- the figures and the alarm -----------------------------------------------------------------------


def binned(scores: np.ndarray) -> np.ndarray:
    return np.asarray(np.minimum(np.floor(scores * SCORE_BINS), SCORE_BINS - 1))


def test_roc_auc_and_pr_auc_from_the_lakes_bins_are_scikit_learns() -> None:
    rng = np.random.default_rng(7)
    outcome = rng.random(5_000) < 0.17
    scores = np.clip(rng.normal(0.3 + 0.35 * outcome, 0.2), 0, 1)
    bins = binned(scores).astype(int)
    counts = [
        (int(b), int(((bins == b) & outcome).sum()), int(((bins == b) & ~outcome).sum()))
        for b in np.unique(bins)
    ]
    ranking = ranking_from_bins(counts)
    # Exact for the binned scores (ties within a bin as scikit-learn takes tied scores) ...
    assert ranking.roc_auc == pytest.approx(roc_auc_score(outcome, bins), abs=1e-12)
    assert ranking.pr_auc == pytest.approx(average_precision_score(outcome, bins), abs=1e-12)
    # ... and within a thousandth of the raw scores' figures.
    assert ranking.roc_auc == pytest.approx(roc_auc_score(outcome, scores), abs=1e-3)
    assert ranking.pr_auc == pytest.approx(average_precision_score(outcome, scores), abs=2e-3)
    assert ranking.scored == 5_000
    assert ranking_from_bins([(3, 0, 10)]) == Ranking(None, None, 10)  # no high-risk claim: nothing
    assert ranking_from_bins([(3, 4, 0)]).roc_auc is None  # no other claim: no ROC-AUC


def test_the_quality_queries_are_athenas_sql_and_run_on_duckdb(tmp_path: Path) -> None:
    from shared.adapters.lake import LocalLake, transpiled

    for name, sql in quality_queries().items():
        assert functions_unknown_to_trino(sql) == [], name
        athena = transpiled(sql, "trino")
        assert transpiled(athena, "trino") == athena, name
        assert len(LocalLake(tmp_path / "lake").query(sql)) <= 1, name  # an empty lake answers


BASE: Final = Baseline(0.80, 0.90, 0.10, "test", "m1", roc_auc=0.89, pr_auc=0.73)


def report_of(metrics: QualityMetrics, ranking: Ranking | None = None) -> QualityReport:
    drops = ("recall",) if judged_drops(metrics, BASE, 20).get("recall", 0) > DEFAULT_TOLERANCE else ()
    bucket = BucketQuality(dt.date(2026, 3, 3), metrics, ("m1",), drops, ranking)
    judged = bucket if metrics.positives >= 20 or metrics.flagged >= 20 else None
    return QualityReport(BASE, "day", [bucket], metrics, 0, DEFAULT_TOLERANCE, 20, judged)


def test_the_published_figures_carry_the_alarms_metric_the_largest_judged_drop() -> None:
    # Recall 20/40 = 0.50 (0.40 below), precision 20/25 = 0.80 (level): the alarm's metric is 0.40.
    metrics = QualityMetrics(100, 40, 25, tp=20, fp=5, fn=20, tn=55)
    data = {
        d.name: d for d in quality_metric_data(report_of(metrics, Ranking(0.70, 0.50, 100)), "ep", at=1.0)
    }
    assert data[QUALITY_DROP_METRIC].value == pytest.approx(0.40)
    assert data["quality_recall"].value == 0.5 and data["quality_recall_drop"].value == pytest.approx(0.40)
    assert data["quality_precision_drop"].value == pytest.approx(0.0)
    assert data["quality_roc_auc_drop"].value == pytest.approx(0.19)
    assert data["quality_pr_auc"].value == 0.5 and data["quality_labelled"].unit == "Count"
    assert {(d.dimensions["Endpoint"], d.timestamp) for d in data.values()} == {("ep", 1.0)}
    definition = alarm("model-quality")
    assert (definition.namespace, definition.metric) == (QUALITY_NAMESPACE, QUALITY_DROP_METRIC)
    assert DEFAULT_TOLERANCE == definition.threshold  # the report's tolerance is the alarm's threshold


def test_a_precision_judged_on_too_few_flagged_claims_is_not_in_the_alarms_metric() -> None:
    # 25 high-risk claims, 5 flagged (all right): recall 0.20 judged, precision 1.0 not (5 < 20).
    metrics = QualityMetrics(100, 25, 5, tp=5, fp=0, fn=20, tn=75)
    assert judged_drops(metrics, BASE, 20) == {"recall": pytest.approx(0.70)}
    few = QualityMetrics(30, 5, 5, tp=4, fp=1, fn=1, tn=24)  # nothing to judge: nothing published
    assert quality_metric_data(report_of(few), "ep") == []


def test_the_alarm_fires_on_a_drop_beyond_its_threshold_and_keeps_its_verdict_between_files() -> None:
    definition = alarm("model-quality")
    assert definition in ALARMS and definition.treat_missing_data == "ignore"
    assert evaluate(definition, [Datapoint(100.0, 0.40)], 101.0).state == "ALARM"
    assert evaluate(definition, [Datapoint(100.0, 0.10)], 101.0).state == "OK"  # not beyond 0.10
    # Days later, no new labels: the last verdict stands (CloudWatch's "ignore").
    assert evaluate(definition, [], 500_000.0, current="ALARM").state == "ALARM"
    assert evaluate(definition, [Datapoint(600_000.0, -0.02)], 600_001.0, current="ALARM").state == "OK"
