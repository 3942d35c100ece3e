"""Synthetic data generation speed: 1M claims, generation alone and written as CSV and Parquet."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.harness import Figure
from shared.ml.synthetic import generate_claims

NAME = "generation"
ROWS = 1_000_000


def run() -> list[Figure]:
    started = time.perf_counter()
    claims = generate_claims(ROWS, seed=0)
    generate_s = time.perf_counter() - started
    figures = [
        Figure(NAME, "generator", "generate 1M claims", generate_s, "s", "< 30 s", generate_s < 30),
        Figure(NAME, "generator", "throughput", ROWS / generate_s, "claims/s"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for suffix, writer in ((".parquet", claims.frame.to_parquet), (".csv", claims.frame.to_csv)):
            path = Path(tmp) / f"claims{suffix}"
            started = time.perf_counter()
            writer(path, index=False)
            seconds = time.perf_counter() - started
            figures.append(
                Figure(
                    NAME,
                    f"write {suffix[1:]}",
                    "write 1M claims",
                    seconds,
                    "s",
                    notes=f"{path.stat().st_size / 1e6:.0f} MB",
                )
            )
    return figures
