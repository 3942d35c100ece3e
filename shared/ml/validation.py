"""Vectorized validation of a claims file against a feature spec.

The rules come from the spec alone (for the default spec, from the Claim model), so a file is held
to exactly the rules the API applies to one claim. Every input row ends either accepted, with typed
values, or rejected, with every reason it failed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from shared.feature_spec import ColumnKind, ColumnRole, ColumnSpec, FeatureSpec
from shared.ml.features import CALENDAR_NAMES, calendar_name, calendar_number, derive, fold_level

ROW_NUMBER: Final = "row_number"
REASON: Final = "reason"
_TRUE: Final = ("true", "t", "yes", "y", "1", "1.0")
_FALSE: Final = ("false", "f", "no", "n", "0", "0.0")
FUTURE_SLACK: Final = dt.timedelta(days=1)


@dataclass
class ValidationResult:
    accepted: pd.DataFrame  # typed values of the spec's kept columns (and the target)
    rejected: pd.DataFrame  # raw values as text, plus row_number and reason
    rule_counts: Counter[str] = field(default_factory=Counter)
    unknown_columns: list[str] = field(default_factory=list)
    rows_in: int = 0
    present: dict[str, int] = field(default_factory=dict)  # non-missing values per spec column


class _Reasons:
    """Collects per-row failure messages without a Python loop over rows."""

    def __init__(self, n: int) -> None:
        self.text = np.full(n, "", dtype=object)
        self.counts: Counter[str] = Counter()

    def add(
        self, mask: np.ndarray | pd.Series, rule: str, message: str | Callable[[np.ndarray], Any]
    ) -> None:
        """``message`` is one text for every failing row, or builds the texts of the failing rows
        from their positions: most rows pass, so their messages are never built."""
        where = np.flatnonzero(np.asarray(mask, dtype=bool))
        if len(where) == 0:
            return
        self.counts[rule] += len(where)
        if isinstance(message, str):
            self.text[where] = self.text[where] + message + "; "
        else:
            self.text[where] = self.text[where] + np.asarray(message(where), dtype=object) + "; "

    @property
    def failed(self) -> np.ndarray:
        return np.asarray(self.text != "", dtype=bool)

    def final(self) -> np.ndarray:
        return np.array([t[:-2] for t in self.text[self.failed]], dtype=object)


def _as_text(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        formatted: pd.Series = series.dt.strftime("%Y-%m-%d").astype("string")
        return formatted
    return series.astype("string").str.strip()


def _number_texts(values: pd.Series, where: np.ndarray) -> np.ndarray:
    return np.array([f"{v:g}" for v in values.to_numpy()[where]], dtype=object)


# Digits with at most one point inside, 15 digits at most: pandas reads such a number exactly as
# Arrow does (an integer below 2**53 and one exact power of ten), so Arrow may read them.
_PLAIN_DECIMAL: Final = r"^(?:[0-9]{1,15}|[0-9]+\.[0-9]+)$"
_PLAIN_DIGITS: Final = 16  # a plain decimal with its point is at most 15 digits and the point


def _text_numbers(text: pd.Series) -> pd.Series:
    """``pd.to_numeric(text, errors="coerce")`` as float64 (NaN where missing or not a number). When
    every value is a plain decimal, Arrow's cast reads them in C, three times faster than pandas'
    reader; one value of any other form (a sign, an exponent, 16 digits or more) sends the whole
    column to pandas, so the result is always pandas' own."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(text.dtype, pd.StringDtype) and text.dtype.storage == "pyarrow":
        values = pa.array(text.array)  # the column's own Arrow data, chunked or not
        plain = pc.and_(
            pc.match_substring_regex(values, _PLAIN_DECIMAL),
            pc.less_equal(pc.utf8_length(values), _PLAIN_DIGITS),
        )
        if values.null_count == len(values) or pc.all(pc.fill_null(plain, True)).as_py():
            numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
            return pd.Series(numbers, index=text.index, dtype="float64")
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _check_column(
    col: ColumnSpec, raw: pd.Series, spec: FeatureSpec, reasons: _Reasons, today: dt.date
) -> tuple[pd.Series, pd.Series]:
    """Typed values (NA where missing or invalid) and the mask of present values."""
    name = col.name
    text = _as_text(raw)
    missing = (raw.isna() | text.isna() | text.isin(spec.missing_tokens)).to_numpy()
    if col.missing_tokens:
        missing = missing | _column_tokens(col, raw, text)
    present = pd.Series(~missing, index=raw.index)
    if col.required:
        reasons.add(missing, f"{name}:required", f"{name}: missing")

    def shown(where: np.ndarray) -> np.ndarray:
        """The given values of the failing rows, quoted."""
        return np.asarray("'" + text.iloc[where].fillna("") + "'", dtype=object)

    if col.kind in (ColumnKind.NUMERIC, ColumnKind.INTEGER):
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            values = pd.to_numeric(raw.where(present), errors="coerce").astype("float64")
        else:
            values = _text_numbers(text.where(present))
        bad = present & values.isna()
        reasons.add(bad, f"{name}:not_a_number", lambda w: name + ": " + shown(w) + " is not a number")
        ok = present & ~bad
        if col.kind == ColumnKind.INTEGER:
            fractional = ok & (values % 1 != 0)
            reasons.add(
                fractional, f"{name}:not_whole", lambda w: name + ": " + shown(w) + " is not a whole number"
            )
            ok &= ~fractional
        if col.minimum is not None:
            below = ok & ((values <= col.minimum) if col.exclusive_minimum else (values < col.minimum))
            word = "above" if col.exclusive_minimum else "at least"
            reasons.add(
                below,
                f"{name}:minimum",
                lambda w: name + ": " + _number_texts(values, w) + f" must be {word} {col.minimum:g}",
            )
            ok &= ~below
        if col.maximum is not None:
            above = ok & (values > col.maximum)
            reasons.add(
                above,
                f"{name}:maximum",
                lambda w: name + ": " + _number_texts(values, w) + f" is above the maximum {col.maximum:g}",
            )
            ok &= ~above
        values = values.where(ok)
        return (values.round().astype("Int64") if col.kind == ColumnKind.INTEGER else values), present

    if col.kind == ColumnKind.BOOLEAN:
        lowered = text.str.lower()
        truth = lowered.isin(_TRUE)
        falsity = lowered.isin(_FALSE)
        bad = present & ~truth & ~falsity
        reasons.add(bad, f"{name}:not_a_boolean", lambda w: name + ": " + shown(w) + " is not true or false")
        values = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        values[present & truth] = True
        values[present & falsity] = False
        return values, present

    if col.kind == ColumnKind.DATE:
        if pd.api.types.is_datetime64_any_dtype(raw):
            parsed = pd.to_datetime(raw)
        else:
            parsed = pd.to_datetime(text.where(present), format=col.date_format or "ISO8601", errors="coerce")
        bad = present & parsed.isna()
        expected = col.date_format or "YYYY-MM-DD"
        reasons.add(
            bad, f"{name}:not_a_date", lambda w: name + ": " + shown(w) + f" is not a date ({expected})"
        )
        return parsed.where(present & ~bad).astype("datetime64[ns]"), present

    if col.kind == ColumnKind.ORDINAL:
        levels = col.levels or []
        by_fold = {fold_level(level): level for level in levels}
        canonical = _map_texts(text.where(present), lambda t: by_fold.get(fold_level(t)))
        bad = present & canonical.isna()
        reasons.add(
            bad,
            f"{name}:not_a_level",
            lambda w: name + ": " + shown(w) + f" is not one of the levels {', '.join(levels)}",
        )
        return canonical, present

    if col.kind in (ColumnKind.MONTH, ColumnKind.WEEKDAY):
        kind = col.kind.value
        names = CALENDAR_NAMES[kind]

        def named(t: str) -> str | None:
            number = calendar_number(kind, t)
            return None if number is None else calendar_name(kind, number)

        canonical = _map_texts(text.where(present), named)
        bad = present & canonical.isna()
        expected = f"{names[0][:3]}-{names[-1][:3]}, {names[0]}-{names[-1]} or 1-{len(names)}"
        reasons.add(
            bad, f"{name}:not_a_{kind}", lambda w: name + ": " + shown(w) + f" is not a {kind} ({expected})"
        )
        return canonical, present

    # Categorical, text and identifier columns stay strings.
    ok = present.copy()
    if col.allowed is not None:
        allowed = col.allowed
        outside = ok & ~text.isin(allowed)
        reasons.add(
            outside,
            f"{name}:not_allowed",
            lambda w: name + ": " + shown(w) + f" is not one of {', '.join(allowed)}",
        )
        ok &= ~outside
    if col.max_length is not None:
        too_long = ok & (text.str.len() > col.max_length)
        reasons.add(too_long, f"{name}:too_long", f"{name}: longer than {col.max_length} characters")
        ok &= ~too_long
    if col.pattern is not None:
        mismatched = ok & ~text.str.fullmatch(col.pattern).fillna(False).astype(bool)
        reasons.add(
            mismatched,
            f"{name}:pattern",
            lambda w: name + ": " + shown(w) + " has characters that are not allowed",
        )
        ok &= ~mismatched
    return text.where(ok).astype("string"), present


def _column_tokens(col: ColumnSpec, raw: pd.Series, text: pd.Series) -> np.ndarray:
    """Where the column's own missing tokens stand; in a numeric column a number token also matches
    its value written otherwise ("0" matches 0 and "0.0")."""
    tokens = [t.strip() for t in col.missing_tokens]
    hit = text.isin(tokens).fillna(False).to_numpy(dtype=bool)
    if col.kind in (ColumnKind.NUMERIC, ColumnKind.INTEGER):
        numbers = []
        for token in tokens:
            try:
                numbers.append(float(token))
            except ValueError:
                continue
        if numbers:
            if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
                values = pd.to_numeric(raw, errors="coerce").astype("float64")
            else:
                values = _text_numbers(text)
            hit = hit | values.isin(numbers).to_numpy(dtype=bool)
    return hit


def _map_texts(text: pd.Series, read: Callable[[str], str | None]) -> pd.Series:
    """``read`` of each text (NA where missing or where it answers None), once per distinct text."""
    codes, uniques = pd.factorize(text)
    mapped = np.array([read(str(u)) for u in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=text.index, dtype="string")


def validate_frame(
    raw: pd.DataFrame,
    spec: FeatureSpec,
    *,
    require_target: bool,
    row_offset: int = 0,
    today: dt.date | None = None,
) -> ValidationResult:
    raw = raw.reset_index(drop=True)
    n = len(raw)
    today = today or dt.datetime.now(dt.UTC).date()
    reasons = _Reasons(n)
    typed: dict[str, pd.Series] = {}
    present: dict[str, int] = {}
    known = {c.name for c in spec.columns} | {spec.target.column}
    unknown = [c for c in raw.columns if c not in known]

    for col in spec.columns:
        if col.name not in raw.columns:
            if col.required:
                reasons.add(
                    np.ones(n, dtype=bool),
                    f"{col.name}:column_missing",
                    f"{col.name}: required column is missing from the file",
                )
            present[col.name] = 0
            if col.role != ColumnRole.IGNORE:
                typed[col.name] = pd.Series(index=raw.index, dtype=_empty_dtype(col))
            continue
        values, is_present = _check_column(col, raw[col.name], spec, reasons, today)
        present[col.name] = int(is_present.sum())
        if col.role != ColumnRole.IGNORE:
            typed[col.name] = values

    # Assembled dates join the validated data as dates: the time axis (event_date) may be one.
    for assembled in spec.assembled_dates:
        days = derive(assembled, typed, n)
        stamps = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
        known = ~np.isnan(days)
        stamps[known] = days[known].astype(np.int64).astype("datetime64[D]")
        typed[assembled.name] = pd.Series(stamps, index=raw.index)

    for rule in spec.ordering_rules:
        lower, upper = typed.get(rule.lower), typed.get(rule.upper)
        if lower is None or upper is None:
            continue
        broken = (lower.notna() & upper.notna() & (lower > upper)).fillna(False).to_numpy(dtype=bool)
        reasons.add(
            broken, f"{rule.upper}:order", f"{rule.upper} must not be less than {rule.lower}: {rule.message}"
        )

    latest = pd.Timestamp(today + FUTURE_SLACK)
    for name in spec.not_in_future:
        if name in typed:
            future = (typed[name] > latest).fillna(False).to_numpy(dtype=bool)
            reasons.add(future, f"{name}:future", f"{name} lies in the future")

    ids = typed.get(spec.id_column)
    if ids is not None:
        duplicate = (ids.notna() & ids.duplicated(keep="first")).to_numpy(dtype=bool)
        if duplicate.any():
            first = pd.Series(np.arange(n), index=raw.index).groupby(ids).transform("min")
            first_row = (first + 1 + row_offset).astype("Int64").astype("string")
            reasons.add(
                duplicate,
                f"{spec.id_column}:duplicate",
                lambda w: spec.id_column + ": duplicate of row " + first_row.to_numpy(dtype=object)[w],
            )

    target_column = spec.target.column
    if require_target or target_column in raw.columns:
        if target_column not in raw.columns:
            reasons.add(
                np.ones(n, dtype=bool),
                f"{target_column}:column_missing",
                f"{target_column}: the label column is missing from the file",
            )
        else:
            label_text = _as_text(raw[target_column])
            positive = label_text.isin(spec.target.positive)
            negative = label_text.isin(spec.target.negative)
            label_missing = label_text.isna() | label_text.isin(spec.missing_tokens)
            reasons.add(
                label_missing.to_numpy(dtype=bool),
                f"{target_column}:required",
                f"{target_column}: missing label",
            )
            unknown_label = ~label_missing & ~positive & ~negative
            reasons.add(
                unknown_label.to_numpy(dtype=bool),
                f"{target_column}:not_a_label",
                lambda w: (
                    target_column
                    + ": '"
                    + label_text.iloc[w].fillna("").to_numpy(dtype=object)
                    + "' is not a known label"
                ),
            )
            typed[target_column] = positive.astype("int64")

    failed = reasons.failed
    accepted = pd.DataFrame(typed)[~failed].reset_index(drop=True)
    rejected = raw[failed].astype("string").reset_index(drop=True)
    rejected.insert(0, ROW_NUMBER, np.flatnonzero(failed) + 1 + row_offset)
    rejected[REASON] = reasons.final()
    return ValidationResult(accepted, rejected, reasons.counts, unknown, n, present)


def _empty_dtype(col: ColumnSpec) -> str:
    return {
        ColumnKind.NUMERIC: "float64",
        ColumnKind.INTEGER: "Int64",
        ColumnKind.BOOLEAN: "boolean",
        ColumnKind.DATE: "datetime64[ns]",
    }.get(col.kind, "string")


def quality_report(results: list[ValidationResult], spec: FeatureSpec, accepted_rows: int) -> dict[str, Any]:
    """Completeness, validity and uniqueness of the input, and one score in [0, 1].

    ``score = 0.5 * validity + 0.3 * mean completeness of the feature columns + 0.2 * uniqueness``,
    where validity is the share of rows accepted, completeness the share of non-missing values and
    uniqueness one minus the share of rows that repeat an earlier id.
    """
    rows_in = sum(r.rows_in for r in results)
    counts: Counter[str] = Counter()
    present: Counter[str] = Counter()
    for result in results:
        counts.update(result.rule_counts)
        present.update(result.present)
    duplicates = sum(v for k, v in counts.items() if k.endswith(":duplicate"))
    completeness = {c.name: (present[c.name] / rows_in if rows_in else 0.0) for c in spec.columns}
    feature_names = [c.name for c in spec.feature_columns]
    mean_completeness = float(np.mean([completeness[n] for n in feature_names])) if feature_names else 1.0
    validity = accepted_rows / rows_in if rows_in else 0.0
    uniqueness = 1.0 - duplicates / rows_in if rows_in else 0.0
    return {
        "rows_in": rows_in,
        "rows_accepted": accepted_rows,
        "rows_rejected": rows_in - accepted_rows,
        "validity": validity,
        "completeness": completeness,
        "mean_feature_completeness": mean_completeness,
        "duplicates": duplicates,
        "rejections_by_rule": dict(sorted(counts.items())),
        "unknown_columns": sorted({c for r in results for c in r.unknown_columns}),
        "score": 0.5 * validity + 0.3 * mean_completeness + 0.2 * uniqueness,
        "score_formula": "0.5*validity + 0.3*mean feature completeness + 0.2*uniqueness",
    }
