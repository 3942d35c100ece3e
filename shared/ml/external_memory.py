"""XGBoost training from data that do not fit: the training split read batch by batch through
XGBoost's external-memory iterator, encoded as it goes, never whole in memory.

XGBoost builds its quantile sketch and its histogram pages from the batches (``ExtMemQuantileDMatrix``,
pages cached on disk); the encoder, the baseline statistics and the training metrics come from a
sample, which is what they need. The validation split, for early stopping and calibration, is held
in memory up to a cap (a random sample beyond it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from shared.parquet_batches import parquet_batches

BATCH_ROWS: Final = 200_000
# Memory a matrix may take before training goes through the iterator: a quarter of the machine's.
MEMORY_SHARE: Final = 0.25
# An in-memory training run holds the frame (Arrow's decoded size, about twice over in pandas) and
# the float32 matrix with XGBoost's own copy of it.
FRAME_OVERHEAD: Final = 3.0


def machine_memory_bytes() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet") if p.is_file())


def rows_and_bytes(files: Sequence[Path]) -> tuple[int, int]:
    """Rows and decoded bytes of Parquet files, from their footers alone."""
    rows = size = 0
    for file in files:
        meta = pq.ParquetFile(file).metadata
        rows += meta.num_rows
        size += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return rows, size


def needs_external_memory(files: Sequence[Path], budget_mb: int) -> bool:
    """Whether an in-memory run would pass the budget (``budget_mb`` 0: a share of the machine's)."""
    budget = budget_mb * 1024 * 1024 if budget_mb > 0 else int(machine_memory_bytes() * MEMORY_SHARE)
    _, size = rows_and_bytes(files)
    return size * FRAME_OVERHEAD > budget


def batches(files: Sequence[Path], rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    for file in files:
        for batch in parquet_batches(file, rows):
            yield batch.to_pandas()


def sample_frame(files: Sequence[Path], rows: int, seed: int) -> pd.DataFrame:
    """A uniform random sample of at most ``rows`` rows, read batch by batch (reservoir per batch:
    each batch keeps its share of the sample)."""
    total, _ = rows_and_bytes(files)
    if total <= rows:
        return pd.concat(list(batches(files)), ignore_index=True)
    generator = np.random.default_rng(seed)
    keep = np.sort(generator.choice(total, size=rows, replace=False))
    parts, offset = [], 0
    for frame in batches(files):
        mine = keep[(keep >= offset) & (keep < offset + len(frame))] - offset
        if len(mine):
            parts.append(frame.iloc[mine])
        offset += len(frame)
    return pd.concat(parts, ignore_index=True)


def label_counts(files: Sequence[Path], target: str) -> tuple[int, int]:
    """Rows and positives, reading only the target column."""
    rows = positives = 0
    for file in files:
        for batch in parquet_batches(file, BATCH_ROWS, columns=[target]):
            values = batch.column(0).to_numpy(zero_copy_only=False)
            rows += len(values)
            positives += int(np.sum(values == 1))
    return rows, positives


def external_matrix(
    files: Sequence[Path],
    encode: Callable[[pd.DataFrame], np.ndarray],
    labels: Callable[[pd.DataFrame], np.ndarray],
    weights: Callable[[np.ndarray], np.ndarray],
    cache: Path,
    feature_names: list[str],
) -> Any:
    """An ``ExtMemQuantileDMatrix`` over the files, each batch encoded when XGBoost asks for it."""
    import xgboost as xgb

    class ParquetIterator(xgb.DataIter):
        def __init__(self) -> None:
            self._batches: Iterator[pd.DataFrame] | None = None
            cache.mkdir(parents=True, exist_ok=True)
            super().__init__(cache_prefix=str(cache / "xgb"), release_data=True)

        def next(self, input_data: Callable[..., None]) -> bool:
            if self._batches is None:
                self._batches = batches(files)
            frame = next(self._batches, None)
            if frame is None:
                return False
            y = labels(frame)
            input_data(data=encode(frame), label=y, weight=weights(y), feature_names=feature_names)
            return True

        def reset(self) -> None:
            self._batches = None

    return xgb.ExtMemQuantileDMatrix(ParquetIterator(), missing=np.nan, nthread=os.cpu_count() or 1)
