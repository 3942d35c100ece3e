"""A batch's top risk factors written straight to JSON text, one string per claim.

:meth:`shared.ml.model.RiskModel._top_factors` builds five dicts per claim, which a file writer then
serialises: on a million claims that was 20 of the batch path's 56 seconds. Here the same numbers are
computed with the same numpy operations, every float is turned into text by orjson in one call per
kind (so each reads exactly as ``orjson.dumps`` of the dicts would write it), and a compiled pass
copies the pieces into one Arrow string array. The text is byte for byte ``orjson.dumps`` of what
``_top_factors`` returns; ``tests/integration/test_batch_identical.py`` holds it to that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numba
import numpy as np
import orjson
import pyarrow as pa

TOP_FACTORS: Final = 5

# The fixed pieces, at these indices of the pool.
_FIXED: Final = (b"[", b"]", b",", b',"direction":"increases_risk","contribution":')
_FIXED_TAIL: Final = (
    b',"direction":"decreases_risk","contribution":',
    b',"value":',
    b"}",
    b"null",
    b"true",
    b"false",
)
_OPEN, _CLOSE, _COMMA, _INCREASES, _DECREASES, _VALUE, _END, _NULL, _TRUE, _FALSE = range(10)


class _Pool:
    """Text pieces side by side in one byte buffer; a piece is its index into ``starts``/``ends``."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        self._ends: list[np.ndarray] = []
        self._size = 0
        self._count = 0

    def add(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> int:
        """Add pieces (``data[starts[i]:ends[i]]``); the id of the first."""
        first = self._count
        self._parts.append(data)
        self._starts.append(starts + self._size)
        self._ends.append(ends + self._size)
        self._size += len(data)
        self._count += len(starts)
        return first

    def add_texts(self, texts: list[bytes]) -> int:
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        ends = np.cumsum(lengths)
        return self.add(np.frombuffer(b"".join(texts), dtype=np.uint8), ends - lengths, ends)

    def add_json_values(self, values: list[Any]) -> int:
        """Each value as ``orjson.dumps`` writes it: one call, then split at the commas (numbers,
        null, true and false hold none)."""
        if not values:
            return self._count
        data = np.frombuffer(orjson.dumps(values), dtype=np.uint8)[1:-1]
        commas = np.flatnonzero(data == ord(","))
        return self.add(data, np.r_[0, commas + 1], np.r_[commas, len(data)])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.uint8)
        return data, np.concatenate(self._starts), np.concatenate(self._ends)


class FactorLayout:
    """What a model's factors need to be written: names, where each one's value is read, and
    which factors take the claim's category level as their value."""

    def __init__(
        self,
        names: list[str],
        value_column: np.ndarray,
        value_field: list[str | None],
        is_text: np.ndarray,
    ) -> None:
        self.names = names
        self.value_column = value_column
        self.is_text = is_text
        self.fields = sorted({f for f in value_field if f is not None})
        self.field_of = np.array(
            [-1 if f is None else self.fields.index(f) for f in value_field], dtype=np.int64
        )
        self.prefixes = [orjson.dumps({"factor": name})[:-1] + b',"importance":' for name in names]


def factors_json(
    layout: FactorLayout,
    matrix: np.ndarray,
    contributions: np.ndarray,
    levels: Mapping[str, Any],
) -> pa.StringArray | None:
    """Each row's top factors as JSON text. ``levels`` holds, per categorical field, the claims'
    levels (a pandas Series or array, missing as NA or None). None when a contribution is not a
    number, which the dict path handles (it never happens with finite trees)."""
    n = len(contributions)
    if n == 0:
        return pa.array([], type=pa.string())
    if np.isnan(contributions).any():
        return None
    # The numbers, exactly as RiskModel._top_factors computes them.
    magnitude = np.abs(contributions)
    totals = magnitude.sum(axis=1)
    top = _top_columns(magnitude, min(TOP_FACTORS, magnitude.shape[1]))
    shares = np.take_along_axis(magnitude, top, axis=1) / np.where(totals > 0, totals, 1.0)[:, None]
    signed = np.take_along_axis(contributions, top, axis=1)
    columns = layout.value_column[top]
    raw = np.take_along_axis(matrix, np.maximum(columns, 0), axis=1)
    kept = signed != 0
    increases = signed > 0
    field = layout.field_of[top]
    missing = np.isnan(raw)
    word = layout.is_text[np.maximum(columns, 0)] & ~missing

    pool = _Pool()
    for piece in (*_FIXED, *_FIXED_TAIL):
        pool.add_texts([piece])
    names = pool.add_texts(layout.prefixes)
    importance = pool.add_json_values(np.round(shares, 4)[kept].tolist())
    contribution = pool.add_json_values(np.round(signed, 4)[kept].tolist())

    # A factor's value: the category level, else null for a missing value, else true/false for a
    # word of the description, else the number (rounded in float32, as the matrix holds it).
    value = np.full(top.shape, -1, dtype=np.int64)
    is_number = kept & (field < 0) & ~missing & ~word
    value[is_number] = pool.add_json_values(
        np.round(raw, 4)[is_number].astype(np.float64).tolist()
    ) + np.arange(int(is_number.sum()))
    value[kept & (field < 0) & missing] = _NULL
    value[kept & (field < 0) & word] = np.where(raw[kept & (field < 0) & word] != 0, _TRUE, _FALSE)
    for k, name in enumerate(layout.fields):
        at = kept & (field == k)
        if not at.any():
            continue
        codes, texts = _level_codes(levels[name], n)
        first = pool.add_texts(texts)
        value[at] = first + codes[np.nonzero(at)[0]]

    entry = np.cumsum(kept.ravel()).reshape(top.shape) - 1  # the kept entry's rank in the file order
    data, starts, ends = pool.arrays()
    offsets, text = _assemble(
        kept,
        names + top,
        np.where(increases, _INCREASES, _DECREASES),
        importance + entry,
        contribution + entry,
        value,
        starts,
        ends,
        data,
    )
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(text))


def _level_codes(values: Any, n: int) -> tuple[np.ndarray, list[bytes]]:
    """Each row's code into the texts of the levels present: ``null`` for a missing or empty level,
    the level as a JSON string otherwise (the dict path's ``None if level is None or level == ""``)."""
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(values) if not isinstance(values, pd.Series) else values)
    texts = [b"null" if u == "" else orjson.dumps(str(u)) for u in uniques.tolist()]
    texts.append(b"null")  # code -1: missing
    codes = np.where(codes < 0, len(texts) - 1, codes)
    if len(codes) != n:  # pragma: no cover - the caller passes one level per row
        raise ValueError("one level per row expected")
    return codes.astype(np.int64), texts


@numba.njit(cache=True, nogil=True)
def _top_columns(magnitude: np.ndarray, k: int) -> np.ndarray:  # pragma: no cover - compiled
    """Per row, the columns of the ``k`` largest values, largest first, the lower column first among
    equals: ``np.argsort(-magnitude, axis=1, kind="stable")[:, :k]`` for values that are not NaN,
    without sorting every column."""
    n_rows, n_columns = magnitude.shape
    top = np.empty((n_rows, k), dtype=np.int64)
    best = np.empty(k)
    for i in range(n_rows):
        filled = 0
        for j in range(n_columns):
            value = magnitude[i, j]
            if filled == k and value <= best[k - 1]:
                continue
            at = min(filled, k - 1)
            while at > 0 and best[at - 1] < value:  # strictly less: an equal earlier column stays ahead
                if at < k:
                    best[at], top[i, at] = best[at - 1], top[i, at - 1]
                at -= 1
            best[at], top[i, at] = value, j
            filled = min(filled + 1, k)
    return top


@numba.njit(cache=True, nogil=True, inline="always")
def _put(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray, piece: int, out: np.ndarray, at: int
) -> int:  # pragma: no cover - compiled
    for i in range(starts[piece], ends[piece]):
        out[at] = data[i]
        at += 1
    return at


@numba.njit(cache=True, nogil=True)
def _assemble(
    kept: np.ndarray,
    name: np.ndarray,
    direction: np.ndarray,
    importance: np.ndarray,
    contribution: np.ndarray,
    value: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    data: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Each row: ``[`` + its kept entries joined by ``,`` + ``]``, an entry being its factor's
    prefix, importance, direction, contribution, ``,"value":``, value and ``}``."""
    n_rows, ranks = kept.shape
    lengths = ends - starts
    fixed = lengths[_VALUE] + lengths[_END]
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    for i in range(n_rows):
        size = lengths[_OPEN] + lengths[_CLOSE]
        written = 0
        for r in range(ranks):
            if kept[i, r]:
                size += lengths[_COMMA] if written else 0
                size += lengths[name[i, r]] + lengths[importance[i, r]] + lengths[direction[i, r]]
                size += lengths[contribution[i, r]] + lengths[value[i, r]] + fixed
                written += 1
        offsets[i + 1] = offsets[i] + size
    out = np.empty(offsets[n_rows], dtype=np.uint8)
    for i in range(n_rows):
        at = _put(data, starts, ends, _OPEN, out, offsets[i])
        written = 0
        for r in range(ranks):
            if kept[i, r]:
                if written:
                    at = _put(data, starts, ends, _COMMA, out, at)
                at = _put(data, starts, ends, name[i, r], out, at)
                at = _put(data, starts, ends, importance[i, r], out, at)
                at = _put(data, starts, ends, direction[i, r], out, at)
                at = _put(data, starts, ends, contribution[i, r], out, at)
                at = _put(data, starts, ends, _VALUE, out, at)
                at = _put(data, starts, ends, value[i, r], out, at)
                at = _put(data, starts, ends, _END, out, at)
                written += 1
        _put(data, starts, ends, _CLOSE, out, at)
    return offsets, out
