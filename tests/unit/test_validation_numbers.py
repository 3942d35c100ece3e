"""Numbers in a file's text are read as pandas reads them, whichever reader does the work."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.ml.validation import _text_numbers

TRICKY = [
    "0",
    "-0",
    "007",
    "1.5",
    "1.",
    ".5",
    "1e5",
    " 1",
    "inf",
    "nan",
    "+3",
    "\uff11\uff12",  # full-width digits
    "1_000",
    "0x10",
    "1,5",
]
LONG = ["123456789012345", "1234567890123456", "12345678901234.5", "0.1234567890123456", "3.14159265358979"]


def pandas_numbers(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text, errors="coerce").astype("float64")


def same(a: pd.Series, b: pd.Series) -> bool:
    """Equal values, NaN in the same places and the same sign on zeros."""
    return a.equals(b) and bool((np.signbit(a.fillna(1.0)) == np.signbit(b.fillna(1.0))).all())


@pytest.mark.parametrize("odd", [*TRICKY, *LONG, "", None])
def test_a_column_reads_as_pandas_reads_it_whatever_one_value_looks_like(odd: str | None) -> None:
    rng = np.random.default_rng(1)
    plain = [f"{x:.{d}f}" for x, d in zip(rng.uniform(0, 1e6, 500), rng.integers(0, 6, 500), strict=True)]
    text = pd.Series([*plain, odd, "12"], dtype="string")
    assert same(_text_numbers(text), pandas_numbers(text))


def test_plain_decimals_up_to_fifteen_digits_read_exactly() -> None:
    rng = np.random.default_rng(2)
    digits = rng.integers(1, 16, 3000)
    values = [str(rng.integers(0, 10**k)) for k in digits]
    values = [
        v[: len(v) // 2] + "." + v[len(v) // 2 :] if len(v) > 1 and i % 2 else v for i, v in enumerate(values)
    ]
    text = pd.Series([*values, None], dtype="string")
    assert same(_text_numbers(text), pandas_numbers(text))
    assert _text_numbers(text).iloc[:-1].tolist() == [float(v) for v in values]
