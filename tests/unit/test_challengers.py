"""What follows the evaluation (shared.challengers), with fakes behind the ports: the decision, the
final report, tracking every challenger and registering a gated one; and how each registry maps it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.mlflow_registry import MlflowChallengers
from shared.challengers import GATES, ChallengerRun, judge_challenger, register_challenger
from shared.gate_report import with_gates
from shared.gates import GateConfig
from shared.pipeline_tasks import GatesTask, ModelPackageChallengers
from shared.ports import ChallengerRecord, ChallengerRegistration, ModelPackageRequest, RegisteredModelVersion
from shared.promotion import decide
from tests.unit.test_gates import GOOD_QUALITY, evaluation

FOLDER = "mem://runs/r1"
REPORT = (
    "<!DOCTYPE html><html><head><title>Evaluation v2</title></head><body><h1>Evaluation of model v2</h1>"
    '<h2>Test metrics</h2><table id="metrics-table"><tbody><tr><td>roc_auc</td><td>0.9</td></tr></tbody>'
    "</table><h2>Decision threshold chosen by cost</h2></body></html>"
)


class MemoryStore:
    """:class:`shared.ports.ArtifactStore` in a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def read_bytes(self, uri: str) -> bytes:
        if uri not in self.objects:
            raise FileNotFoundError(uri)
        return self.objects[uri]

    def read_json(self, uri: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.read_bytes(uri))
        return document

    def read_tar_member(self, uri: str, name: str) -> bytes:
        raise NotImplementedError

    def write_json(self, uri: str, document: Mapping[str, Any]) -> None:
        self.objects[uri] = json.dumps(document).encode()

    def write_bytes(self, uri: str, body: bytes) -> None:
        self.objects[uri] = body

    def copy(self, source: str, target: str) -> None:
        self.objects[target] = self.read_bytes(source)

    def exists_under(self, prefix_uri: str) -> bool:
        return any(uri.startswith(prefix_uri) for uri in self.objects)


class FakeRegistry:
    """:class:`shared.ports.ChallengerRegistry` that remembers what it was told."""

    def __init__(self) -> None:
        self.tracked: list[ChallengerRecord] = []
        self.registered: list[tuple[ChallengerRecord, str]] = []

    def track(self, challenger: ChallengerRecord) -> str:
        self.tracked.append(challenger)
        return f"tracked-{len(self.tracked)}"

    def register(self, challenger: ChallengerRecord, tracked: str) -> ChallengerRegistration:
        self.registered.append((challenger, tracked))
        return ChallengerRegistration(challenger.name, str(len(self.registered)), tracked, {"how": "fake"})


def run_with(
    store: MemoryStore, model: str | None = f"{FOLDER}/model/model.tar.gz", **changes: float
) -> ChallengerRun:
    run = ChallengerRun(
        folder=FOLDER,
        name="r1",
        quality=f"{FOLDER}/quality/data_quality.json",
        evaluation=f"{FOLDER}/evaluation/evaluation.json",
        report=f"{FOLDER}/evaluation/report.html",
        model=model,
    )
    store.write_json(run.quality, GOOD_QUALITY)
    store.write_json(run.evaluation, evaluation(**changes))
    store.write_bytes(run.report, REPORT.encode())
    return run


def test_a_passing_challenger_gets_its_decision_its_final_report_and_is_tracked() -> None:
    store, registry = MemoryStore(), FakeRegistry()
    run = run_with(store)
    outcome = judge_challenger(run, GateConfig(), store, registry)
    assert outcome.decision.passed and outcome.tracked == "tracked-1"
    assert store.read_json(f"{FOLDER}/gates/gates.json")["passed"] is True
    assert store.read_json(f"{FOLDER}/gates/evaluation.json")["gates"]["passed"] is True
    report = store.read_bytes(f"{FOLDER}/gates/report.html").decode()
    assert "Promotion gates: passed" in report and report.count('id="gates-table"') == 1
    # The run folder's top level holds the final report and evaluation.
    assert store.read_bytes(f"{FOLDER}/report.html") == report.encode()
    assert store.read_json(f"{FOLDER}/evaluation.json")["gates"]["passed"] is True
    assert store.read_json(f"{FOLDER}/gates/tracking.json") == {"tracked": "tracked-1"}
    [tracked] = registry.tracked
    assert (
        tracked.report_uri == f"{FOLDER}/gates/report.html"
        and tracked.gates_uri == f"{FOLDER}/gates/gates.json"
    )
    assert tracked.name == "claims-risk-claims" and tracked.model_uri == run.model
    assert tracked.tags["decision"] == "passed" and tracked.tags["pipeline_run"] == "r1"
    assert tracked.metrics["test_roc_auc"] == 0.9 and tracked.params["threshold"] == 0.2
    assert outcome.result()["passed"] is True and outcome.result()["report"] == tracked.report_uri
    assert not registry.registered  # registering is the register step's


def test_a_rejected_challenger_is_tracked_too_and_its_report_names_the_failed_gate() -> None:
    store, registry = MemoryStore(), FakeRegistry()
    outcome = judge_challenger(run_with(store, roc_auc=0.6), GateConfig(), store, registry)
    assert not outcome.decision.passed
    assert [c.tags["decision"] for c in registry.tracked] == ["rejected"]
    assert registry.tracked[0].summary == outcome.decision.summary()
    report = store.read_bytes(f"{FOLDER}/report.html").decode()
    assert "Promotion gates: FAILED" in report and "<td>FAIL</td>" in report
    assert "roc_auc 0.600 &lt; 0.800" in report


def test_the_gates_section_follows_the_metrics_table_and_replaces_an_earlier_one() -> None:
    passed = decide(GOOD_QUALITY, evaluation(), GateConfig())
    failed = decide(GOOD_QUALITY, evaluation(recall=0.1), GateConfig())
    once = with_gates(REPORT, passed)
    assert once.index('id="metrics-table"') < once.index('id="gates"') < once.index("Decision threshold")
    again = with_gates(once, failed)  # the step ran again
    assert again.count('id="gates-table"') == 1 and "FAILED" in again and "passed:" not in again
    assert again == with_gates(REPORT, failed)
    bare = with_gates("<html><body><h1>x</h1></body></html>", passed)
    assert bare.endswith("</table><!-- /promotion gates --></body></html>")


def test_register_refuses_a_rejected_challenger_and_records_nothing() -> None:
    store, registry = MemoryStore(), FakeRegistry()
    run = run_with(store, recall=0.1)
    judge_challenger(run, GateConfig(), store, registry)
    with pytest.raises(ValueError, match="refusing to register"):
        register_challenger(run, store, registry)
    assert not registry.registered and not store.exists_under(f"{FOLDER}/register")


def test_register_needs_the_gates_steps_decision() -> None:
    store = MemoryStore()
    with pytest.raises(FileNotFoundError, match=r"gates/gates\.json"):
        register_challenger(run_with(store), store, FakeRegistry())


def test_register_uses_the_tracked_challenger() -> None:
    store, registry = MemoryStore(), FakeRegistry()
    run = run_with(store)
    judge_challenger(run, GateConfig(), store, registry)
    outcome = register_challenger(run, store, registry)
    assert len(registry.tracked) == 1 and [t for _, t in registry.registered] == ["tracked-1"]
    record = store.read_json(f"{FOLDER}/register/registration.json")
    assert record["tracked"] == "tracked-1" and record["version"] == "1" and record["how"] == "fake"
    assert record["model_version"] == "v2" and record["data_sha256"] == "ab" * 32
    assert record["report"] == f"{FOLDER}/gates/report.html"
    assert outcome.registration.tracked == "tracked-1"


def test_a_challenger_the_gates_step_could_not_track_is_tracked_when_registered() -> None:
    store, registry = MemoryStore(), FakeRegistry()
    judged = judge_challenger(run_with(store, model=None), GateConfig(), store, registry)
    assert judged.tracked is None and not registry.tracked
    assert store.read_json(f"{FOLDER}/gates/tracking.json") == {"tracked": None}
    register_challenger(run_with(store), store, registry)  # the register step names the model
    assert len(registry.tracked) == 1 and registry.registered[0][1] == "tracked-1"


def test_a_payload_without_run_folder_or_report_finds_them_beside_the_evaluation() -> None:
    task = GatesTask(
        quality="s3://b/pipeline/runs/abc/quality/data_quality.json",
        evaluation="s3://b/pipeline/runs/abc/evaluation/evaluation.json",
    )
    run = task.challenger_run()
    assert run.folder == "s3://b/pipeline/runs/abc" and run.name == "abc" and run.model is None
    assert run.report == "s3://b/pipeline/runs/abc/evaluation/report.html"
    assert run.uri(GATES) == "s3://b/pipeline/runs/abc/gates/gates.json"
    with pytest.raises(ValueError, match="run_folder"):
        GatesTask(quality="s3://b/q.json", evaluation="s3://b/e.json").challenger_run()


class FakePackages:
    """:class:`shared.ports.ModelPackageRegistry` logging each call as (what, ARN, request)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, ModelPackageRequest]] = []

    def register(self, request: ModelPackageRequest) -> str:
        number = 1 + sum(what == "create" for what, _, _ in self.calls)
        self.calls.append(("create", f"arn:aws:sagemaker:::model-package/{request.group}/{number}", request))
        return self.calls[-1][1]

    def approve(self, arn: str, request: ModelPackageRequest) -> None:
        self.calls.append(("approve", arn, request))


@dataclass
class FakeMlflow:
    versions: list[tuple[str, str, Mapping[str, str]]] = field(default_factory=list)

    def register(self, name: str, source: str, tags: Mapping[str, str]) -> str:
        self.versions.append((name, source, tags))
        return str(len(self.versions))


def test_sagemaker_tracks_every_challenger_as_a_package_and_approves_the_registered_one() -> None:
    store, packages, mlflow = MemoryStore(), FakePackages(), FakeMlflow()
    registry = ModelPackageChallengers(packages, mlflow, group="claims-risk-models", image="image:1")
    judge_challenger(run_with(store, recall=0.1), GateConfig(), store, registry)
    run = run_with(store)
    judge_challenger(run, GateConfig(), store, registry)
    created = [request for what, _, request in packages.calls if what == "create"]
    assert [p.approval for p in created] == ["Rejected", "PendingManualApproval"]
    assert created[1].report_uri == f"{FOLDER}/gates/report.html"
    assert created[1].model_data_uri == run.model and created[1].image_uri == "image:1"
    outcome = register_challenger(run, store, registry)
    arn = outcome.registration.tracked
    assert arn.endswith("/claims-risk-models/2") and packages.calls[-1][:2] == ("approve", arn)
    assert len(packages.calls) == 3  # registering tracked nothing new
    assert outcome.registration.version == "2" and outcome.registration.details["mlflow_version"] == "1"
    assert mlflow.versions[0][0] == "claims-risk-claims" and mlflow.versions[0][2]["model_package_arn"] == arn


class FakeModelRegistry:
    """The part of :class:`shared.ports.ModelRegistry` tracking and registering use."""

    def __init__(self) -> None:
        self.runs: list[tuple[Path, Mapping[str, str], Sequence[Path]]] = []

    def record_run(self, tarball: Path, **record: Any) -> str:
        self.runs.append((tarball, record["tags"], record["attachments"]))
        return "run-a"

    def register(self, name: str, run_id: str, tags: Mapping[str, str]) -> RegisteredModelVersion:
        return RegisteredModelVersion(name, "3", tags["model_version"], f"runs:/{run_id}/model")

    def champion(self, name: str) -> RegisteredModelVersion | None:
        return None

    def fetch(self, version: RegisteredModelVersion, into: Path) -> Path:
        raise NotImplementedError

    def promote(self, name: str, version: str) -> None:
        raise NotImplementedError


def test_mlflow_tracks_a_run_with_its_files_and_registers_a_version_from_it(tmp_path: Path) -> None:
    store, models = MemoryStore(), FakeModelRegistry()
    registry = MlflowChallengers(models)
    run = run_with(store)
    local = replace(run, folder=str(tmp_path), model=f"file://{tmp_path}/m.tar.gz")
    judge_challenger(local, GateConfig(), store, registry)
    [(tarball, tags, attachments)] = models.runs
    assert tarball == tmp_path / "m.tar.gz" and tags["decision"] == "passed"
    assert [p.name for p in attachments] == ["report.html", "evaluation.json", "gates.json"]
    assert all(p.parent == tmp_path / "gates" for p in attachments)
    registered = register_challenger(local, store, registry).registration
    assert (registered.name, registered.version, registered.tracked) == ("claims-risk-claims", "3", "run-a")
    assert registered.details == {"source": "runs:/run-a/model", "run_id": "run-a"}
