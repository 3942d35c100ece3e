"""Running a compiled per-row kernel over a batch on every core.

The kernels (Numba, ``nogil=True``) release the GIL, so plain threads run row chunks side by side:
no process pool, no copy of the model, and no Numba threading layer (its default one aborts when two
Python threads enter a parallel region at once, as a threaded server may do).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Final

import numpy as np

PARALLEL_ROWS: Final = 64  # below this, handing rows to a second thread costs more than it saves


@cache
def _cores() -> int:
    return os.cpu_count() or 1  # asked once: the call reads /sys, 15 us a request when serving


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="claims-risk-rows")


def run_over_rows(kernel: Callable[[slice], None], n_rows: int) -> None:
    """Call ``kernel(rows)`` on slices covering ``range(n_rows)``: one slice for a few rows, one per
    core for a batch. The kernel writes its results into arrays the caller owns, row by row."""
    if n_rows < PARALLEL_ROWS:
        kernel(slice(0, n_rows))
        return
    workers = _cores()
    if workers == 1:
        kernel(slice(0, n_rows))
        return
    bounds = np.linspace(0, n_rows, workers + 1).astype(int)
    chunks = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    list(_pool(workers).map(kernel, chunks))  # waits for every chunk; re-raises a kernel's error
