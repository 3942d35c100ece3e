"""Feature encoding driven by the feature spec.

The encoder is fitted on training data and saved as JSON inside the model artifact (no pickles), so
the inference script rebuilds exactly the same columns. It reads *columns* (a mapping of column name
to values), which serves both a pandas DataFrame (training, batch) and a handful of JSON records
(serving) without building a DataFrame per request.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from shared.feature_spec import ColumnKind, ColumnSpec, DerivedFeature, FeatureSpec

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

MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
CALENDAR_NAMES: Final = {"month": MONTHS, "weekday": WEEKDAYS}
# Full and three-letter English names, any case, to their number (1 = January, 1 = Monday as ISO).
_CALENDAR_NUMBERS: Final = {
    kind: {key: k + 1 for k, name in enumerate(names) for key in (name.casefold(), name[:3].casefold())}
    for kind, names in CALENDAR_NAMES.items()
}


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
    _missing: dict[str, MissingTokens] | None = PrivateAttr(default=None)
    # Empty in artifacts written before ordered columns existed, which therefore still load.
    ordinals: dict[str, list[str]] = Field(
        default_factory=dict, description="levels, lowest first, per ordinal column (encoded 0, 1, ...)"
    )
    calendar: dict[str, str] = Field(
        default_factory=dict, description="month (1-12) or weekday (1-7, Monday first) per calendar column"
    )

    @property
    def level_fields(self) -> list[str]:
        """The fields whose factor value is the claim's own level (a category, a band, a month name),
        not the encoded number."""
        return [*self.categories, *self.ordinals, *self.calendar]

    def missing_tokens(self) -> dict[str, MissingTokens]:
        """Per column read, the raw values that mean missing beyond None and "" (which every
        conversion already reads as missing): the spec's and the column's own."""
        if self._missing is None:
            self._missing = missing_tokens_by_column(self.spec)
        return self._missing

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
        missing = self.missing_tokens()
        if missing:  # a token (an age of "0", a "?") reads as missing, as validation reads it
            data = _WithoutTokens(data, n, missing)
        assembled = {d.name: d for d in self.spec.assembled_dates}
        converted = _Converted(data, n, assembled)  # a column read by several features is converted once
        j = 0
        for name in self.numeric:
            out[:, j] = converted.floats(name)
            j += 1
        for name in self.boolean:
            out[:, j] = to_bool_float(data.get(name), n, name)
            j += 1
        for name, levels in self.ordinals.items():
            out[:, j] = level_positions(data.get(name), n, levels)
            j += 1
        for name, kind in self.calendar.items():
            out[:, j] = calendar_numbers(data.get(name), n, kind)
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
    # Ordered columns: one column each, the level's position, so a tree splits on the order.
    ordinals = {c.name: list(c.levels or []) for c in features if c.kind == ColumnKind.ORDINAL}
    calendar = {c.name: c.kind.value for c in features if c.kind in (ColumnKind.MONTH, ColumnKind.WEEKDAY)}
    columns.extend(EncodedColumn(name=name, factor=name) for name in [*ordinals, *calendar])
    for derived in spec.model_derived:
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
        derived=list(spec.model_derived),
        categories=categories,
        vocabulary=vocabulary,
        columns=columns,
        ordinals=ordinals,
        calendar=calendar,
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
    """Columns converted to numbers for one :meth:`FittedEncoder.transform` call, each once.
    ``assembled``: the spec's ``date_from_parts`` features, which date inputs may name."""

    def __init__(self, data: Columns, n: int, assembled: Mapping[str, DerivedFeature] | None = None) -> None:
        self.data, self.n = data, n
        self.assembled = assembled or {}
        self._floats: dict[str, np.ndarray] = {}
        self._days: dict[str, np.ndarray] = {}

    def floats(self, name: str) -> np.ndarray:
        if name not in self._floats:
            self._floats[name] = to_float(self.data.get(name), self.n, name)
        return self._floats[name]

    def days(self, name: str) -> np.ndarray:
        if name not in self._days:
            if name in self.assembled:
                self._days[name] = derive(self.assembled[name], self.data, self.n, self)
            else:
                self._days[name] = to_days(self.data.get(name), self.n, name)
        return self._days[name]

    def months(self, name: str) -> np.ndarray:
        """A month column as 1-12, written as a name or a number."""
        return calendar_numbers(self.data.get(name), self.n, "month")


def derive(
    feature: DerivedFeature,
    data: Columns,
    n: int,
    converted: _Converted | None = None,
    assembled: Mapping[str, DerivedFeature] | None = None,
) -> np.ndarray:
    """The feature's values. ``assembled``: the spec's assembled dates (see
    :attr:`FeatureSpec.assembled_dates`), for a date feature whose input names one."""
    a = feature.inputs[0]
    columns = converted or _Converted(data, n, assembled)
    if feature.op == "date_from_parts":
        week = columns.floats(feature.inputs[2]) if len(feature.inputs) > 2 else None
        return days_from_parts(columns.floats(a), columns.months(feature.inputs[1]), week)
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


def derived_inputs(spec: FeatureSpec, feature: DerivedFeature) -> list[str]:
    """The raw columns a derived feature reads: an assembled date input stands for its parts."""
    assembled = {d.name: d for d in spec.assembled_dates}
    names: list[str] = []
    for name in feature.inputs:
        names.extend(assembled[name].inputs if name in assembled else [name])
    return list(dict.fromkeys(names))


def input_columns(encoder: FittedEncoder) -> list[str]:
    """Raw columns the encoder reads."""
    names = [
        *encoder.numeric,
        *encoder.boolean,
        *encoder.categories,
        *encoder.vocabulary,
        *encoder.ordinals,
        *encoder.calendar,
    ]
    for derived in encoder.derived:
        names.extend(derived_inputs(encoder.spec, derived))
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------
# Ordered levels, month and weekday names, dates from parts, missing tokens.


def fold_level(text: str) -> str:
    """A level as compared: case and runs of spaces aside ("More than  30" is "more than 30")."""
    return " ".join(text.split()).casefold()


def calendar_number(kind: str, text: str) -> int | None:
    """A month (1-12) or weekday (1-7, Monday first) from its full or three-letter English name in any
    case, or its number ("3", "3.0"); None when the text is neither."""
    found = _CALENDAR_NUMBERS[kind].get(text.strip().casefold())
    if found is not None:
        return found
    try:
        number = float(text)
    except ValueError:
        return None
    top = len(CALENDAR_NAMES[kind])
    return int(number) if number.is_integer() and 1 <= number <= top else None


def calendar_name(kind: str, number: int) -> str:
    """The three-letter name validated data carries ("Mar", "Mon")."""
    return CALENDAR_NAMES[kind][number - 1][:3]


def canonical_levels(col: ColumnSpec, values: Any, n: int) -> np.ndarray:
    """An ordinal, month or weekday column's values as validated data writes them (the level's own
    spelling, "Mar", "Mon"), so traffic written "MARCH" counts as the training data's "Mar"; a value
    that is none of them stays as given. Other columns: their texts (:func:`to_str`)."""
    codes, distinct = _distinct_texts(values, n)
    uniques = [str(text) for text in distinct]  # missing is the code after them, never among them
    if col.kind == ColumnKind.ORDINAL:
        spelled = {fold_level(level): level for level in col.levels or []}
        texts = [spelled.get(fold_level(text), text) for text in uniques]
    elif col.kind in (ColumnKind.MONTH, ColumnKind.WEEKDAY):
        kind = col.kind.value
        numbers = [calendar_number(kind, text) for text in uniques]
        texts = [
            text if k is None else calendar_name(kind, k) for text, k in zip(uniques, numbers, strict=True)
        ]
    else:
        texts = uniques
    table: np.ndarray = np.array([*texts, None], dtype=object)
    return np.asarray(table[codes])


def _per_distinct(values: Any, n: int, read: Any) -> np.ndarray:
    """``read(text)`` for each row's text (NaN when missing), computed once per distinct text."""
    codes, uniques = _distinct_texts(values, n)
    table = np.array([read(text) for text in uniques] + [np.nan], dtype=np.float64)
    return np.asarray(table[codes])


def level_positions(values: Any, n: int, levels: Sequence[str]) -> np.ndarray:
    """Each value's position among the ordinal ``levels`` (0 for the first); NaN when missing or not a
    level (validation refuses such a value before it gets here)."""
    position = {fold_level(level): float(k) for k, level in enumerate(levels)}
    return _per_distinct(values, n, lambda text: position.get(fold_level(text), np.nan))


def calendar_numbers(values: Any, n: int, kind: str) -> np.ndarray:
    """Month (1-12) or weekday (1-7) numbers of names or numbers; NaN when missing or neither."""

    def read(text: str) -> float:
        number = calendar_number(kind, text)
        return np.nan if number is None else float(number)

    return _per_distinct(values, n, read)


def days_from_parts(year: np.ndarray, month: np.ndarray, week: np.ndarray | None) -> np.ndarray:
    """Days since the epoch of the approximate date in ``year``, ``month`` (1-12) and week of the month
    (day ``7 * (week - 1) + 1``, at most the month's last day; day 1 without weeks). NaN where a part
    is missing or out of range."""
    with np.errstate(invalid="ignore"):
        ok = (year % 1 == 0) & (year >= 1) & (year <= 9999) & (month % 1 == 0) & (month >= 1) & (month <= 12)
        offset = np.zeros(len(year))
        if week is not None:
            ok &= (week % 1 == 0) & (week >= 1)
            offset = np.where(ok, 7.0 * (week - 1), 0.0)
    out = np.full(len(year), np.nan)
    if not ok.any():
        return out
    months = ((year[ok] - 1970) * 12 + month[ok] - 1).astype(np.int64)
    start = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    end = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    out[ok] = np.minimum(start + offset[ok], end - 1).astype(np.float64)
    return out


# Per column: the missing texts (stripped) and, in a numeric column, the missing numbers.
MissingTokens: TypeAlias = tuple[frozenset[str], frozenset[float]]
_NUMERIC_KINDS: Final = (ColumnKind.NUMERIC, ColumnKind.INTEGER)


def missing_tokens_by_column(spec: FeatureSpec) -> dict[str, MissingTokens]:
    """The spec's missing tokens and each column's own, per column, "" left out (every conversion
    reads it as missing); columns with none are absent."""
    shared = {t.strip() for t in spec.missing_tokens}
    out: dict[str, MissingTokens] = {}
    for col in spec.columns:
        texts = frozenset(shared | {t.strip() for t in col.missing_tokens}) - {""}
        if not texts:
            continue
        numbers: set[float] = set()
        if col.kind in _NUMERIC_KINDS:
            for token in texts:
                with contextlib.suppress(ValueError):
                    numbers.add(float(token))
        out[col.name] = (texts, frozenset(numbers))
    return out


def without_tokens(values: Any, n: int, tokens: MissingTokens) -> Any:
    """``values`` with every missing token as missing (NaN in numbers, None elsewhere)."""
    texts, numbers = tokens
    kind = getattr(getattr(values, "dtype", None), "kind", "O")
    if kind in "fiu" and not isinstance(values, list):  # numbers: only number tokens can match
        if not numbers:
            return values
        floats = to_float(values, n)
        floats[np.isin(floats, list(numbers))] = np.nan
        return floats
    if kind in "Mmb":  # dates and booleans carry no tokens
        return values
    if str(getattr(values, "dtype", "")) == "string":  # pandas' strings: compared in C
        hit = values.str.strip().isin(list(texts)).fillna(False).to_numpy(dtype=bool)
        return values.mask(hit) if hit.any() else values
    raw = _as_array(values).copy()
    for i, value in enumerate(raw):
        if _is_token(value, texts, numbers):
            raw[i] = None
    return raw


def _is_token(value: Any, texts: frozenset[str], numbers: frozenset[float]) -> bool:
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return float(value) in numbers or str(value) in texts
    text = str(value).strip()
    if text in texts:
        return True
    if numbers:
        try:
            return float(text) in numbers
        except ValueError:
            return False
    return False


class _WithoutTokens(Mapping[str, Any]):
    """The columns a transform reads, each missing token read as missing, converted once."""

    def __init__(self, data: Columns, n: int, tokens: Mapping[str, MissingTokens]) -> None:
        self.data, self.n, self.tokens = data, n, tokens
        self._done: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        values = self.data.get(name)
        if values is None:
            raise KeyError(name)
        if name not in self.tokens:
            return values
        if name not in self._done:
            self._done[name] = without_tokens(values, self.n, self.tokens[name])
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data.keys())

    def __len__(self) -> int:
        return len(self.data.keys())
