"""Runs every benchmark (or those named on the command line), prints one table, saves JSON results."""

from __future__ import annotations

import importlib
import sys

from benchmarks.harness import Figure, save, table

BENCHMARKS = (
    "bench_generation",
    "bench_training",
    "bench_public_table",
    "bench_pipeline",
    "bench_serving",
    "bench_lambda",
    "bench_batch",
    "bench_monitoring",
    "bench_load",
)


def main(names: list[str]) -> int:
    selected = names or list(BENCHMARKS)
    figures: list[Figure] = []
    for name in selected:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"running {module.NAME} …", flush=True)
        results = module.run()
        path = save(module.NAME, results)
        print(f"  saved {path}", flush=True)
        figures.extend(results)
    print()
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
