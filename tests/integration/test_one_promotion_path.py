"""The gates and the registration behave the same in both runtimes.

The same reports (the validate step's quality, the evaluate step's evaluation and its rendered
report) go through the local runner's tasks (a run folder and MLflow on sqlite) and through the
pipeline-tasks Lambda's handler (moto's S3 and SageMaker model registry) with the payloads the
state machine sends. Both must decide the same, write the same ``gates.json`` and the same final
report with the gates in it, and track the challenger whether it is promoted or not.
"""

from __future__ import annotations

import html
import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import boto3
import pytest

from lambdas.pipeline_tasks import handler
from local.pipeline_runner import LocalTasks, PipelineRun
from shared.adapters.model_packages import metadata_text
from shared.ml.report import render_report
from step_functions.pipeline import PipelineInputs, step
from step_functions.state_machine import PLACEHOLDERS, DeploymentGuardrails, definition, substitute
from tests.aws_fakes import FakeLambdaContext
from tests.factories import local_test_services, tracking_uri_in
from tests.integration.test_pipeline_tasks import BUCKET, RUN, tasks_in_moto
from tests.unit.test_gates import GOOD_QUALITY, evaluation

RUN_ID: Final = RUN.rsplit("/", 1)[-1]
MODEL_KEY: Final = f"pipeline/runs/{RUN_ID}/model/claims-risk-{RUN_ID}-train/output/model.tar.gz"
GROUP: Final = "claims-risk-dev-models"
VALUES: Final = {name: name for name in PLACEHOLDERS} | {
    "DataBucket": BUCKET,
    "Image": "141502667606.dkr.ecr.eu-west-1.amazonaws.com/claims-risk:1",
    "ModelPackageGroup": GROUP,
}
# What the state machine's input holds when it reaches the gates (see step_functions.state_machine).
STATE: Final = {
    "run": {"id": RUN_ID, "execution": "exec-1", "prefix": RUN},
    "jobs": {"train": {"model": f"s3://{BUCKET}/{MODEL_KEY}"}},
    "inputs": PipelineInputs().model_dump(mode="json"),
}
# The fields the gates task needs to track every challenger (and the run folder, which otherwise
# follows from the evaluation's URI): asked of the state machine's owner; a no-op once it sends them.
PROPOSED: Final = {
    "gates": {
        "model.$": "$.jobs.train.model",
        "image": "${Image}",
        "model_package_group": "${ModelPackageGroup}",
        "run.$": "$.run.execution",
        "run_folder.$": "$.run.prefix",
    },
    "register": {"run_folder.$": "$.run.prefix"},
}
LINEAGE: Final = ("model_version", "family", "spec", "data_sha256", "code_version", "gates", "decision")


def evaluate_job_outputs(**test_changes: float) -> tuple[dict[str, Any], str]:
    """An evaluation.json complete enough for the evaluate job's renderer, and its report.html."""
    ev = evaluation(**test_changes)
    ev["model"]["explanation_method"] = "exact TreeSHAP"
    ev["test"] = {
        "rows": 1000,
        "prevalence": 0.2,
        "accuracy": 0.85,
        "precision": 0.6,
        "f1": 0.68,
        "false_positive_rate": 0.1,
        "brier": 0.11,
        "logloss": 0.35,
        "expected_cost": 0.3,
        "auto_approved_share": 0.7,
        "confusion_matrix": {"tn": 720, "fp": 80, "fn": 40, "tp": 160},
        **ev["test"],
    }
    chosen = {"threshold": 0.2, "expected_cost": 0.3, "auto_approved_share": 0.7}
    chosen |= {"precision": 0.6, "recall": 0.8, "f1": 0.68}
    half = {**chosen, "threshold": 0.5, "expected_cost": 0.5, "auto_approved_share": 0.85}
    ev["threshold_comparison"] = {"chosen": chosen, "half": half}
    ev["curves"] = {
        "roc": {"fpr": [0.0, 0.1, 1.0], "tpr": [0.0, 0.8, 1.0]},
        "pr": {"recall": [0.0, 0.8, 1.0], "precision": [1.0, 0.6, 0.2]},
    }
    ev["reliability"] = {"brier": 0.11, "bins": [{"mean_score": s, "observed_rate": s} for s in (0.1, 0.5)]}
    ev["global_importance"] = [{"factor": "claim_history", "mean_abs_contribution": 0.4}]
    groups = [
        {"group": g, "count": 500, "prevalence": 0.2, "selection_rate": 0.3}
        | {"false_negative_rate": 0.2, "roc_auc": 0.9}
        for g in ("female", "male")
    ]
    ev["fairness"]["gender"] |= {"selection_rate_difference": 0.05, "min_group_size": 30, "groups": groups}
    return ev, render_report(ev)


def model_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        body = json.dumps({"model_version": "v2"}).encode()
        info = tarfile.TarInfo("v2/manifest.json")
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@dataclass
class Outputs:
    """What one runtime left: the files under the run folder, the decision and the registration."""

    files: dict[str, bytes]
    passed: bool
    gates: list[dict[str, Any]]

    def json(self, name: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.files[name])
        return document

    def report(self) -> str:
        return self.files["report.html"].decode()


FILES: Final = (
    "gates/gates.json",
    "gates/evaluation.json",
    "gates/report.html",
    "report.html",
    "evaluation.json",
)


def run_locally(root: Path, ev: dict[str, Any], report: str) -> Outputs:
    """The local runner's gates step, then (if the gates passed) its register step."""
    run_dir = root / "runs" / RUN_ID
    for name, body in (
        ("quality/data_quality.json", json.dumps(GOOD_QUALITY).encode()),
        ("evaluation/evaluation.json", json.dumps(ev).encode()),
        ("evaluation/report.html", report.encode()),
        ("train/model.tar.gz", model_tarball()),
    ):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(body)
    reports = {"quality": run_dir / "quality", "evaluation": run_dir / "evaluation"}
    state = PipelineRun(run_dir, artifacts={**reports, "model": run_dir / "train" / "model.tar.gz"})
    tasks = LocalTasks(state, PipelineInputs(), local_test_services(root / "home"))
    state.artifacts |= tasks.run(step("gates"), reports, run_dir / "gates", None).outputs
    if tasks.decision_passed:
        available = {name: state.artifacts[name] for name in step("register").inputs}
        tasks.run(step("register"), available, run_dir / "register", None)
    names = [*FILES, "register/registration.json"]
    files = {name: (run_dir / name).read_bytes() for name in names if (run_dir / name).is_file()}
    decision = json.loads(files["gates/gates.json"])
    return Outputs(files, decision["passed"], decision["gates"])


def resolve(template: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """A Lambda task's Payload as Step Functions builds it: ``key.$`` paths and States.Format."""

    def path(expression: str) -> Any:
        value: Any = state
        for part in expression.removeprefix("$.").split("."):
            value = value[part]
        return value

    resolved: dict[str, Any] = {}
    for key, value in template.items():
        if not key.endswith(".$"):
            resolved[key] = value
            continue
        formatted = re.fullmatch(r"States\.Format\('([^']*)', (\$[\w.]+)\)", value)
        if formatted:
            resolved[key[:-2]] = formatted.group(1).replace("{}", str(path(formatted.group(2))), 1)
        else:
            assert re.fullmatch(r"\$(\.\w+)+", value), f"the test cannot evaluate {value}"
            resolved[key[:-2]] = path(value)
    return resolved


def asl_task(name: str) -> dict[str, Any]:
    guardrails = DeploymentGuardrails(10, 300, 600, ("a",), "ml.m5.large", 1, 20)
    filled = json.loads(substitute(json.dumps(definition(guardrails)["States"][name]), VALUES))
    task: dict[str, Any] = filled
    return task


def payload(name: str, *, proposed: bool) -> dict[str, Any]:
    template = asl_task(name)["Parameters"]["Payload"]
    if proposed:
        template = {**template, **json.loads(substitute(json.dumps(PROPOSED[name]), VALUES))}
    return resolve(template, STATE)


def assert_answers_what_the_state_machine_reads(name: str, answer: dict[str, Any]) -> None:
    for selected in asl_task(name)["ResultSelector"].values():
        assert selected.removeprefix("$.Payload.") in answer, selected


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with tasks_in_moto(monkeypatch) as s3:
        yield s3


def run_in_aws(s3: Any, ev: dict[str, Any], report: str, *, proposed: bool) -> Outputs:
    """The pipeline-tasks Lambda's gates task, then (if the Choice lets it) its register task."""
    prefix = f"pipeline/runs/{RUN_ID}"
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/quality/data_quality.json", Body=json.dumps(GOOD_QUALITY))
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/evaluation/evaluation.json", Body=json.dumps(ev))
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/evaluation/report.html", Body=report.encode())
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=model_tarball())
    context = FakeLambdaContext("claims-risk-pipeline-tasks")
    answer = handler.lambda_handler(payload("gates", proposed=proposed), context)
    assert_answers_what_the_state_machine_reads("gates", answer)
    if answer["passed"]:
        registered = handler.lambda_handler(payload("register", proposed=proposed), context)
        assert_answers_what_the_state_machine_reads("register", registered)
    files = {}
    for name in [*FILES, "register/registration.json"]:
        try:
            files[name] = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{name}")["Body"].read()
        except s3.exceptions.NoSuchKey:
            continue
    return Outputs(files, answer["passed"], answer["gates"])


def mlflow_runs(root: Path) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri_in(root / "home"))
    experiment = client.get_experiment_by_name("claims-risk")
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id]))


def model_packages() -> list[dict[str, Any]]:
    sagemaker = boto3.client("sagemaker")
    listed = sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]
    return [sagemaker.describe_model_package(ModelPackageName=p["ModelPackageArn"]) for p in listed]


def assert_same_decision_and_report(local: Outputs, cloud: Outputs, *, passed: bool) -> None:
    assert local.passed is cloud.passed is passed
    assert local.gates == cloud.gates
    for name in FILES:  # byte for byte: the decision, the final evaluation and the final report
        assert local.files[name] == cloud.files[name], name
    report = local.report()
    assert report.count('id="gates-table"') == 1
    assert report.index('id="metrics-table"') < report.index('id="gates"') < report.index("threshold-table")
    assert ("Promotion gates: passed" if passed else "Promotion gates: FAILED") in report
    assert all(html.escape(g["reason"]) in report for g in local.gates)
    assert 'id="plot-roc"' in report  # the evaluate job's plots are kept, not rendered again


CASES: Final = {"promoted": {}, "rejected": {"roc_auc": 0.6}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_both_runtimes_decide_report_and_track_the_challenger_alike(
    aws: Any, tmp_path: Path, case: str
) -> None:
    ev, report = evaluate_job_outputs(**CASES[case])
    local = run_locally(tmp_path, ev, report)
    cloud = run_in_aws(aws, ev, report, proposed=True)
    promoted = case == "promoted"
    assert_same_decision_and_report(local, cloud, passed=promoted)

    # Tracked in both, promoted or not: an MLflow run locally, a model package in AWS, each with the
    # final report and the same lineage.
    [run] = mlflow_runs(tmp_path)
    [package] = model_packages()
    decision = "passed" if promoted else "rejected"
    assert run.data.tags["decision"] == package["CustomerMetadataProperties"]["decision"] == decision
    for tag in LINEAGE:
        # SageMaker's metadata takes fewer characters than MLflow's tags ("<" becomes "_").
        assert metadata_text(run.data.tags[tag]) == package["CustomerMetadataProperties"][tag], tag
    assert (
        run.data.tags["pipeline_run"] == RUN_ID
        and package["CustomerMetadataProperties"]["pipeline_run"] == "exec-1"
    )
    assert package["ModelMetrics"]["Explainability"]["Report"]["S3Uri"] == f"{RUN}/gates/report.html"
    from mlflow import MlflowClient

    tracked_report = MlflowClient(tracking_uri=tracking_uri_in(tmp_path / "home")).download_artifacts(
        run.info.run_id, "evaluation/report.html", str(tmp_path / "download")
    )
    assert Path(tracked_report).read_bytes() == local.files["gates/report.html"]

    # Registered only when promoted: a model version from the tracked run, the approved package.
    assert package["ModelApprovalStatus"] == ("Approved" if promoted else "Rejected")
    assert ("register/registration.json" in local.files) is promoted
    assert ("register/registration.json" in cloud.files) is promoted
    if promoted:
        local_record, cloud_record = (
            local.json("register/registration.json"),
            cloud.json("register/registration.json"),
        )
        assert local_record["tracked"] == run.info.run_id and local_record["version"] == "1"
        assert cloud_record["tracked"] == package["ModelPackageArn"] == cloud_record["model_package_arn"]
        assert {t: local_record[t] for t in LINEAGE} == {t: cloud_record[t] for t in LINEAGE}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_state_machines_payloads_as_sent_today_still_work(aws: Any, tmp_path: Path, case: str) -> None:
    """Without the proposed fields the gates task decides and reports alike but cannot track; the
    register task then tracks the promoted challenger and approves it."""
    ev, report = evaluate_job_outputs(**CASES[case])
    local = run_locally(tmp_path, ev, report)
    cloud = run_in_aws(aws, ev, report, proposed=False)
    assert_same_decision_and_report(local, cloud, passed=case == "promoted")
    if case == "promoted":
        [package] = model_packages()
        assert package["ModelApprovalStatus"] == "Approved"
        assert package["CustomerMetadataProperties"]["model_version"] == "v2"
