"""Runs the retraining pipeline of :mod:`step_functions.pipeline` on this machine.

Each step's inputs are the named outputs of earlier steps (or the run's raw data), so the runner
follows the definition rather than a list of its own. A run folder keeps every artifact.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.jobs import JobFailed, JobResult, LineSink, code_version, run_processing, run_training
from shared.ml.model import Manifest, unpack_model
from step_functions.pipeline import STEPS, Step

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
    *,
    spec: str = "claims",
    hyperparameters: Mapping[str, Any] | None = None,
    on_step: StepEvent | None = None,
    on_line: LineSink | None = None,
) -> PipelineRun:
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
    version = code_version()
    for step in STEPS:
        missing = [name for name in step.inputs if name not in run.artifacts]
        if missing:
            raise JobFailed(step.name, f"inputs {missing} were not produced by an earlier step", "")
        inputs = {name: run.artifacts[name] for name in step.inputs}
        if on_step:
            on_step(step, "started")
        try:
            if step.kind == "processing":
                result = run_processing(step, inputs, run_dir / step.name, ["--spec", spec], on_line)
            else:
                result = run_training(
                    step, inputs, dict(hyperparameters or {}), run_dir / step.name, on_line, version
                )
        except JobFailed:
            if on_step:
                on_step(step, "failed")
            raise
        run.results[step.name] = result
        run.artifacts.update(result.outputs)
        if on_step:
            on_step(step, "finished")
    return run


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
