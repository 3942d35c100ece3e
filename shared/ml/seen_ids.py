"""The claim ids a batch file has shown so far, in memory that does not grow with the file.

Ids are kept as 64-bit hashes with the row each first came on (12 bytes an id instead of a Python
string in a dict, about 130). Up to ``memory_ids`` of them sit in memory in sorted blocks merged as
they grow (a log-structured index); past that, the merged block is written to a scratch folder as
a sorted run, and later chunks look their ids up in each run through a memory map opened for that
lookup and closed after it, so the run's pages leave the process's resident memory again. A run
is searched whole (one binary search per id), so a file of 16M claims, with 1M ids in memory,
searches 15 runs per chunk: a few percent of the time scoring takes, for memory that stays at
about 12 MB whatever the file's length.

Two different ids share a hash with a chance of about n²/2^65: 7 in a million for 16M claims.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Final

import numpy as np

MEMORY_IDS: Final = 1_000_000  # ids held in memory before a sorted run is written out (12 MB)


def _merged(blocks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.concatenate([k for k, _ in blocks])
    rows = np.concatenate([r.astype(np.int64) for _, r in blocks])
    order = np.argsort(keys, kind="stable")
    return keys[order], _narrow(rows[order])


def _narrow(rows: np.ndarray) -> np.ndarray:
    return rows.astype(np.uint32) if len(rows) and rows.max() < 2**32 else rows.astype(np.int64)


def _lookup(keys: np.ndarray, rows: np.ndarray, hashes: np.ndarray, found: np.ndarray) -> None:
    """Fills ``found`` (where still -1) with the first row of each hash present in the sorted ``keys``."""
    if not len(keys):
        return
    open_at = np.flatnonzero(found < 0)
    at = np.minimum(np.searchsorted(keys, hashes[open_at]), len(keys) - 1)
    hit = keys[at] == hashes[open_at]
    found[open_at[hit]] = rows[at[hit]]


class SeenIds:
    """Claim-id hashes seen so far in one file, each with the row it first came on."""

    def __init__(self, memory_ids: int = MEMORY_IDS, scratch: Path | None = None) -> None:
        if memory_ids < 1:
            raise ValueError(f"memory_ids must be at least 1, not {memory_ids}")
        self._memory_ids = memory_ids
        self._scratch_parent = scratch
        self._blocks: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, their first rows)
        self._in_memory = 0
        self._runs: list[tuple[Path, Path]] = []  # (sorted hashes, first rows) as .npy files
        self._folder: Path | None = None

    def __len__(self) -> int:
        return self._in_memory + sum(int(np.load(keys, mmap_mode="r").shape[0]) for keys, _ in self._runs)

    @property
    def runs_on_disk(self) -> int:
        return len(self._runs)

    def first_rows(self, hashes: np.ndarray) -> np.ndarray:
        """The row each hash first came on, -1 for a hash not seen before."""
        found = np.full(len(hashes), -1, dtype=np.int64)
        for keys, rows in self._blocks:
            _lookup(keys, rows, hashes, found)
        for keys_file, rows_file in self._runs:
            if not (found < 0).any():
                break
            # Mapped for this lookup only: dropping the maps unmaps the pages the search touched.
            keys, rows = np.load(keys_file, mmap_mode="r"), np.load(rows_file, mmap_mode="r")
            _lookup(keys, rows, hashes, found)
            del keys, rows
        return found

    def add(self, hashes: np.ndarray, rows: np.ndarray) -> None:
        """Remember new ids (their first row when one repeats within ``hashes``)."""
        if not len(hashes):
            return
        keys, first = np.unique(hashes, return_index=True)
        self._blocks.append((keys, _narrow(rows[first])))
        self._in_memory += len(keys)
        # Merge while the newest block is at least half its neighbour: log2(n) blocks at most.
        while len(self._blocks) > 1 and len(self._blocks[-1][0]) * 2 >= len(self._blocks[-2][0]):
            newest, older = self._blocks.pop(), self._blocks.pop()
            self._blocks.append(_merged([older, newest]))
        if self._in_memory >= self._memory_ids:
            self._spill()

    def _spill(self) -> None:
        keys, rows = _merged(self._blocks) if len(self._blocks) > 1 else self._blocks[0]
        folder = self._scratch()
        number = len(self._runs)
        keys_file, rows_file = folder / f"run-{number}-keys.npy", folder / f"run-{number}-rows.npy"
        np.save(keys_file, keys)
        np.save(rows_file, rows)
        self._runs.append((keys_file, rows_file))
        self._blocks, self._in_memory = [], 0

    def _scratch(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="claims-risk-seen-ids-", dir=self._scratch_parent))
            # The runs go with the index, however the scoring ends.
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        return self._folder
