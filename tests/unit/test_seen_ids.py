"""The batch scorer's memory of claim ids: exact across chunks, whether the ids sit in memory or on disk."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from shared.ml.seen_ids import SeenIds


def _replay(seen: SeenIds, chunks: list[np.ndarray]) -> list[np.ndarray]:
    """Feeds the chunks as the scorer does and returns what each lookup answered."""
    answers, row = [], 1
    for hashes in chunks:
        rows = np.arange(row, row + len(hashes), dtype=np.int64)
        earlier = seen.first_rows(hashes)
        answers.append(earlier)
        seen.add(hashes[earlier < 0], rows[earlier < 0])
        row += len(hashes)
    return answers


def _expected(chunks: list[np.ndarray]) -> list[np.ndarray]:
    first: dict[int, int] = {}
    answers, row = [], 1
    for hashes in chunks:
        answer = np.array([first.get(int(h), -1) for h in hashes], dtype=np.int64)
        for offset, h in enumerate(hashes.tolist()):
            if answer[offset] < 0:
                first.setdefault(h, row + offset)
        answers.append(answer)
        row += len(hashes)
    return answers


@pytest.mark.parametrize("memory_ids", [1, 37, 500, 10_000])
def test_first_rows_are_exact_in_memory_and_spilled(memory_ids: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    universe = rng.integers(0, 2**63, size=3_000, dtype=np.int64).astype(np.uint64)
    # Chunks drawn with repeats within and across chunks, as a file with duplicated claims.
    chunks = [rng.choice(universe, size=int(rng.integers(1, 400))) for _ in range(40)]
    seen = SeenIds(memory_ids=memory_ids, scratch=tmp_path)
    got = _replay(seen, chunks)
    for answer, expected in zip(got, _expected(chunks), strict=True):
        np.testing.assert_array_equal(answer, expected)
    assert len(seen) == len(np.unique(np.concatenate(chunks)))
    if memory_ids < 1_000:
        assert seen.runs_on_disk > 0, "a small memory budget must write runs to disk"
    else:
        assert seen.runs_on_disk == 0


def test_runs_are_removed_with_the_index(tmp_path: Path) -> None:
    seen = SeenIds(memory_ids=10, scratch=tmp_path)
    seen.add(np.arange(100, dtype=np.uint64), np.arange(1, 101))
    assert any(tmp_path.iterdir())
    del seen
    gc.collect()
    assert not any(tmp_path.iterdir())


def test_rows_beyond_32_bits_keep_their_numbers(tmp_path: Path) -> None:
    seen = SeenIds(memory_ids=2, scratch=tmp_path)
    far = 2**33 + 5
    seen.add(np.array([11, 12, 13], dtype=np.uint64), np.array([1, 2, far]))
    np.testing.assert_array_equal(seen.first_rows(np.array([13, 11, 99], dtype=np.uint64)), [far, 1, -1])


def test_memory_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SeenIds(memory_ids=0)
