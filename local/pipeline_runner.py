"""Runs the retraining pipeline of :mod:`step_functions.pipeline` on this machine.

Each step's inputs are the named outputs of earlier steps (or the run's raw data), so the runner
follows the definition rather than a list of its own. A run folder keeps every artifact.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from local.jobs import JobFailed, JobResult, LineSink, code_version, run_processing, run_training
from shared.adapters.artifacts import LocalArtifactStore
from shared.adapters.mlflow_registry import MlflowChallengers
from shared.challengers import GATES, REGISTRATION, ChallengerRun, judge_challenger, register_challenger
from shared.gates import GateResult
from shared.ml.model import Manifest, unpack_model
from shared.ports import (
    ChallengerRegistration,
    ModelDeployer,
    ModelRegistry,
    Notifier,
    RegisteredModelVersion,
)
from shared.promotion import RunOutcome, outcome_metrics, registered_model_name
from step_functions.pipeline import STEPS, PipelineInputs, Step, job_arguments

StepEvent = Callable[[Step, str], None]  # (step, "started" | "finished" | "failed" | "skipped")


@dataclass
class PipelineServices:
    """The outside services a run reaches through ports: local adapters here, AWS ones in the cloud."""

    registry: ModelRegistry
    deployer: ModelDeployer
    notifier: Notifier


@dataclass
class PipelineRun:
    run_dir: Path
    results: dict[str, JobResult] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    outcome: RunOutcome | None = None

    @property
    def model_tarball(self) -> Path:
        return self.artifacts["model"]

    @property
    def promoted(self) -> bool:
        return self.outcome is not None and self.outcome.status == "promoted"


def run_pipeline(
    raw_data: Path | None,
    run_dir: Path,
    inputs: PipelineInputs | None = None,
    *,
    services: PipelineServices,
    truth: Path | None = None,
    tracking_uri: str | None = None,
    on_step: StepEvent | None = None,
    on_line: LineSink | None = None,
    lake_root: Path | None = None,
) -> PipelineRun:
    """Run every step of :data:`STEPS`; a gate that says stop skips to the step it names (notify).

    A failing job notifies and then raises :class:`JobFailed`, as the state machine's Catch → notify →
    Fail does. The jobs write the claims lake the environment names (``CLAIMS_RISK_LAKE_*``), else
    the one at ``lake_root``, else none; the run's folder name is their partition.
    """
    inputs = inputs or PipelineInputs()
    environment = {"CLAIMS_RISK_RUN_ID": run_dir.name}
    if lake_root is not None and not os.environ.get("CLAIMS_RISK_LAKE_ROOT"):
        environment["CLAIMS_RISK_LAKE_ROOT"] = str(lake_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    raw_dir = run_dir / "raw"
    raw_dir.mkdir(exist_ok=True)
    if raw_data is None:  # the run reads its claims from the lake (inputs.source)
        pass
    elif raw_data.is_dir():
        for f in sorted(raw_data.iterdir()):
            if f.is_file():
                shutil.copy2(f, raw_dir / f.name)
    else:
        shutil.copy2(raw_data, raw_dir / raw_data.name)
    run = PipelineRun(run_dir=run_dir, artifacts={"raw": raw_dir})
    if truth is not None and truth.is_file():  # generated data: the evaluation reports the oracle AUC
        run.artifacts["truth"] = truth
    tasks = LocalTasks(run, inputs, services)
    version = code_version()
    skip_to: str | None = None
    for step in STEPS:
        if skip_to is not None and step.name != skip_to:
            if on_step:
                on_step(step, "skipped")
            continue
        skip_to = None
        if on_step:
            on_step(step, "started")
        try:
            missing = [name for name in step.inputs if name not in run.artifacts]
            if missing:
                raise JobFailed(step.name, f"inputs {missing} were not produced by an earlier step", "")
            if "champion" in step.optional_inputs:
                tasks.fetch_champion()
            wanted = step.inputs + tuple(n for n in step.optional_inputs if n in run.artifacts)
            available = {name: run.artifacts[name] for name in wanted}
            output_root = run_dir / step.name
            if step.kind == "processing":
                arguments = job_arguments(step, inputs)
                result = run_processing(step, available, output_root, arguments, on_line, environment)
            elif step.kind == "tuning":
                result = run_tuning(step, available, output_root, inputs, tracking_uri, on_line)
            elif step.kind == "training":
                channels = {k: v for k, v in available.items() if k != "hyperparameters"}
                chosen = json.loads(available["hyperparameters"].read_text(encoding="utf-8"))
                hyperparameters = inputs.training_hyperparameters(chosen)
                result = run_training(step, channels, hyperparameters, output_root, on_line, version)
            else:
                result = tasks.run(step, available, output_root, on_line)
        except JobFailed as failure:
            if on_step:
                on_step(step, "failed")
            tasks.notify_failure(failure)
            raise
        run.results[step.name] = result
        run.artifacts.update(result.outputs)
        if on_step:
            on_step(step, "finished")
        if step.kind == "gates" and not tasks.decision_passed:
            skip_to = step.on_stop_next
    return run


class LocalTasks:
    """The orchestrator's own steps (gates, register, deploy, notify), run in this process.

    The gates and the registration are :mod:`shared.challengers`' functions, which the state
    machine's Lambda calls too: here over the run folder and the MLflow registry.
    """

    def __init__(self, run: PipelineRun, inputs: PipelineInputs, services: PipelineServices) -> None:
        self.run_state = run
        self.inputs = inputs
        self.services = services
        self.store = LocalArtifactStore()
        self.challengers = MlflowChallengers(services.registry)
        self.decision_passed = False
        self.champion_before: RegisteredModelVersion | None = None
        self.registered: ChallengerRegistration | None = None
        self.registered_model_version: str | None = None
        self.spec_name: str | None = None

    def _spec_name(self) -> str:
        if self.spec_name is None:
            spec_file = self.run_state.artifacts["train"] / "feature_spec.json"
            self.spec_name = str(json.loads(spec_file.read_text(encoding="utf-8"))["name"])
        return self.spec_name

    def fetch_champion(self) -> None:
        """The model serving now, scored by the evaluation on the same holdout as the challenger."""
        name = registered_model_name(self._spec_name())
        self.champion_before = self.services.registry.champion(name)
        if self.champion_before is not None and "champion" not in self.run_state.artifacts:
            folder = self.run_state.run_dir / "champion"
            self.run_state.artifacts["champion"] = self.services.registry.fetch(self.champion_before, folder)

    def run(
        self, step: Step, available: dict[str, Path], output_root: Path, on_line: LineSink | None
    ) -> JobResult:
        started = time.perf_counter()
        lines: list[str] = []

        def say(line: str) -> None:
            lines.append(f"[{step.name}] {line}")
            if on_line:
                on_line(lines[-1])

        output_root.mkdir(parents=True, exist_ok=True)
        outputs: dict[str, Path] = {}
        try:
            if step.kind == "gates":
                outputs = self.gates(available, output_root, say)
            elif step.kind == "register":
                outputs = self.register(available, output_root, say)
            elif step.kind == "deploy":
                outputs = self.deploy(available, output_root, say)
            else:
                self.notify(say)
        except JobFailed:
            raise
        except Exception as error:  # a task's failure is the run's failure, with the reason kept
            raise JobFailed(step.name, f"{type(error).__name__}: {error}", "\n".join(lines)) from error
        return JobResult(step.name, outputs, "\n".join(lines), time.perf_counter() - started)

    def challenger_run(self, available: Mapping[str, Path]) -> ChallengerRun:
        """The run's reports as the gates and register steps read them (the Lambda's payload, here)."""
        evaluation = available["evaluation"]
        return ChallengerRun(
            folder=str(self.run_state.run_dir),
            name=self.run_state.run_dir.name,
            quality=str(available["quality"] / "data_quality.json"),
            evaluation=str(evaluation / "evaluation.json"),
            report=str(evaluation / "report.html"),
            model=str(_tarball(self.run_state.artifacts["model"])),
        )

    def gates(self, available: dict[str, Path], out: Path, say: Callable[[str], None]) -> dict[str, Path]:
        run = self.challenger_run(available)
        judged = judge_challenger(run, self.inputs.gates, self.store, self.challengers)
        decision = judged.decision
        self.decision_passed = decision.passed
        for gate in decision.gates:
            say(f"{'pass' if gate.passed else 'FAIL'} {gate.gate}: {gate.reason}")
        say(f"tracked as MLflow run {judged.tracked}")
        if not decision.passed:
            self.outcome(
                "rejected",
                decision.summary(),
                judged.evaluation,
                gates=decision.gates,
                champion=self.champion_before,
            )
        return {"decision": Path(run.uri(GATES)).parent}

    def register(self, available: dict[str, Path], out: Path, say: Callable[[str], None]) -> dict[str, Path]:
        run = self.challenger_run(available)
        registered = register_challenger(run, self.store, self.challengers)
        self.registered = registered.registration
        self.registered_model_version = registered.challenger.tags["model_version"]
        say(
            f"registered {self.registered.name} version {self.registered.version} "
            f"({self.registered_model_version})"
        )
        return {"registration": Path(run.uri(REGISTRATION)).parent}

    def deploy(self, available: dict[str, Path], out: Path, say: Callable[[str], None]) -> dict[str, Path]:
        if self.registered is None:
            raise JobFailed("deploy", "nothing registered to deploy", "")
        tarball = _tarball(available["model"])
        where = self.services.deployer.deploy(tarball)
        # The alias moves only once the new version serves: the champion is always what answers.
        self.services.registry.promote(self.registered.name, self.registered.version)
        say(
            f"serving {self.registered_model_version} at {where}; "
            f"champion → version {self.registered.version}"
        )
        record = {"served_at": where, "name": self.registered.name, "version": self.registered.version}
        (out / "deployment.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        final = _read_json(self.run_state.run_dir / "evaluation.json")
        self.outcome("promoted", "every gate passed", final, gates=None, champion=self.champion_before)
        return {"deployment": out}

    def outcome(
        self,
        status: Literal["promoted", "rejected", "failed"],
        reason: str,
        evaluation: dict[str, Any],
        *,
        gates: list[GateResult] | None,
        champion: RegisteredModelVersion | None,
    ) -> None:
        model = evaluation["model"]
        decision = evaluation.get("gates") or {}
        self.run_state.outcome = RunOutcome(
            status=status,
            run=self.run_state.run_dir.name,
            reason=reason,
            spec=model["spec"],
            model_version=model["version"],
            family=model["family"],
            registered_as=f"{self.registered.name} v{self.registered.version}" if self.registered else None,
            champion_before=champion.model_version if champion else None,
            gates=gates if gates is not None else [GateResult(**g) for g in decision.get("gates", [])],
            test_metrics=outcome_metrics(evaluation),
            report=str(self.run_state.run_dir / "report.html"),
        )

    def notify(self, say: Callable[[str], None]) -> None:
        outcome = self.run_state.outcome
        if outcome is None:
            raise JobFailed("notify", "the run reached notify without an outcome", "")
        self.services.notifier.notify(outcome.subject(), outcome.model_dump(mode="json"))
        say(outcome.subject())

    def notify_failure(self, failure: JobFailed) -> None:
        self.run_state.outcome = RunOutcome(
            status="failed",
            run=self.run_state.run_dir.name,
            reason=failure.reason,
            failed_step=failure.step,
            champion_before=self.champion_before.model_version if self.champion_before else None,
        )
        self.services.notifier.notify(
            self.run_state.outcome.subject(), self.run_state.outcome.model_dump(mode="json")
        )


def _tarball(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("*.tar.gz"))
    if not found:
        raise FileNotFoundError(f"no model.tar.gz in {path}")
    return found[0]


def _read_json(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def run_tuning(
    step: Step,
    available: Mapping[str, Path],
    output_root: Path,
    inputs: PipelineInputs,
    tracking_uri: str | None,
    on_line: LineSink | None,
) -> JobResult:
    """Optuna in this process stands in for SageMaker's tuning job over the same ranges."""
    from local.tuner import tune
    from shared.feature_spec import FeatureSpec
    from shared.ml.frames import read_parquet_folder

    started = time.perf_counter()
    train_dir = available["train"]
    spec = FeatureSpec.from_file(train_dir / "feature_spec.json")
    train = read_parquet_folder(train_dir)
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        if on_line:
            on_line(line)

    def on_trial(trial: dict[str, Any]) -> None:
        family = trial["params"]["model_family"]
        if trial["state"] == "complete":
            report(
                f"[tune] trial {trial['number']}: {family} cv PR-AUC {trial['cv_pr_auc']:.4f} "
                f"± {trial['cv_pr_auc_std']:.4f} ({trial['seconds']:.1f}s)"
            )
        else:
            report(f"[tune] trial {trial['number']}: {family} {trial['state']}: {trial['reason']}")

    report(
        f"[tune] {inputs.tuning_trials} trials, {inputs.tuning_folds}-fold CV on up to "
        f"{inputs.tuning_max_rows:,} rows, budget {inputs.tuning_timeout_s:.0f}s"
    )
    result = tune(
        train,
        spec,
        n_trials=inputs.tuning_trials,
        timeout_s=inputs.tuning_timeout_s,
        folds=inputs.tuning_folds,
        max_rows=inputs.tuning_max_rows,
        seed=inputs.seed,
        tracking_uri=tracking_uri if inputs.tuning_trials > 0 else None,
        on_trial=on_trial,
    )
    output_root.mkdir(parents=True, exist_ok=True)
    chosen = output_root / "best_hyperparameters.json"
    chosen.write_text(json.dumps(result.best_hyperparameters, indent=2), encoding="utf-8")
    summary = {
        "best_cv_pr_auc": result.best_cv_pr_auc,
        "best_per_family": result.best_per_family(),
        "budget": result.budget,
        "trials": result.trials,
    }
    trials_file = output_root / "trials.json"
    trials_file.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if inputs.tuning_trials > 0:
        report(f"[tune] {budget_line(result.budget)}")
    if any(t["state"] == "complete" for t in result.trials):
        family = result.best_hyperparameters["model_family"]
        report(f"[tune] best: {family} cv PR-AUC {result.best_cv_pr_auc:.4f}")
    elif inputs.tuning_trials > 0:
        report("[tune] no trial completed: XGBoost with its default hyperparameters")
    else:
        report("[tune] no search (0 trials): XGBoost with its default hyperparameters")
    # trials.json also reaches the evaluate job (an optional input), whose report shows the budget.
    outputs = {"hyperparameters": chosen, "tuning": trials_file}
    return JobResult(step.name, outputs, "\n".join(lines), time.perf_counter() - started)


def budget_line(budget: Mapping[str, Any]) -> str:
    """Trials run against asked and time against the budget, in one line for the run's output."""
    parts = [f"{budget['trials_completed']} completed"]
    parts += [
        f"{budget[k]} {w}"
        for k, w in (("trials_stopped", "stopped"), ("trials_failed", "failed"))
        if budget[k]
    ]
    return (
        f"{budget['trials_run']} of {budget['trials_asked']} trials run ({', '.join(parts)}) in "
        f"{budget['elapsed_s']:.1f}s of the {budget['budget_s']:g}s budget; ended: {budget['ended_by']}"
    )


class LocalModelStore:
    """Published models on disk: ``<root>/<version>/`` (unpacked) and a ``current`` pointer."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def publish(self, tarball: Path) -> Manifest:
        staging = self.root / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        unpack_model(tarball, staging)
        manifest = Manifest.model_validate_json((staging / "manifest.json").read_text(encoding="utf-8"))
        target = self.root / manifest.model_version
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        shutil.copy2(tarball, target / "model.tar.gz")
        pointer = {
            "model_version": manifest.model_version,
            "published_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        (self.root / "current.json").write_text(json.dumps(pointer, indent=2), encoding="utf-8")
        return manifest

    def deploy(self, tarball: Path) -> str:
        """:class:`shared.ports.ModelDeployer`: the local model server loads the current version."""
        manifest = self.publish(tarball)
        return str(self.root / manifest.model_version)

    def current_dir(self) -> Path | None:
        pointer = self.root / "current.json"
        if not pointer.is_file():
            return None
        version = json.loads(pointer.read_text(encoding="utf-8"))["model_version"]
        path = self.root / version
        return path if (path / "manifest.json").is_file() else None


def local_services(
    home: Path, tracking_uri: str, on_notify: Callable[[str, Mapping[str, Any]], None] | None = None
) -> PipelineServices:
    """MLflow registry at the tracking URI, models published under ``<home>/models``, notifications
    appended to ``<home>/notifications.jsonl``."""
    from shared.adapters.mlflow_registry import MlflowModelRegistry
    from shared.adapters.notify import LocalNotifier

    return PipelineServices(
        registry=MlflowModelRegistry(tracking_uri),
        deployer=LocalModelStore(home / "models"),
        notifier=LocalNotifier(home / "notifications.jsonl", on_notify),
    )
