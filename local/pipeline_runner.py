"""Runs the retraining pipeline of :mod:`step_functions.pipeline` on this machine.

Each step's inputs are the named outputs of earlier steps (or the run's raw data), so the runner
follows the definition rather than a list of its own. A run folder keeps every artifact.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.jobs import JobFailed, JobResult, LineSink, code_version, run_processing, run_training
from shared.ml.model import Manifest, unpack_model
from step_functions.pipeline import STEPS, PipelineInputs, Step, job_arguments

StepEvent = Callable[[Step, str], None]  # (step, "started" | "finished" | "failed")


@dataclass
class PipelineRun:
    run_dir: Path
    results: dict[str, JobResult] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def model_tarball(self) -> Path:
        return self.artifacts["model"]


def run_pipeline(
    raw_data: Path,
    run_dir: Path,
    inputs: PipelineInputs | None = None,
    *,
    truth: Path | None = None,
    tracking_uri: str | None = None,
    on_step: StepEvent | None = None,
    on_line: LineSink | None = None,
) -> PipelineRun:
    inputs = inputs or PipelineInputs()
    run_dir.mkdir(parents=True, exist_ok=True)
    raw_dir = run_dir / "raw"
    raw_dir.mkdir(exist_ok=True)
    if raw_data.is_dir():
        for f in sorted(raw_data.iterdir()):
            if f.is_file():
                shutil.copy2(f, raw_dir / f.name)
    else:
        shutil.copy2(raw_data, raw_dir / raw_data.name)
    run = PipelineRun(run_dir=run_dir, artifacts={"raw": raw_dir})
    if truth is not None and truth.is_file():  # generated data: the evaluation reports the oracle AUC
        run.artifacts["truth"] = truth
    version = code_version()
    for step in STEPS:
        missing = [name for name in step.inputs if name not in run.artifacts]
        if missing:
            raise JobFailed(step.name, f"inputs {missing} were not produced by an earlier step", "")
        wanted = step.inputs + tuple(n for n in step.optional_inputs if n in run.artifacts)
        available = {name: run.artifacts[name] for name in wanted}
        if on_step:
            on_step(step, "started")
        try:
            if step.kind == "processing":
                arguments = job_arguments(step, inputs)
                result = run_processing(step, available, run_dir / step.name, arguments, on_line)
            elif step.kind == "tuning":
                result = run_tuning(step, available, run_dir / step.name, inputs, tracking_uri, on_line)
            else:
                channels = {k: v for k, v in available.items() if k != "hyperparameters"}
                chosen = json.loads(available["hyperparameters"].read_text(encoding="utf-8"))
                hyperparameters = {**chosen, "seed": inputs.seed, **inputs.hyperparameters}
                result = run_training(step, channels, hyperparameters, run_dir / step.name, on_line, version)
        except JobFailed:
            if on_step:
                on_step(step, "failed")
            raise
        run.results[step.name] = result
        run.artifacts.update(result.outputs)
        if on_step:
            on_step(step, "finished")
    return run


def run_tuning(
    step: Step,
    available: Mapping[str, Path],
    output_root: Path,
    inputs: PipelineInputs,
    tracking_uri: str | None,
    on_line: LineSink | None,
) -> JobResult:
    """Optuna in this process stands in for SageMaker's tuning job over the same ranges."""
    import pandas as pd

    from local.tuner import tune
    from shared.feature_spec import FeatureSpec

    started = time.perf_counter()
    train_dir = available["train"]
    spec = FeatureSpec.from_file(train_dir / "feature_spec.json")
    train = pd.concat([pd.read_parquet(p) for p in sorted(train_dir.glob("*.parquet"))], ignore_index=True)
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        if on_line:
            on_line(line)

    def on_trial(trial: dict[str, Any]) -> None:
        report(
            f"[tune] trial {trial['number']}: {trial['params']['model_family']} "
            f"cv PR-AUC {trial['cv_pr_auc']:.4f} ± {trial['cv_pr_auc_std']:.4f} ({trial['seconds']:.1f}s)"
        )

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
        "trials": result.trials,
    }
    (output_root / "trials.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if result.trials:
        family = result.best_hyperparameters["model_family"]
        report(f"[tune] best: {family} cv PR-AUC {result.best_cv_pr_auc:.4f}")
    else:
        report("[tune] no search (0 trials): XGBoost with its default hyperparameters")
    return JobResult(step.name, {"hyperparameters": chosen}, "\n".join(lines), time.perf_counter() - started)


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

    def current_dir(self) -> Path | None:
        pointer = self.root / "current.json"
        if not pointer.is_file():
            return None
        version = json.loads(pointer.read_text(encoding="utf-8"))["model_version"]
        path = self.root / version
        return path if (path / "manifest.json").is_file() else None
