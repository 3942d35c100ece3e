"""One claim encoded without the batch machinery: the model server's usual request is a single claim.

:meth:`shared.ml.features.FittedEncoder.transform` is written for columns of many rows: per column it
builds object arrays, converts them and writes a matrix column, about 80 µs for one claim of the
built-in spec, most of it numpy's fixed cost per call. :class:`OneClaimEncoder` reads the record's
values one by one in plain Python into the same float32 row, applying the transform's own rules to
each value. Anything outside the common shapes (a value of another type, a date not written
``YYYY-MM-DD``, a value the transform would refuse) gives None, and the caller encodes with the
transform, so errors and corner cases stay exactly the transform's. Ordinal bands, month and weekday
names and missing tokens are read by the transform's own per-value rules; a feature built on an
assembled date (``date_from_parts``) is computed by the transform's function on one-value columns.
``tests/unit/test_one_claim.py`` holds the two to the same bits on many varied claims.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

import numpy as np

from shared.feature_spec import DerivedFeature
from shared.ml.features import (
    _FALSE,
    _TRUE,
    FittedEncoder,
    _is_token,
    _tokens,
    calendar_number,
    derive,
    derived_inputs,
    fold_level,
)

_ISO_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EPOCH: Final = dt.date(1970, 1, 1).toordinal()
_NAN: Final = float("nan")

# A field's value as the transform reads it (a missing token as None).
_Get: TypeAlias = Callable[[str], Any]
# A derived feature's value from the record's fields and those already read as numbers and dates.
_Reader: TypeAlias = Callable[[_Get, dict[str, float], dict[str, "dt.date | None"]], float]


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
        self._assembled = {d.name: d for d in encoder.spec.assembled_dates}
        self._number_fields = list(
            dict.fromkeys(
                [*encoder.numeric, *(n for d in encoder.derived if d.op == "ratio" for n in d.inputs)]
            )
        )
        self._date_fields = list(
            dict.fromkeys(
                n
                for d in encoder.derived
                if d.op in by_date and not self._assembled.keys() & set(d.inputs)
                for n in d.inputs
            )
        )
        self._derived = [self._derived_reader(feature) for feature in encoder.derived]
        self._levels = [(name, list(levels)) for name, levels in encoder.categories.items()]
        self._ordinals = [
            (name, {fold_level(level): float(k) for k, level in enumerate(levels)})
            for name, levels in encoder.ordinals.items()
        ]
        self._calendar = list(encoder.calendar.items())
        self._missing = encoder.missing_tokens()
        self._words = [
            (name, {token: k for k, token in enumerate(tokens)}, len(tokens))
            for name, tokens in encoder.vocabulary.items()
        ]

    def _derived_reader(self, feature: DerivedFeature) -> _Reader:
        inputs = list(feature.inputs)
        first = inputs[0]
        if self._assembled.keys() & set(inputs):
            return self._by_transform(feature)
        if feature.op == "ratio":
            second = inputs[1]

            def ratio(_: _Get, numbers: dict[str, float], __: dict[str, dt.date | None]) -> float:
                num, den = numbers[first], numbers[second]
                return num / den if den > 0 else _NAN  # False for NaN, as np.where's condition

            return ratio
        if feature.op == "days_between":
            second = inputs[1]

            def days_between(_: _Get, __: dict[str, float], dates: dict[str, dt.date | None]) -> float:
                return _days(dates[second]) - _days(dates[first])

            return days_between
        if feature.op in ("month", "weekday"):
            weekday = feature.op == "weekday"

            def calendar(_: _Get, __: dict[str, float], dates: dict[str, dt.date | None]) -> float:
                date = dates[first]
                if date is None:
                    return _NAN
                return float(date.weekday() if weekday else date.month)  # Monday = 0, as the transform

            return calendar
        return self._by_transform(feature)

    def _by_transform(self, feature: DerivedFeature) -> _Reader:
        """log1p, features on assembled dates, and any operation added later: the transform's own
        function on one-value columns, so the rounding is numpy's."""
        fields = derived_inputs(self.encoder.spec, feature)
        assembled = self._assembled

        def by_transform(get: _Get, _: dict[str, float], __: dict[str, dt.date | None]) -> float:
            try:
                return float(
                    derive(feature, {name: [get(name)] for name in fields}, 1, assembled=assembled)[0]
                )
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

    def _getter(self, record: Mapping[str, Any]) -> _Get:
        """How the record's fields are read: as given, or with missing tokens as None (the
        transform's reading, value by value)."""
        if not self._missing:
            return record.get
        missing = self._missing

        def get(name: str) -> Any:
            value = record.get(name)
            tokens = missing.get(name)
            return None if tokens is not None and _is_token(value, *tokens) else value

        return get

    def _values(self, record: Mapping[str, Any]) -> list[float]:
        encoder = self.encoder
        get = self._getter(record)
        numbers = {name: _number(get(name)) for name in self._number_fields}
        dates = {name: _date(get(name)) for name in self._date_fields}
        values = [numbers[name] for name in encoder.numeric]
        values += [_flag(get(name)) for name in encoder.boolean]
        for name, position_of in self._ordinals:
            level = _text(get(name))
            values.append(_NAN if level is None else position_of.get(fold_level(level), _NAN))
        for name, kind in self._calendar:
            text = _text(get(name))
            number = None if text is None else calendar_number(kind, text)
            values.append(_NAN if number is None else float(number))
        values += [read(get, numbers, dates) for read in self._derived]
        for name, levels in self._levels:
            text = _text(get(name))  # None (missing) equals no level
            values += [1.0 if level == text else 0.0 for level in levels]
        for name, position, count in self._words:
            words = [0.0] * count  # a missing description has none of the words
            for token in _tokens(_text(get(name))):
                if (k := position.get(token)) is not None:
                    words[k] = 1.0
            values += words
        if len(values) != self.width:  # pragma: no cover - the encoder's columns are these, in order
            raise _Unusual
        return values
