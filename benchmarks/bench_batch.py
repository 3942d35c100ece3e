"""Batch scoring: one million claims from a CSV file through the drop folder's scoring path.

A model is trained on 20k generated claims (the pipeline's default XGBoost); 1M other claims are
written as CSV. Each run scores the file in a fresh process (spawned, so its peak memory is the batch
path's own: the libraries, the model, one chunk of rows and the score array), once with risk factors
(exact TreeSHAP, top five per claim, the default) and once with scores only. Wall time is the whole
:func:`shared.ml.batch_scoring.score_file`: read, validate, encode, score, explain, write.
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure, judged
from local.jobs import run_processing, run_training
from shared.ml.model import unpack_model
from shared.ml.synthetic import generate_claims, write_claims
from step_functions.pipeline import step

NAME = "batch"
TRAIN_ROWS = 20_000
ROWS = 1_000_000
SECONDS_LIMIT = 20.0  # issue 13: was 60 s (56 s measured before the batch path was made faster)
MEMORY_LIMIT_MB = 2048.0


def score_in_child(model_dir: str, source: str, out: str, explain: bool) -> tuple[dict[str, Any], float]:
    """Runs in a fresh process: the summary and that process's peak memory in MB."""
    from shared.ml.batch_scoring import FileOutputs, score_file
    from shared.ml.model import RiskModel

    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    outputs = FileOutputs(target / "scored.csv", target / "rejected.csv")
    summary = score_file(RiskModel.load(model_dir), Path(source), outputs, explain=explain)
    return summary, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(model_dir: Path, source: Path, out: Path, explain: bool) -> tuple[dict[str, Any], float]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(score_in_child, str(model_dir), str(source), str(out), explain).result()


def model_note(model_dir: Path) -> str:
    from shared.ml.model import RiskModel

    model = RiskModel.load(model_dir)
    booster = getattr(model.family, "booster", None)
    trees = f", {booster.num_boosted_rounds()} trees" if booster is not None else ""
    return f"model: the pipeline's default {model.manifest.family} on {TRAIN_ROWS:,} generated claims{trees}"


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_claims(generate_claims(TRAIN_ROWS, seed=51), root / "raw" / "claims.csv")
        processed = run_processing(step("validate"), {"raw": data.parent}, root / "validate")
        channels = {k: processed.outputs[k] for k in ("train", "validation", "test")}
        trained = run_training(step("train"), channels, {}, root / "train")
        model_dir = unpack_model(trained.outputs["model"], root / "model")
        source = write_claims(generate_claims(ROWS, seed=52), root / "batch" / "claims.csv")
        size_mb = source.stat().st_size / 1e6
        explained, explained_mb = measure(model_dir, source, root / "out-explained", explain=True)
        plain, plain_mb = measure(model_dir, source, root / "out-plain", explain=False)
        trained_on = model_note(model_dir)
    notes = f"{ROWS:,} claims, CSV of {size_mb:.0f} MB, one process on every core; {trained_on}"
    return [
        judged(
            NAME,
            "batch path, with risk factors",
            "wall time, 1M claims from CSV",
            explained["seconds"],
            "s",
            SECONDS_LIMIT,
            notes=notes,
            extra={"summary": explained},
        ),
        Figure(
            NAME, "batch path, with risk factors", "throughput", explained["claims_per_second"], "claims/s"
        ),
        judged(
            NAME,
            "batch path, with risk factors",
            "peak memory",
            explained_mb,
            "MB",
            MEMORY_LIMIT_MB,
            notes="max RSS of the scoring process (libraries and model included)",
        ),
        Figure(NAME, "batch path, scores only", "wall time, 1M claims from CSV", plain["seconds"], "s"),
        Figure(NAME, "batch path, scores only", "throughput", plain["claims_per_second"], "claims/s"),
        Figure(NAME, "batch path, scores only", "peak memory", plain_mb, "MB"),
    ]
