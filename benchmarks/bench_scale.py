"""Memory against data size: does the data path stay flat from 1M to 16M claims?

For each size (``BENCH_SCALE_SIZES``, default 1M, 4M and 16M generated claims, written as CSV a
million at a time) this measures the peak resident memory of one process doing each job:

- **validate**: the pipeline's validate job (``python -m sagemaker_jobs.processing.validate``) over
  the CSV: validation, repeated ids, the stratified split, the splits and the monitoring sample;
- **batch scoring**: ``claims-risk batch score`` (the drop folder's scoring path) with risk factors
  (exact TreeSHAP, five a claim) on the same CSV, with a model trained on 20k claims;
- **drift**: the drift job over the same claims captured as single-claim exchanges in SageMaker's
  capture format (one hour a million), as Model Monitor would run it;
- **training** (``BENCH_SCALE_TRAIN_SIZES``, default 1M and 4M): the train job on the validate
  job's splits, its peak reported (in memory below ``xgb_memory_mb``; no target); and at the sizes
  in ``BENCH_SCALE_EXTERNAL_SIZES`` (default 1M) again through XGBoost's external-memory iterator
  (``xgb_memory_mb`` 1), for its time and peak beside the in-memory run's.

Each job runs as its own command (the drop folder's ``claims-risk batch score`` for batch scoring),
started from a small fresh process; the figure is its ``ru_maxrss`` (for the jobs that start
workers, the largest of them). Never measured inside a process forked from the benchmark itself,
whose peak (it writes the capture in memory) a forked child would inherit. The target: the peak
at the largest size within 20% of the peak at the smallest. Long: about 40 minutes on the 2-core
reference machine with the defaults; `make bench-scale` runs it, never `make bench`.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from benchmarks.harness import Figure, judged

NAME = "scale"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
MILLION: Final = 1_000_000
DEFAULT_SIZES: Final = (MILLION, 4 * MILLION, 16 * MILLION)
DEFAULT_TRAIN_SIZES: Final = (MILLION, 4 * MILLION)
DEFAULT_EXTERNAL_SIZES: Final = (MILLION,)
GROWTH_LIMIT: Final = 1.20  # the largest size's peak over the smallest's
TRAIN_ROWS: Final = 20_000


def sizes(variable: str, default: tuple[int, ...]) -> tuple[int, ...]:
    text = os.environ.get(variable, "")
    if text.strip().lower() == "none":
        return ()
    return tuple(int(float(s)) for s in text.split(",") if s.strip()) if text else default


# ---------------------------------------------------------------------------------------------
# Measuring a job in a process of its own.


def _child_peak_mb(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Runs in a fresh process: runs the command; the peak memory of its largest process (MB), the
    seconds and the exit code."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return peak, time.perf_counter() - started, done.returncode


def _fresh(function: Any, *args: Any) -> tuple[float, float, int]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        result: tuple[float, float, int] = pool.submit(function, *args).result()
        return result


def job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMS_RISK_LAKE")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------
# The data.


def write_csv(rows: int, path: Path, first_seed: int) -> Path:
    """Generated claims, a million at a time (each million its own seed, so ids never repeat)."""
    from shared.ml.synthetic import generate_claims

    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        while written < rows:
            n = min(MILLION, rows - written)
            frame = generate_claims(n, seed=first_seed + written // MILLION).frame
            frame.to_csv(out, index=False, header=written == 0)
            written += n
    return path


def write_capture_hours(rows: int, root: Path, first_seed: int, start: datetime) -> None:
    """The same kind of claims captured as the model server writes them, an hour a million."""
    from benchmarks.bench_monitoring import claim_records, write_capture
    from shared.ml.synthetic import generate_claims

    written = 0
    while written < rows:
        n = min(MILLION, rows - written)
        claims = generate_claims(n, seed=first_seed + written // MILLION)
        hour = start + timedelta(hours=written // MILLION)
        write_capture(root, claim_records(claims.frame), claims.true_probability, start=hour, hours=1)
        written += n


def train_small_model(root: Path) -> Path:
    from local.jobs import run_processing, run_training
    from shared.ml.model import unpack_model
    from shared.ml.synthetic import generate_claims, write_claims
    from step_functions.pipeline import step

    data = write_claims(generate_claims(TRAIN_ROWS, seed=51), root / "raw" / "claims.csv")
    processed = run_processing(step("validate"), {"raw": data.parent}, root / "validate")
    channels = {k: processed.outputs[k] for k in ("train", "validation", "test")}
    trained = run_training(step("train"), channels, {}, root / "train")
    return unpack_model(trained.outputs["model"], root / "model")


# ---------------------------------------------------------------------------------------------
# The jobs.


def validate(csv_file: Path, base: Path) -> tuple[float, float, int]:
    (base / "input" / "raw").mkdir(parents=True, exist_ok=True)
    link = base / "input" / "raw" / csv_file.name
    if not link.exists():
        link.symlink_to(csv_file)
    command = [sys.executable, "-m", "sagemaker_jobs.processing.validate", "--base-dir", str(base)]
    return _fresh(_child_peak_mb, command, job_env())


def train(validated: Path, out: Path, *, external: bool = False) -> tuple[float, float, int]:
    """The train job on the splits, with the pipeline's defaults (no tuning); ``external``: through
    the external-memory iterator whatever the data's size."""
    import json

    opt_ml = out / "opt" / "ml"
    for channel in ("train", "validation"):
        target = opt_ml / "input" / "data" / channel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(validated / "output" / channel)
    config = opt_ml / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    hyperparameters = {"xgb_memory_mb": "1"} if external else {}
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters), encoding="utf-8")
    (opt_ml / "model").mkdir(exist_ok=True)
    (opt_ml / "output" / "data").mkdir(parents=True, exist_ok=True)
    env = job_env(
        SM_MODEL_DIR=str(opt_ml / "model"),
        SM_OUTPUT_DIR=str(opt_ml / "output"),
        SM_OUTPUT_DATA_DIR=str(opt_ml / "output" / "data"),
        SM_INPUT_CONFIG_DIR=str(config),
        SM_INPUT_DATA_DIR=str(opt_ml / "input" / "data"),
        SM_CHANNELS='["train", "validation"]',
        SM_HPS=json.dumps(hyperparameters),
        SM_CHANNEL_TRAIN=str(opt_ml / "input" / "data" / "train"),
        SM_CHANNEL_VALIDATION=str(opt_ml / "input" / "data" / "validation"),
    )
    return _fresh(_child_peak_mb, [sys.executable, "-m", "sagemaker_jobs.training.train"], env)


def batch_score(csv_file: Path, model_dir: Path, out: Path) -> tuple[float, float, int]:
    """`claims-risk batch score` with risk factors, the drop folder's scoring path, in its own process
    (measured from outside: a process forked from this one would start with this one's peak)."""
    command = [
        sys.executable,
        "-m",
        "local.cli",
        "batch",
        "score",
        str(csv_file),
        "--out",
        str(out),
        "--model-dir",
        str(model_dir),
    ]
    return _fresh(_child_peak_mb, command, job_env(CLAIMS_RISK_HOME=str(out / "home")))


def drift(capture: Path, model_dir: Path, out: Path) -> tuple[float, float, int]:
    command = [
        sys.executable,
        "-m",
        "sagemaker_jobs.monitoring.drift",
        "--capture",
        str(capture),
        "--model-dir",
        str(model_dir),
        "--out",
        str(out),
    ]
    return _fresh(_child_peak_mb, command, job_env(CLAIMS_RISK_HOME=str(out / "home")))


# ---------------------------------------------------------------------------------------------


def _growth_figures(job: str, peaks: dict[int, float], seconds: dict[int, float]) -> list[Figure]:
    figures = []
    for rows, peak in peaks.items():
        figures.append(
            Figure(
                NAME,
                f"{job}, {rows / MILLION:g}M claims",
                "peak memory",
                round(peak, 1),
                "MB",
                notes=f"{seconds[rows]:.0f} s",
            )
        )
    if len(peaks) >= 2:
        smallest, largest = min(peaks), max(peaks)
        figures.append(
            judged(
                NAME,
                f"{job}: {largest / MILLION:g}M against {smallest / MILLION:g}M",
                "peak memory ratio",
                round(peaks[largest] / peaks[smallest], 3),
                "x",
                GROWTH_LIMIT,
                notes=f"{peaks[smallest]:,.0f} MB → {peaks[largest]:,.0f} MB",
            )
        )
    return figures


def run() -> list[Figure]:
    chosen, to_train, external = (
        sizes("BENCH_SCALE_SIZES", DEFAULT_SIZES),
        sizes("BENCH_SCALE_TRAIN_SIZES", DEFAULT_TRAIN_SIZES),
        sizes("BENCH_SCALE_EXTERNAL_SIZES", DEFAULT_EXTERNAL_SIZES),
    )
    scratch_root = os.environ.get("BENCH_SCALE_DIR") or None
    figures: list[Figure] = []
    peaks: dict[str, dict[int, float]] = {"validate": {}, "batch scoring with factors": {}, "drift job": {}}
    seconds: dict[str, dict[int, float]] = {name: {} for name in peaks}
    training: dict[tuple[int, bool], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=scratch_root) as tmp:
        root = Path(tmp)
        print("  training the scoring model on 20k claims", flush=True)
        model_dir = train_small_model(root / "model")
        for rows in sorted(set(chosen) | set(to_train) | set(external)):
            label = f"{rows / MILLION:g}M"
            print(f"  {label}: writing the claims", flush=True)
            csv_file = write_csv(rows, root / label / "claims.csv", first_seed=1_000)
            base = root / label / "validate"
            peak, took, code = validate(csv_file, base)
            print(f"  {label}: validate {peak:,.0f} MB in {took:.0f} s (exit {code})", flush=True)
            if code != 0:
                raise RuntimeError(f"validate failed on {label}")
            if rows in chosen:
                peaks["validate"][rows], seconds["validate"][rows] = peak, took
                peak, took, _ = batch_score(csv_file, model_dir, root / label / "scored")
                print(f"  {label}: batch scoring {peak:,.0f} MB in {took:.0f} s", flush=True)
                peaks["batch scoring with factors"][rows] = peak
                seconds["batch scoring with factors"][rows] = took
                (root / label / "scored").rename(root / label / "scored-done")
            for through_iterator in (False, True):
                if rows not in (external if through_iterator else to_train):
                    continue
                peak, took, code = train(base, root / label / "train", external=through_iterator)
                how = "external memory" if through_iterator else "in memory"
                print(f"  {label}: training ({how}) {peak:,.0f} MB in {took:.0f} s (exit {code})", flush=True)
                training[(rows, through_iterator)] = (peak, took)
                subprocess.run(["rm", "-rf", str(root / label / "train")], check=False)
            csv_file.unlink()
            for leftover in ("scored-done", "validate", "train"):
                subprocess.run(["rm", "-rf", str(root / label / leftover)], check=False)
            if rows in chosen:
                capture = root / label / "capture"
                print(f"  {label}: writing the capture", flush=True)
                write_capture_hours(rows, capture, 2_000, datetime(2026, 3, 2, tzinfo=UTC))
                peak, took, code = drift(capture, model_dir, root / label / "drift")
                print(f"  {label}: drift {peak:,.0f} MB in {took:.0f} s (exit {code})", flush=True)
                peaks["drift job"][rows], seconds["drift job"][rows] = peak, took
                subprocess.run(["rm", "-rf", str(capture)], check=False)
    for job, by_size in peaks.items():
        figures += _growth_figures(job, by_size, seconds[job])
    for (rows, through_iterator), (peak, took) in training.items():
        how = "external-memory iterator" if through_iterator else "in memory"
        figures.append(
            Figure(
                NAME,
                f"training ({how}), {rows / MILLION:g}M claims",
                "peak memory",
                round(peak, 1),
                "MB",
                notes=f"{took:.0f} s",
            )
        )
    return figures
