"""`claims-risk pipeline run` on 100k generated claims with 20 tuning trials across the three families.

Runs the real command in a fresh data folder and samples the memory of its whole process tree (the
runner, which tunes in-process, plus whichever job is running) twice a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.harness import Figure

NAME = "pipeline"
ROWS = 100_000
TRIALS = 20
TIME_LIMIT_S = 600
MEMORY_LIMIT_MB = 4096


def tree_rss_mb(process: psutil.Process) -> float:
    total = 0
    for each in [process, *process.children(recursive=True)]:
        try:
            total += each.memory_info().rss
        except psutil.Error:  # a job ended between listing and reading
            continue
    return total / 2**20


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        command = [
            sys.executable,
            "-m",
            "local.cli",
            "pipeline",
            "run",
            "--rows",
            str(ROWS),
            "--trials",
            str(TRIALS),
        ]
        generate = [sys.executable, "-m", "local.cli", "generate", "--rows", str(ROWS)]
        env = {**os.environ, "CLAIMS_RISK_HOME": str(home)}
        subprocess.run(generate, env=env, check=True, capture_output=True)  # not part of the timing
        log = home / "pipeline.log"
        started = time.perf_counter()
        peak = 0.0
        with log.open("w") as out:
            child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            watched = psutil.Process(child.pid)
            while child.poll() is None:
                peak = max(peak, tree_rss_mb(watched))
                time.sleep(0.5)
        seconds = time.perf_counter() - started
        if child.returncode not in (0, 2):
            raise RuntimeError(f"pipeline run failed ({child.returncode}): {log.read_text()[-3000:]}")
        [run_dir] = sorted((home / "runs").iterdir())
        evaluation = json.loads((run_dir / "evaluation.json").read_text(encoding="utf-8"))
        tuning = json.loads((run_dir / "tune" / "trials.json").read_text(encoding="utf-8"))
        outcome = "promoted" if child.returncode == 0 else "rejected by the gates"
    test, oracle = evaluation["test"], evaluation["oracle_roc_auc"]
    family = evaluation["model"]["family"]
    per_family = tuning["best_per_family"]
    compared = evaluation["threshold_comparison"]
    figures = [
        Figure(
            NAME,
            f"pipeline run, {TRIALS} trials",
            "wall time, 100k claims",
            seconds,
            "s",
            f"< {TIME_LIMIT_S} s",
            seconds < TIME_LIMIT_S,
            notes=f"{len(tuning['trials'])} trials ran; chosen family {family}; {outcome}",
            extra={"best_cv_pr_auc_per_family": per_family},
        ),
        Figure(
            NAME,
            f"pipeline run, {TRIALS} trials",
            "peak memory (process tree)",
            peak,
            "MB",
            f"< {MEMORY_LIMIT_MB} MB",
            peak < MEMORY_LIMIT_MB,
        ),
        Figure(
            NAME,
            "trials",
            "completed",
            len(tuning["trials"]),
            "",
            f"= {TRIALS}",
            len(tuning["trials"]) == TRIALS,
        ),
        Figure(
            NAME,
            "families tried",
            "count",
            len(per_family),
            "",
            "= 3",
            len(per_family) == 3,
            notes=", ".join(f"{k} {v:.4f}" for k, v in per_family.items()) + " (best CV PR-AUC)",
        ),
        Figure(NAME, f"champion ({family})", "test ROC-AUC", test["roc_auc"], ""),
        Figure(NAME, "oracle (true probability)", "test ROC-AUC", oracle, ""),
        Figure(
            NAME,
            f"champion ({family})",
            "gap to oracle",
            oracle - test["roc_auc"],
            "",
            "<= 0.01",
            oracle - test["roc_auc"] <= 0.01,
        ),
    ]
    chosen, half = compared["chosen"], compared["half"]
    figures += [
        Figure(
            NAME,
            f"cost-chosen threshold {chosen['threshold']:.3f}",
            "expected cost per claim",
            chosen["expected_cost"],
            "",
            "< cost at 0.5",
            chosen["expected_cost"] < half["expected_cost"],
            notes=f"{chosen['auto_approved_share']:.1%} auto-approved",
        ),
        Figure(
            NAME,
            "threshold 0.5",
            "expected cost per claim",
            half["expected_cost"],
            "",
            notes=f"{half['auto_approved_share']:.1%} auto-approved",
        ),
    ]
    return figures
