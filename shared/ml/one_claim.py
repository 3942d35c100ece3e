"""One claim encoded without the batch machinery: the model server's usual request is a single claim.

:meth:`shared.ml.features.FittedEncoder.transform` is written for columns of many rows: per column it
builds object arrays, converts them and writes a matrix column, about 80 µs for one claim of the
built-in spec, most of it numpy's fixed cost per call. :class:`OneClaimEncoder` reads the record's
values one by one in plain Python into the same float32 row, applying the transform's own rules to
each value. Anything outside the common shapes (a value of another type, a date not written
``YYYY-MM-DD``, a value the transform would refuse) gives None, and the caller encodes with the
transform, so errors and corner cases stay exactly the transform's. ``tests/unit/test_one_claim.py``
holds the two to the same bits on many varied claims.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

import numpy as np

from shared.feature_spec import DerivedFeature
from shared.ml.features import _FALSE, _TRUE, FittedEncoder, _tokens, derive

_ISO_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EPOCH: Final = dt.date(1970, 1, 1).toordinal()
_NAN: Final = float("nan")

# A derived feature's value from the record and its fields already read as numbers and dates.
_Reader: TypeAlias = Callable[[Mapping[str, Any], dict[str, float], dict[str, "dt.date | None"]], float]


class _Unusual(Exception):
    """A value the fast path leaves to the transform."""


def _number(value: Any) -> float:
    """:func:`shared.ml.features.to_float` for one value."""
    if value is None or value == "":
        return _NAN
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Unusual  # the transform refuses a bool; other types are rare enough to leave to it
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise _Unusual from None


def _flag(value: Any) -> float:
    """:func:`shared.ml.features.to_bool_float` for one value."""
    if value is None:
        return _NAN
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, float) and value != value:  # noqa: PLR0124 - NaN is not equal to itself
        return _NAN
    if not isinstance(value, int | float | str):
        raise _Unusual
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    if text:
        raise _Unusual  # the transform names the column in its error
    return _NAN


def _text(value: Any) -> str | None:
    """:func:`shared.ml.features.to_str` for one value."""
    if value is None or (isinstance(value, float) and value != value):  # noqa: PLR0124
        return None
    if not isinstance(value, int | float | str):
        raise _Unusual
    return str(value)


def _date(value: Any) -> dt.date | None:
    """A date as :func:`shared.ml.features.to_days` reads it, when written ``YYYY-MM-DD``."""
    if value is None or value == "" or (isinstance(value, float) and value != value):  # noqa: PLR0124
        return None
    if not isinstance(value, str) or _ISO_DATE.fullmatch(value) is None:
        raise _Unusual  # numpy reads other spellings (and refuses some): left to it
    try:
        return dt.date(int(value[:4]), int(value[5:7]), int(value[8:]))
    except ValueError:
        raise _Unusual from None


def _days(date: dt.date | None) -> float:
    return _NAN if date is None else float(date.toordinal() - _EPOCH)


class OneClaimEncoder:
    """The encoder's columns for one record, in its order: numbers, flags, derived features, one-hot
    levels, then the description's words. A field several columns read is converted once, as the
    transform converts a column once."""

    def __init__(self, encoder: FittedEncoder) -> None:
        self.encoder = encoder
        self.width = len(encoder.columns)
        by_date = {"days_between", "month", "weekday"}
        self._number_fields = list(
            dict.fromkeys(
                [*encoder.numeric, *(n for d in encoder.derived if d.op == "ratio" for n in d.inputs)]
            )
        )
        self._date_fields = list(
            dict.fromkeys(n for d in encoder.derived if d.op in by_date for n in d.inputs)
        )
        self._derived = [self._derived_reader(feature) for feature in encoder.derived]
        self._levels = [(name, list(levels)) for name, levels in encoder.categories.items()]
        self._words = [
            (name, {token: k for k, token in enumerate(tokens)}, len(tokens))
            for name, tokens in encoder.vocabulary.items()
        ]

    @staticmethod
    def _derived_reader(feature: DerivedFeature) -> _Reader:
        inputs = list(feature.inputs)
        first = inputs[0]
        if feature.op == "ratio":
            second = inputs[1]

            def ratio(
                _: Mapping[str, Any], numbers: dict[str, float], __: dict[str, dt.date | None]
            ) -> float:
                num, den = numbers[first], numbers[second]
                return num / den if den > 0 else _NAN  # False for NaN, as np.where's condition

            return ratio
        if feature.op == "days_between":
            second = inputs[1]

            def days_between(
                _: Mapping[str, Any], __: dict[str, float], dates: dict[str, dt.date | None]
            ) -> float:
                return _days(dates[second]) - _days(dates[first])

            return days_between
        if feature.op in ("month", "weekday"):
            weekday = feature.op == "weekday"

            def calendar(
                _: Mapping[str, Any], __: dict[str, float], dates: dict[str, dt.date | None]
            ) -> float:
                date = dates[first]
                if date is None:
                    return _NAN
                return float(date.weekday() if weekday else date.month)  # Monday = 0, as the transform

            return calendar

        # log1p, and any operation added later: numpy's own function on one-value columns, so the
        # rounding is numpy's.
        def by_transform(
            record: Mapping[str, Any], _: dict[str, float], __: dict[str, dt.date | None]
        ) -> float:
            try:
                return float(derive(feature, {name: [record.get(name)] for name in inputs}, 1)[0])
            except ValueError:  # InvalidFeatureValue: the transform raises it with its message
                raise _Unusual from None

        return by_transform

    def encode(self, record: Mapping[str, Any]) -> np.ndarray | None:
        """The (1, columns) float32 matrix the transform gives for ``[record]``, or None where the
        transform must decide."""
        try:
            values = self._values(record)
        except _Unusual:
            return None
        with np.errstate(over="ignore"):  # a number beyond float32 becomes inf, then missing below
            row = np.array([values], dtype=np.float32)
        row[~np.isfinite(row)] = np.nan
        return row

    def _values(self, record: Mapping[str, Any]) -> list[float]:
        encoder = self.encoder
        numbers = {name: _number(record.get(name)) for name in self._number_fields}
        dates = {name: _date(record.get(name)) for name in self._date_fields}
        values = [numbers[name] for name in encoder.numeric]
        values += [_flag(record.get(name)) for name in encoder.boolean]
        values += [read(record, numbers, dates) for read in self._derived]
        for name, levels in self._levels:
            text = _text(record.get(name))  # None (missing) equals no level
            values += [1.0 if level == text else 0.0 for level in levels]
        for name, position, count in self._words:
            words = [0.0] * count  # a missing description has none of the words
            for token in _tokens(_text(record.get(name))):
                if (k := position.get(token)) is not None:
                    words[k] = 1.0
            values += words
        if len(values) != self.width:  # pragma: no cover - the encoder's columns are these, in order
            raise _Unusual
        return values
