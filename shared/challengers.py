"""What follows the evaluation, written once for both runtimes: the gate decision, the final report,
tracking every challenger and registering a gated one.

The local runner calls these functions with its folder store and its MLflow registry; the state
machine's pipeline-tasks Lambda (:mod:`shared.pipeline_tasks`) with S3 and SageMaker's model
registry. Only the adapters behind the ports differ; the decision, what is written where and what a
registry is told, and when, are decided here.

A run folder (``data/runs/<time>`` locally, ``s3://<bucket>/pipeline/runs/<id>`` in AWS) after the
gates step::

    gates/gates.json          the decision: each gate, passed or not, and why; the configuration
    gates/evaluation.json     the evaluation, with the decision under "gates"
    gates/report.html         the evaluate job's report with the gates section (shared.gate_report)
    gates/tracking.json       {"tracked": what the registry calls the challenger, or null}
    report.html, evaluation.json   the run's final report and evaluation (copies of the above)
    register/registration.json     after the register step
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from shared.gate_report import with_gates
from shared.gates import GateConfig
from shared.ports import ArtifactStore, ChallengerRecord, ChallengerRegistration, ChallengerRegistry
from shared.promotion import GateDecision, decide, registered_model_name, registration_record

# What the gates and register steps write, relative to the run folder.
GATES: Final = "gates/gates.json"
GATED_EVALUATION: Final = "gates/evaluation.json"
GATED_REPORT: Final = "gates/report.html"
TRACKING: Final = "gates/tracking.json"
FINAL_REPORT: Final = "report.html"
FINAL_EVALUATION: Final = "evaluation.json"
REGISTRATION: Final = "register/registration.json"


@dataclass(frozen=True)
class ChallengerRun:
    """Where one run's reports lie (URIs in AWS, paths locally) and what the run is called."""

    folder: str  # the run folder, where the gates and register steps write
    name: str  # the run's name, recorded with the challenger
    quality: str  # the validate step's data_quality.json
    evaluation: str  # the evaluate step's evaluation.json
    report: str  # the evaluate step's report.html
    model: str | None = None  # the trained model.tar.gz; without it the challenger is not tracked

    def uri(self, relative: str) -> str:
        """The URI (or path) of a file under the run folder, e.g. ``run.uri(GATES)``."""
        return f"{self.folder.rstrip('/')}/{relative}"


@dataclass(frozen=True)
class GatesOutcome:
    decision: GateDecision
    evaluation: dict[str, Any]  # with the decision under "gates"
    challenger: ChallengerRecord
    tracked: str | None  # None: not tracked yet (the run named no model); the register step will

    def result(self) -> dict[str, Any]:
        """What the next step needs, JSON-ready (the Lambda's answer to the state machine)."""
        return {
            "passed": self.decision.passed,
            "summary": self.decision.summary(),
            "gates": [g.model_dump(mode="json") for g in self.decision.gates],
            "tracked": self.tracked,
            "report": self.challenger.report_uri,
        }


@dataclass(frozen=True)
class RegisterOutcome:
    registration: ChallengerRegistration
    challenger: ChallengerRecord

    def result(self) -> dict[str, Any]:
        """The registration as ``registration.json`` holds it: the registry's names, then lineage."""
        done = self.registration
        return {"name": done.name, "version": done.version, "tracked": done.tracked, **done.details} | {
            "model": self.challenger.model_uri,
            "report": self.challenger.report_uri,
            **self.challenger.tags,
        }


def challenger_record(
    run: ChallengerRun, evaluation: dict[str, Any], quality: dict[str, Any], decision: GateDecision
) -> ChallengerRecord:
    params, metrics, tags = registration_record(evaluation, quality, decision)
    return ChallengerRecord(
        name=registered_model_name(tags["spec"]),
        model_uri=run.model or "",
        evaluation_uri=run.uri(GATED_EVALUATION),
        report_uri=run.uri(GATED_REPORT),
        gates_uri=run.uri(GATES),
        passed=decision.passed,
        summary=decision.summary(),
        params=params,
        metrics=metrics,
        tags={**tags, "decision": "passed" if decision.passed else "rejected", "pipeline_run": run.name},
    )


def judge_challenger(
    run: ChallengerRun, config: GateConfig, store: ArtifactStore, registry: ChallengerRegistry | None
) -> GatesOutcome:
    """Decide the gates, write the decision and the final report, and track the challenger (promoted
    or not, so a rejection can be studied later) when the run names its model and a registry."""
    quality, evaluation = store.read_json(run.quality), store.read_json(run.evaluation)
    decision = decide(quality, evaluation, config)
    evaluation = {**evaluation, "gates": decision.model_dump(mode="json")}
    report = with_gates(store.read_bytes(run.report).decode("utf-8"), decision)
    store.write_json(run.uri(GATES), decision.model_dump(mode="json"))
    store.write_json(run.uri(GATED_EVALUATION), evaluation)
    store.write_bytes(run.uri(GATED_REPORT), report.encode("utf-8"))
    store.copy(run.uri(GATED_REPORT), run.uri(FINAL_REPORT))
    store.copy(run.uri(GATED_EVALUATION), run.uri(FINAL_EVALUATION))
    challenger = challenger_record(run, evaluation, quality, decision)
    tracked = registry.track(challenger) if registry is not None and run.model else None
    store.write_json(run.uri(TRACKING), {"tracked": tracked})
    return GatesOutcome(decision, evaluation, challenger, tracked)


def register_challenger(
    run: ChallengerRun, store: ArtifactStore, registry: ChallengerRegistry
) -> RegisterOutcome:
    """A new registered version from the challenger the gates step passed and tracked (tracking it
    first if that step could not), recorded in ``register/registration.json``."""
    decision = GateDecision.model_validate(store.read_json(run.uri(GATES)))
    if not decision.passed:  # the run should never route here; refuse rather than register
        raise ValueError(f"refusing to register a challenger that failed the gates: {decision.summary()}")
    if not run.model:
        raise ValueError("the register step names no model to register")
    challenger = challenger_record(
        run, store.read_json(run.uri(GATED_EVALUATION)), store.read_json(run.quality), decision
    )
    tracked = store.read_json(run.uri(TRACKING)).get("tracked") or registry.track(challenger)
    outcome = RegisterOutcome(registry.register(challenger, str(tracked)), challenger)
    store.write_json(run.uri(REGISTRATION), outcome.result())
    return outcome
