"""The local job runner: runs the SageMaker job scripts on this machine under their container contracts.

It lays out the directory tree and environment SageMaker would give a processing or training
container, runs the script as a separate program (``python -m <module>``), streams its log, and
collects the outputs the way SageMaker does (the model folder packed into ``model.tar.gz``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.ml.model import pack_model_dir
from step_functions.pipeline import Step

REPO_ROOT = Path(__file__).resolve().parent.parent
LineSink = Callable[[str], None]


class JobFailed(RuntimeError):
    def __init__(self, step: str, reason: str, log: str) -> None:
        super().__init__(f"{step} failed: {reason}")
        self.step, self.reason, self.log = step, reason, log


@dataclass(frozen=True)
class JobResult:
    step: str
    outputs: dict[str, Path]
    log: str
    seconds: float


def _link(source: Path, target: Path) -> None:
    """A folder appears as the input folder; a single file appears inside it, as SageMaker copies it."""
    if source.is_file():
        target.mkdir(parents=True, exist_ok=True)
        (target / source.name).symlink_to(source.resolve())
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve(), target_is_directory=True)


def _run(
    step: Step, args: Sequence[str], env: Mapping[str, str], on_line: LineSink | None
) -> tuple[int, str]:
    command = [sys.executable, "-m", step.module, *args]
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    lines: list[str] = []
    with subprocess.Popen(
        command, cwd=REPO_ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))
        code = process.wait()
    return code, "".join(lines)


def run_processing(
    step: Step,
    inputs: Mapping[str, Path],
    output_root: Path,
    arguments: Sequence[str] = (),
    on_line: LineSink | None = None,
    environment: Mapping[str, str] | None = None,
) -> JobResult:
    """Inputs appear under ``<base>/input/<name>``; outputs are written to ``output_root/<name>``;
    ``environment`` adds to this process's (as a processing job's Environment does)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"{step.name}-") as tmp:
        base = Path(tmp) / "processing"
        for name, path in inputs.items():
            _link(path, base / "input" / name)
        outputs = {}
        for name in step.outputs:
            outputs[name] = output_root / name
            outputs[name].mkdir(parents=True, exist_ok=True)
            _link(outputs[name], base / "output" / name)
        code, log = _run(step, ["--base-dir", str(base), *arguments], environment or {}, on_line)
    if code != 0:
        reason = log.strip().splitlines()[-1] if log.strip() else f"exit code {code}"
        raise JobFailed(step.name, reason, log)
    return JobResult(step.name, outputs, log, time.perf_counter() - started)


def run_training(
    step: Step,
    channels: Mapping[str, Path],
    hyperparameters: Mapping[str, Any],
    output_root: Path,
    on_line: LineSink | None = None,
    code_version: str = "unknown",
) -> JobResult:
    """Runs under an ``/opt/ml``-like tree; the model folder is packed into ``output_root/model.tar.gz``."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"{step.name}-") as tmp:
        opt_ml = Path(tmp) / "opt" / "ml"
        for name, path in channels.items():
            _link(path, opt_ml / "input" / "data" / name)
        config = opt_ml / "input" / "config"
        config.mkdir(parents=True)
        # SageMaker hands every hyperparameter to the container as a string.
        as_strings = {k: str(v) for k, v in hyperparameters.items()}
        (config / "hyperparameters.json").write_text(json.dumps(as_strings), encoding="utf-8")
        model_dir, output_dir = opt_ml / "model", opt_ml / "output"
        model_dir.mkdir()
        (output_dir / "data").mkdir(parents=True)
        env = {
            "SM_MODEL_DIR": str(model_dir),
            "SM_OUTPUT_DIR": str(output_dir),
            "SM_OUTPUT_DATA_DIR": str(output_dir / "data"),
            "SM_INPUT_CONFIG_DIR": str(config),
            "SM_INPUT_DATA_DIR": str(opt_ml / "input" / "data"),
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_HPS": json.dumps(as_strings),
            "CODE_VERSION": code_version,
            **{f"SM_CHANNEL_{name.upper()}": str(opt_ml / "input" / "data" / name) for name in channels},
        }
        code, log = _run(step, [], env, on_line)
        failure = output_dir / "failure"
        if code != 0:
            reason = failure.read_text(encoding="utf-8") if failure.is_file() else f"exit code {code}"
            raise JobFailed(step.name, reason, log)
        output_root.mkdir(parents=True, exist_ok=True)
        tarball = pack_model_dir(model_dir, output_root / "model.tar.gz")
        for produced in (output_dir / "data").iterdir():
            (output_root / produced.name).write_bytes(produced.read_bytes())
    return JobResult(step.name, {"model": tarball}, log, time.perf_counter() - started)


def code_version() -> str:
    """The commit the code runs from (with '-dirty' for local changes), or 'unknown'."""
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit or "unknown"
