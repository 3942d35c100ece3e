"""Feature encoding driven by the feature spec.

The encoder is fitted on training data and saved as JSON inside the model artifact (no pickles), so
the inference script rebuilds exactly the same columns. It reads *columns* (a mapping of column name
to values), which serves both a pandas DataFrame (training, batch) and a handful of JSON records
(serving) without building a DataFrame per request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import numpy as np
from pydantic import BaseModel, Field

from shared.feature_spec import ColumnKind, DerivedFeature, FeatureSpec

if TYPE_CHECKING:
    import pandas as pd

_TOKEN: Final = re.compile(r"[a-z]{3,}")
_STOPWORDS: Final = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "was",
        "were",
        "from",
        "that",
        "this",
        "into",
        "after",
        "before",
        "during",
        "then",
        "than",
        "are",
        "has",
        "have",
        "had",
        "not",
        "but",
        "its",
        "his",
        "her",
        "their",
        "our",
        "your",
        "all",
        "any",
        "off",
        "out",
        "per",
        "via",
        "who",
        "whom",
        "which",
        "while",
    ]
)
_TRUE: Final = frozenset({"true", "1", "yes", "y", "t", "1.0"})
_FALSE: Final = frozenset({"false", "0", "no", "n", "f", "0.0"})

# A DataFrame (training, batch) or a plain mapping of column name to values (serving).
Columns: TypeAlias = "Mapping[str, Any] | pd.DataFrame"


class InvalidFeatureValue(ValueError):
    """A value that cannot be encoded; the message names the column."""


class EncodedColumn(BaseModel):
    name: str  # unique column name in the model matrix
    factor: str  # the readable factor it contributes to (several one-hot columns share one factor)


class FittedEncoder(BaseModel):
    """The fitted state: plain data, serialisable as JSON."""

    spec: FeatureSpec
    numeric: list[str] = Field(description="numeric and integer feature columns, as they are")
    boolean: list[str]
    derived: list[DerivedFeature]
    categories: dict[str, list[str]] = Field(description="one-hot levels per categorical column")
    vocabulary: dict[str, list[str]] = Field(description="indicator tokens per text column")
    columns: list[EncodedColumn]

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def factor_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for column in self.columns:
            seen.setdefault(column.factor, None)
        return list(seen)

    def factor_index(self) -> np.ndarray:
        """For each encoded column, the position of its factor in :attr:`factor_names`."""
        position = {name: i for i, name in enumerate(self.factor_names)}
        return np.array([position[c.factor] for c in self.columns], dtype=np.int64)

    def transform(self, data: Columns, n_rows: int | None = None) -> np.ndarray:
        """Encode columns into the model matrix (float32, NaN where a value is missing)."""
        n = _row_count(data) if n_rows is None else n_rows
        out = np.full((n, len(self.columns)), np.nan, dtype=np.float32)
        converted = _Converted(data, n)  # a column read by several features is converted once
        j = 0
        for name in self.numeric:
            out[:, j] = converted.floats(name)
            j += 1
        for name in self.boolean:
            out[:, j] = to_bool_float(data.get(name), n, name)
            j += 1
        for derived in self.derived:
            out[:, j] = derive(derived, data, n, converted)
            j += 1
        for name, levels in self.categories.items():
            codes, uniques = _distinct_texts(data.get(name), n)
            code_of = {text: k for k, text in enumerate(uniques)}
            for level in levels:
                out[:, j] = codes == code_of.get(level, -1)
                j += 1
        for name, tokens in self.vocabulary.items():
            # Each distinct text is split into words once; a row's few words set its columns.
            column_of = {token: k for k, token in enumerate(tokens)}
            codes, uniques = _distinct_texts(data.get(name), n)
            words = np.zeros((len(uniques) + 1, len(tokens)), dtype=np.float32)  # last row: missing
            for u, text in enumerate(uniques):
                for token in _tokens(text):
                    column = column_of.get(token)
                    if column is not None:
                        words[u, column] = 1.0
            out[:, j : j + len(tokens)] = words[codes]
            j += len(tokens)
        # A ratio over a tiny denominator, or a number beyond float32, is not a measurement: missing.
        out[~np.isfinite(out)] = np.nan
        return out


def fit_encoder(spec: FeatureSpec, data: Columns, target: np.ndarray) -> FittedEncoder:
    """Learn category levels and text tokens from training data."""
    n = len(target)
    numeric, boolean, categories, vocabulary = [], [], {}, {}
    columns: list[EncodedColumn] = []
    features = spec.feature_columns
    for col in features:
        if col.kind in (ColumnKind.NUMERIC, ColumnKind.INTEGER):
            numeric.append(col.name)
            columns.append(EncodedColumn(name=col.name, factor=col.name))
    for col in features:
        if col.kind == ColumnKind.BOOLEAN:
            boolean.append(col.name)
            columns.append(EncodedColumn(name=col.name, factor=col.name))
    for derived in spec.derived:
        columns.append(EncodedColumn(name=derived.name, factor=derived.name))
    for col in features:
        if col.kind == ColumnKind.CATEGORICAL:
            levels = _frequent_levels(to_str(data.get(col.name), n), spec.max_categories)
            categories[col.name] = levels
            columns.extend(EncodedColumn(name=f"{col.name}={lv}", factor=col.name) for lv in levels)
    for col in features:
        if col.kind == ColumnKind.TEXT and spec.text_vocabulary_size > 0:
            tokens = _informative_tokens(to_str(data.get(col.name), n), target, spec.text_vocabulary_size)
            vocabulary[col.name] = tokens
            columns.extend(
                EncodedColumn(name=f"{col.name}:{t}", factor=f"{col.name}_mentions_{t}") for t in tokens
            )
    return FittedEncoder(
        spec=spec,
        numeric=numeric,
        boolean=boolean,
        derived=list(spec.derived),
        categories=categories,
        vocabulary=vocabulary,
        columns=columns,
    )


# ---------------------------------------------------------------------------------------------
# Column conversions: accept numpy arrays, pandas Series (nullable types included) and lists.


def _row_count(data: Columns) -> int:
    if hasattr(data, "shape"):  # a DataFrame, whose .values is not the mapping's
        return int(data.shape[0])
    for values in data.values():
        return len(values)
    return 0


def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "to_numpy"):  # pandas Series and extension arrays
        return np.asarray(values.to_numpy(dtype=object, na_value=None))
    return np.asarray(values, dtype=object)


def to_float(values: Any, n: int, name: str = "") -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return values.astype(np.float64)
    if hasattr(values, "dtype") and getattr(values.dtype, "kind", "O") in "fiu":
        return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan))
    raw = _as_array(values)
    out = np.full(len(raw), np.nan)
    for i, v in enumerate(raw):
        if v is None or v == "" or isinstance(v, bool):
            if isinstance(v, bool):
                raise InvalidFeatureValue(f"{name}: expected a number, got {v!r}")
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise InvalidFeatureValue(f"{name}: expected a number, got {v!r}") from None
    return out


def to_bool_float(values: Any, n: int, name: str = "") -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    if str(getattr(values, "dtype", "")) == "boolean":  # pandas' nullable booleans (validated files)
        return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan))
    raw = _as_array(values)
    out = np.full(len(raw), np.nan)
    for i, v in enumerate(raw):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, bool | np.bool_):
            out[i] = float(v)
            continue
        text = str(v).strip().lower()
        if text in _TRUE:
            out[i] = 1.0
        elif text in _FALSE:
            out[i] = 0.0
        elif text:
            raise InvalidFeatureValue(f"{name}: expected true or false, got {v!r}")
    return out


def to_str(values: Any, n: int) -> np.ndarray:
    """Strings, with None for missing values."""
    if values is None:
        return np.full(n, None, dtype=object)
    raw = _as_array(values)
    return np.array(
        [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in raw], dtype=object
    )


def _distinct_texts(values: Any, n: int) -> tuple[np.ndarray, list[str | None]]:
    """Each row's code into the distinct texts (:func:`to_str`'s values; missing ones get the code
    ``len(texts)``), so work per text is done once per distinct text, not once per row."""
    if str(getattr(values, "dtype", "")) == "string" and hasattr(values, "factorize"):
        codes, distinct = values.factorize()  # pandas' strings, hashed in C; missing is -1
        texts: list[str | None] = list(distinct.tolist())
    else:
        as_text = to_str(values, n)
        index: dict[str | None, int] = {}
        codes = np.fromiter(
            (index.setdefault(v, len(index)) for v in as_text), dtype=np.int64, count=len(as_text)
        )
        texts = list(index)
        if None in index:  # missing gets the code after the texts, as pandas' -1 does below
            at = index[None]
            texts.pop(at)
            codes = np.where(codes == at, -1, np.where(codes > at, codes - 1, codes))
    codes = np.asarray(codes, dtype=np.int64)
    return np.where(codes < 0, len(texts), codes), texts


def to_days(values: Any, n: int, name: str = "") -> np.ndarray:
    """Dates as float days since the epoch (NaN when missing)."""
    if values is None:
        return np.full(n, np.nan)
    if hasattr(values, "dtype") and str(values.dtype).startswith("datetime64"):
        arr = np.asarray(values, dtype="datetime64[D]")
    else:
        raw = _as_array(values)
        try:
            arr = np.array([None if _missing(v) else v for v in raw], dtype="datetime64[D]")
        except ValueError:
            raise InvalidFeatureValue(f"{name}: expected ISO dates (YYYY-MM-DD)") from None
    days = arr.astype("int64").astype(np.float64)
    days[np.isnat(arr)] = np.nan
    return days


def _missing(value: Any) -> bool:
    """None, an empty string, or NaN / NaT (the missing values records from pandas carry)."""
    return value is None or value == "" or bool(value != value)  # noqa: PLR0124 - NaN is not equal to itself


class _Converted:
    """Columns converted to numbers for one :meth:`FittedEncoder.transform` call, each once."""

    def __init__(self, data: Columns, n: int) -> None:
        self.data, self.n = data, n
        self._floats: dict[str, np.ndarray] = {}
        self._days: dict[str, np.ndarray] = {}

    def floats(self, name: str) -> np.ndarray:
        if name not in self._floats:
            self._floats[name] = to_float(self.data.get(name), self.n, name)
        return self._floats[name]

    def days(self, name: str) -> np.ndarray:
        if name not in self._days:
            self._days[name] = to_days(self.data.get(name), self.n, name)
        return self._days[name]


def derive(feature: DerivedFeature, data: Columns, n: int, converted: _Converted | None = None) -> np.ndarray:
    a = feature.inputs[0]
    columns = converted or _Converted(data, n)
    if feature.op == "ratio":
        num, den = columns.floats(a), columns.floats(feature.inputs[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / den, np.nan)
    if feature.op == "days_between":
        later = columns.days(feature.inputs[1])
        return np.asarray(later - columns.days(a))
    if feature.op in ("month", "weekday"):
        days = columns.days(a)
        valid = ~np.isnan(days)
        out = np.full(n, np.nan)
        stamps = days[valid].astype("int64").astype("datetime64[D]")
        if feature.op == "month":
            out[valid] = stamps.astype("datetime64[M]").astype(np.int64) % 12 + 1
        else:  # 1970-01-01 was a Thursday: Monday = 0
            out[valid] = (days[valid].astype(np.int64) + 3) % 7
        return out
    values = columns.floats(a)
    with np.errstate(invalid="ignore"):
        return np.asarray(np.log1p(np.where(values >= 0, values, np.nan)))


def _frequent_levels(values: np.ndarray, limit: int, min_count: int = 5) -> list[str]:
    present = values[values != None]  # noqa: E711 - elementwise comparison on an object array
    if len(present) == 0:
        return []
    levels, counts = np.unique(present.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [str(levels[i]) for i in order[:limit] if counts[i] >= min_count]


def _tokens(text: str | None) -> frozenset[str]:
    if not text:
        return frozenset()
    return frozenset(t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS)


def _informative_tokens(texts: Sequence[str | None] | np.ndarray, target: np.ndarray, k: int) -> list[str]:
    """The k tokens whose presence says most about the target (chi-square on the 2x2 table)."""
    n = len(target)
    positives = float(np.sum(target))
    counts: dict[str, list[float]] = {}
    for text, y in zip(texts, target, strict=True):
        for token in _tokens(text):
            entry = counts.setdefault(token, [0.0, 0.0])
            entry[0] += 1.0
            entry[1] += float(y)
    min_docs = max(5, int(0.001 * n))
    scored: list[tuple[float, str]] = []
    for token, (docs, pos) in counts.items():
        if docs < min_docs or docs > 0.9 * n:
            continue
        scored.append((_chi2(docs, pos, n, positives), token))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [token for _, token in scored[:k]]


def _chi2(docs: float, pos: float, n: float, positives: float) -> float:
    table = np.array([[pos, docs - pos], [positives - pos, n - docs - (positives - pos)]])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.nansum((table - expected) ** 2 / expected))


def columns_from_records(records: Iterable[Mapping[str, Any]], names: Iterable[str]) -> dict[str, list[Any]]:
    """Turn JSON records into columns (only those the encoder reads)."""
    rows = list(records)
    return {name: [r.get(name) for r in rows] for name in names}


def input_columns(encoder: FittedEncoder) -> list[str]:
    """Raw columns the encoder reads."""
    names = (
        list(encoder.numeric) + list(encoder.boolean) + list(encoder.categories) + list(encoder.vocabulary)
    )
    for derived in encoder.derived:
        names.extend(derived.inputs)
    return list(dict.fromkeys(names))
