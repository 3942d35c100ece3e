"""Drift of captured claims and scores against the baseline statistics stored in the model artifact.

The baseline (:mod:`shared.ml.baseline`) keeps, per feature, decile bin edges and shares (numeric),
level frequencies (categorical) and the missing rate; and the same for the validation scores. Traffic
is accumulated into those very bins, chunk by chunk, so a million claims never sit in memory at once.

Per feature the report gives:

- **PSI** (population stability index) over the baseline's bins, with open outer bins (values beyond
  the baseline's range count in the first or last bin) and shares floored at :data:`EPSILON` so an
  empty bin costs a bounded amount instead of an infinite one. Categoricals get an ``other`` level for
  values the baseline never saw; booleans are two levels (the baseline's mean is the share of true).
- **KS** for numeric features, on the baseline's binned CDF: the baseline kept bin shares, not its
  rows, so the statistic is the largest CDF gap *at the bin edges*, a lower bound of the exact KS
  distance; its asymptotic p-value is therefore conservative.
- **chi-square** for categorical and boolean features: goodness of fit of the traffic's level counts
  to the baseline's shares (the baseline, tens of thousands of rows, is taken as the truth).
- the change of the **missing rate** (values absent, null or empty), and values of the wrong type.

With thousands of claims, KS and chi-square p-values call differences too small to matter
significant, so they are evidence for a reader, not the alarm. The alarm is on effect size: the PSI
and missing-rate thresholds of the CloudWatch alarms in :mod:`shared.alarms`, read from those
definitions, so "the drift job says drift" and "the alarm fires" are one decision.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

import numpy as np

from shared.alarms import (
    ALARMS,
    FEATURE_DRIFT_METRIC,
    MISSING_RATE_METRIC,
    MONITORING_NAMESPACE,
    PREDICTION_DRIFT_METRIC,
    AlarmDefinition,
)
from shared.feature_spec import ColumnKind, FeatureSpec
from shared.ml.features import (
    canonical_levels,
    derive,
    derived_inputs,
    missing_tokens_by_column,
    without_tokens,
)

EPSILON: Final = 1e-4  # floor of a bin's share in PSI: an empty bin adds a bounded, not infinite, term
OTHER_LEVEL: Final = "__other__"  # categorical values outside the baseline's levels
PREDICTION_FEATURE: Final = "risk_score"  # the name the prediction's drift goes by in the outputs
# Not alarmed (no CloudWatch alarm watches them), so tolerances of our own: a violation is written
# when more than this share of a feature's present values has the wrong type or an unseen level.
DATA_TYPE_TOLERANCE: Final = 0.01
UNSEEN_LEVEL_TOLERANCE: Final = 0.01
_TRUE: Final = frozenset({"true", "1", "yes", "y", "t", "1.0"})
_FALSE: Final = frozenset({"false", "0", "no", "n", "f", "0.0"})

CheckType = Literal[
    "data_type_check",
    "completeness_check",
    "baseline_drift_check",
    "missing_column_check",
    "extra_column_check",
    "categorical_values_check",
]


# ---------------------------------------------------------------------------------------------
# The statistics, on arrays.


def psi(baseline_shares: np.ndarray, current_shares: np.ndarray, epsilon: float = EPSILON) -> float:
    """Population stability index: sum of (current - baseline) * ln(current / baseline) per bin."""
    expected = np.maximum(np.asarray(baseline_shares, dtype=np.float64), epsilon)
    actual = np.maximum(np.asarray(current_shares, dtype=np.float64), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def binned_ks(
    baseline_shares: np.ndarray, current_counts: np.ndarray, baseline_rows: int
) -> tuple[float, float]:
    """KS distance between two binned distributions (largest CDF gap at the bin edges) and its
    asymptotic two-sample p-value."""
    current_rows = int(np.sum(current_counts))
    if current_rows == 0 or baseline_rows == 0:
        return 0.0, 1.0
    gap = np.abs(np.cumsum(current_counts / current_rows) - np.cumsum(baseline_shares))
    distance = float(np.max(gap)) if len(gap) else 0.0
    from scipy.special import kolmogorov  # the survival function of the KS limit; scipy.stats loads slowly

    effective = current_rows * baseline_rows / (current_rows + baseline_rows)
    return distance, float(kolmogorov(distance * math.sqrt(effective)))


def chi_square(baseline_shares: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Goodness of fit of the current counts to the baseline's shares: the statistic and p-value."""
    rows = float(np.sum(current_counts))
    if rows == 0 or len(current_counts) < 2:
        return 0.0, 1.0
    shares = np.maximum(np.asarray(baseline_shares, dtype=np.float64), EPSILON)
    expected = rows * shares / shares.sum()
    statistic = float(np.sum((current_counts - expected) ** 2 / expected))
    from scipy.special import chdtrc  # chi-square survival function

    return statistic, float(chdtrc(len(current_counts) - 1, statistic))


def bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Each value's baseline bin, as np.histogram counted it, with the outer bins left open."""
    return np.searchsorted(np.asarray(edges[1:-1], dtype=np.float64), values, side="right")


# ---------------------------------------------------------------------------------------------
# Converting captured values (JSON or CSV text) to arrays, fast when they are clean.


def as_floats(values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, int]:
    """Numbers (NaN where missing) and how many present values were not numbers."""
    try:
        # numpy reads numbers, numeric strings and None (as NaN) in C; anything else fails the batch.
        out = np.asarray(values, dtype=np.float64)
        if out.ndim == 1:
            return out, 0
    except (TypeError, ValueError):
        pass
    out = np.full(len(values), np.nan)
    wrong = 0
    for i, value in enumerate(values):
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            wrong += 1
            continue
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            wrong += 1
    return out, wrong


def as_days(values: Sequence[Any]) -> tuple[np.ndarray, int]:
    """ISO dates as datetime64[D] (NaT where missing) and how many present values were not dates."""
    try:
        return np.asarray(values, dtype="datetime64[D]"), 0
    except (TypeError, ValueError):
        pass
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[D]")
    wrong = 0
    for i, value in enumerate(values):
        if value is None or value == "":
            continue
        try:
            out[i] = np.datetime64(str(value)[:10], "D")
        except (TypeError, ValueError):
            wrong += 1
    return out, wrong


def _level_counts(counts: Mapping[Any, int]) -> tuple[dict[str, int], int]:
    """Present levels as text, and the number of missing values (None or empty)."""
    levels: dict[str, int] = {}
    missing = 0
    for value, count in counts.items():
        if value is None or value == "":
            missing += count
            continue
        level = str(value)
        levels[level] = levels.get(level, 0) + count
    return levels, missing


# ---------------------------------------------------------------------------------------------
# Results.


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    role: str  # feature, protected, derived or prediction
    kind: Literal["numeric", "categorical", "boolean"]
    rows: int  # values seen, missing ones included
    psi: float
    test: Literal["ks", "chi_square", "none"]
    statistic: float
    p_value: float
    baseline_missing_rate: float
    current_missing_rate: float
    wrong_type: int  # present values that were not of the feature's type
    unseen_share: float  # categorical: share of present values outside the baseline's levels
    bins: list[str]  # bin or level labels
    baseline_shares: list[float]
    current_shares: list[float]

    @property
    def missing_rate_increase(self) -> float:
        return self.current_missing_rate - self.baseline_missing_rate

    @property
    def present(self) -> int:
        return round(self.rows * (1.0 - self.current_missing_rate))


@dataclass(frozen=True)
class Violation:
    feature_name: str
    constraint_check_type: CheckType
    description: str


def _alarm_on(metric: str) -> AlarmDefinition:
    for definition in ALARMS:
        if definition.namespace == MONITORING_NAMESPACE and definition.metric == metric:
            return definition
    raise KeyError(metric)


def breaches(definition: AlarmDefinition, value: float) -> bool:
    """Whether a datapoint of ``value`` puts the CloudWatch alarm in ALARM (one period, one datapoint)."""
    if math.isnan(value):
        return False
    if definition.comparison == "GreaterThanThreshold":
        return value > definition.threshold
    if definition.comparison == "GreaterThanOrEqualToThreshold":
        return value >= definition.threshold
    return value < definition.threshold


FEATURE_DRIFT_ALARM: Final = _alarm_on(FEATURE_DRIFT_METRIC)
PREDICTION_DRIFT_ALARM: Final = _alarm_on(PREDICTION_DRIFT_METRIC)
MISSING_RATE_ALARM: Final = _alarm_on(MISSING_RATE_METRIC)


@dataclass(frozen=True)
class DriftReport:
    """Drift of one window of traffic against the model's baseline."""

    model_version: str
    claims: int  # captured claims read
    scored: int  # scores read from the responses
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    window: dict[str, str] = field(default_factory=dict)  # filled by the job: start, end
    notes: list[str] = field(default_factory=list)

    @property
    def feature_drift_psi_max(self) -> float:
        return max((f.psi for f in self.features if f.rows), default=0.0)

    @property
    def prediction_drift_psi(self) -> float:
        return self.prediction.psi if self.prediction is not None and self.prediction.rows else 0.0

    @property
    def missing_rate_increase_max(self) -> float:
        return max((f.missing_rate_increase for f in self.features if f.rows), default=0.0)

    def metric_values(self) -> dict[str, float]:
        """The three alarmed metrics, by their CloudWatch names."""
        return {
            FEATURE_DRIFT_METRIC: self.feature_drift_psi_max,
            PREDICTION_DRIFT_METRIC: self.prediction_drift_psi,
            MISSING_RATE_METRIC: self.missing_rate_increase_max,
        }

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.rows and breaches(FEATURE_DRIFT_ALARM, f.psi)]

    @property
    def features_missing_more(self) -> list[str]:
        return [
            f.name for f in self.features if f.rows and breaches(MISSING_RATE_ALARM, f.missing_rate_increase)
        ]

    @property
    def prediction_drifted(self) -> bool:
        return breaches(PREDICTION_DRIFT_ALARM, self.prediction_drift_psi)

    def alarms(self) -> list[str]:
        """Keys of the CloudWatch alarms this window's metrics would set off."""
        values = self.metric_values()
        return [
            definition.key
            for definition in (FEATURE_DRIFT_ALARM, PREDICTION_DRIFT_ALARM, MISSING_RATE_ALARM)
            if breaches(definition, values[definition.metric])
        ]

    @property
    def alarmed(self) -> bool:
        return bool(self.alarms())

    def violations(self) -> list[Violation]:
        """Model Monitor's violations: the alarmed checks first, then the data checks of our own."""
        out: list[Violation] = []
        if self.claims == 0:
            return out
        for f in self.features:
            if not f.rows:
                continue
            if breaches(FEATURE_DRIFT_ALARM, f.psi):
                test = f"KS {f.statistic:.3f}" if f.test == "ks" else f"chi-square {f.statistic:.1f}"
                out.append(
                    Violation(
                        f.name,
                        "baseline_drift_check",
                        f"PSI {f.psi:.3f} exceeds {FEATURE_DRIFT_ALARM.threshold:g} "
                        f"({test}, p={f.p_value:.2g}) over {f.present} values",
                    )
                )
            if breaches(MISSING_RATE_ALARM, f.missing_rate_increase):
                absent = f.current_missing_rate >= 1.0
                out.append(
                    Violation(
                        f.name,
                        "missing_column_check" if absent else "completeness_check",
                        f"missing in {f.current_missing_rate:.1%} of claims against "
                        f"{f.baseline_missing_rate:.1%} in training (alarm above "
                        f"+{MISSING_RATE_ALARM.threshold:.0%} points)",
                    )
                )
        if self.prediction is not None and self.prediction_drifted:
            p = self.prediction
            out.append(
                Violation(
                    p.name,
                    "baseline_drift_check",
                    f"risk score PSI {p.psi:.3f} exceeds {PREDICTION_DRIFT_ALARM.threshold:g} "
                    f"(KS {p.statistic:.3f}, p={p.p_value:.2g}) over {p.rows} scores",
                )
            )
        for f in self.features:
            if f.present and f.wrong_type / max(f.present + f.wrong_type, 1) > DATA_TYPE_TOLERANCE:
                out.append(
                    Violation(f.name, "data_type_check", f"{f.wrong_type} values are not of type {f.kind}")
                )
            if f.kind == "categorical" and f.unseen_share > UNSEEN_LEVEL_TOLERANCE:
                out.append(
                    Violation(
                        f.name,
                        "categorical_values_check",
                        f"{f.unseen_share:.1%} of values are levels the training data did not have",
                    )
                )
        return out

    def constraint_violations(self) -> dict[str, Any]:
        """The ``constraint_violations.json`` document, in Model Monitor's structure."""
        return {"violations": [asdict(v) for v in self.violations()]}

    def to_dict(self) -> dict[str, Any]:
        def feature(f: FeatureDrift) -> dict[str, Any]:
            return asdict(f) | {"missing_rate_increase": f.missing_rate_increase}

        return {
            "model_version": self.model_version,
            "window": dict(self.window),
            "claims": self.claims,
            "scored": self.scored,
            "metrics": self.metric_values(),
            "thresholds": {
                d.metric: {"alarm": d.key, "threshold": d.threshold, "comparison": d.comparison}
                for d in (FEATURE_DRIFT_ALARM, PREDICTION_DRIFT_ALARM, MISSING_RATE_ALARM)
            },
            "alarms": self.alarms(),
            "drifted_features": self.drifted_features,
            "features_missing_more": self.features_missing_more,
            "features": [feature(f) for f in self.features],
            "prediction": feature(self.prediction) if self.prediction is not None else None,
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------
# Accumulators: one per monitored feature, fed chunk by chunk.


def _edge_labels(edges: Sequence[float]) -> list[str]:
    if len(edges) < 2:
        return [f"{edges[0]:.4g}" if edges else "all"]
    inner = [f"[{a:.4g}, {b:.4g})" for a, b in itertools.pairwise(edges)]
    inner[0] = f"< {edges[1]:.4g}"
    inner[-1] = f">= {edges[-2]:.4g}"
    return inner


class _Counts:
    """Binned counts of a feature over the window, with its missing and wrongly typed values;
    merged across the worker processes that read the capture files."""

    counts: np.ndarray
    rows: int
    missing: int
    wrong_type: int

    def merge(self, other: _Counts) -> None:
        self.counts += other.counts
        self.rows += other.rows
        self.missing += other.missing
        self.wrong_type += other.wrong_type


class NumericAccumulator(_Counts):
    def __init__(self, name: str, role: str, stats: Mapping[str, Any]) -> None:
        self.name, self.role = name, role
        self.edges: list[float] = list(stats.get("bin_edges", []))
        self.baseline_shares = np.asarray(stats.get("bin_shares", []), dtype=np.float64)
        self.baseline_missing_rate = float(stats.get("missing_rate", 0.0))
        self.baseline_present = round(float(stats.get("count", 0)) * (1.0 - self.baseline_missing_rate))
        self.counts = np.zeros(len(self.baseline_shares), dtype=np.int64)
        self.rows = self.missing = self.wrong_type = 0

    def add(self, values: np.ndarray, wrong_type: int = 0) -> None:
        present = values[~np.isnan(values)]
        self.rows += len(values)
        self.missing += len(values) - len(present) - wrong_type  # a wrong value is present, not missing
        self.wrong_type += wrong_type
        if len(self.counts) and len(present):
            self.counts += np.bincount(bin_index(present, self.edges), minlength=len(self.counts))

    def result(self) -> FeatureDrift:
        present = int(self.counts.sum())
        current = self.counts / present if present else np.zeros(len(self.counts))
        value = psi(self.baseline_shares, current) if present and len(self.counts) else 0.0
        distance, p_value = binned_ks(self.baseline_shares, self.counts, self.baseline_present)
        return FeatureDrift(
            name=self.name,
            role=self.role,
            kind="numeric",
            rows=self.rows,
            psi=value,
            test="ks",
            statistic=distance,
            p_value=p_value,
            baseline_missing_rate=self.baseline_missing_rate,
            current_missing_rate=self.missing / self.rows if self.rows else 0.0,
            wrong_type=self.wrong_type,
            unseen_share=0.0,
            bins=_edge_labels(self.edges),
            baseline_shares=[float(s) for s in self.baseline_shares],
            current_shares=[float(s) for s in current],
        )


class LevelAccumulator(_Counts):
    """Categorical levels (with an ``other`` level) or a boolean's false/true."""

    def __init__(self, name: str, role: str, stats: Mapping[str, Any], boolean: bool) -> None:
        self.name, self.role, self.boolean = name, role, boolean
        if boolean:  # the baseline keeps a boolean as a 0/1 number: its mean is the share of true
            true_share = float(stats.get("mean", 0.0))
            self.levels, shares = ["false", "true"], [1.0 - true_share, true_share]
        else:
            frequencies: Mapping[str, float] = stats.get("frequencies", {})
            self.levels = [*frequencies, OTHER_LEVEL]
            known = float(sum(frequencies.values()))
            shares = [*frequencies.values(), max(0.0, 1.0 - known)]  # levels beyond the kept ones
        self.baseline_shares = np.asarray(shares, dtype=np.float64)
        self.baseline_missing_rate = float(stats.get("missing_rate", 0.0))
        self.position = {level: i for i, level in enumerate(self.levels)}
        self.counts = np.zeros(len(self.levels), dtype=np.int64)
        self.rows = self.missing = self.wrong_type = 0

    def add(self, values: Sequence[Any]) -> None:
        try:
            counted = Counter(values)
        except TypeError:  # a list or an object where a level belongs: counted by its text
            counted = Counter(v if isinstance(v, str | int | float | bool | None) else str(v) for v in values)
        levels, missing = _level_counts(counted)
        self.missing += missing
        self.rows += missing + sum(levels.values())
        for level, count in levels.items():
            if self.boolean:
                text = level.strip().lower()
                if text in _TRUE:
                    self.counts[1] += count
                elif text in _FALSE:
                    self.counts[0] += count
                else:
                    self.wrong_type += count
            else:
                self.counts[self.position.get(level, len(self.levels) - 1)] += count

    def result(self) -> FeatureDrift:
        present = int(self.counts.sum())
        current = self.counts / present if present else np.zeros(len(self.counts))
        statistic, p_value = chi_square(self.baseline_shares, self.counts)
        unseen = 0.0
        if not self.boolean and present:
            unseen = max(0.0, float(current[-1] - self.baseline_shares[-1]))
        return FeatureDrift(
            name=self.name,
            role=self.role,
            kind="boolean" if self.boolean else "categorical",
            rows=self.rows,
            psi=psi(self.baseline_shares, current) if present else 0.0,
            test="chi_square",
            statistic=statistic,
            p_value=p_value,
            baseline_missing_rate=self.baseline_missing_rate,
            current_missing_rate=self.missing / self.rows if self.rows else 0.0,
            wrong_type=self.wrong_type,
            unseen_share=unseen,
            bins=list(self.levels),
            baseline_shares=[float(s) for s in self.baseline_shares],
            current_shares=[float(s) for s in current],
        )


class DriftAccumulator:
    """Feeds captured claims and scores, chunk by chunk, into the baseline's bins."""

    def __init__(
        self,
        spec: FeatureSpec,
        baseline: Mapping[str, Any],
        model_version: str = "",
        unmonitored: Iterable[str] = (),
    ) -> None:
        """``unmonitored``: raw fields the traffic does not carry (the capture drops or pseudonymizes
        personal fields); they and the derived features built on them are left out."""
        self.spec, self.model_version = spec, model_version
        self.numeric: dict[str, NumericAccumulator] = {}
        self.levels: dict[str, LevelAccumulator] = {}
        left_out = frozenset(unmonitored)
        self.assembled = {d.name: d for d in spec.assembled_dates}
        self.derived = [
            d
            for d in spec.derived
            if d.name in baseline.get("features", {}) and not left_out & set(derived_inputs(spec, d))
        ]
        left_out |= {d.name for d in spec.derived} - {d.name for d in self.derived}
        features = {k: v for k, v in baseline.get("features", {}).items() if k not in left_out}
        self.order = list(features)
        kinds = {c.name: c.kind for c in spec.columns}
        for name, stats in features.items():
            role = str(stats.get("role", "feature"))
            kind = kinds.get(name)
            if stats.get("kind") == "categorical":
                self.levels[name] = LevelAccumulator(name, role, stats, boolean=False)
            elif kind == ColumnKind.BOOLEAN:
                self.levels[name] = LevelAccumulator(name, role, stats, boolean=True)
            else:
                self.numeric[name] = NumericAccumulator(name, role, stats)
        prediction = baseline.get("prediction")
        self.prediction = (
            NumericAccumulator(PREDICTION_FEATURE, "prediction", prediction) if prediction else None
        )
        # The raw columns to read: monitored numeric ones and the inputs of derived features.
        needed = [n for n in self.numeric if n in kinds]
        needed += [i for d in self.derived for i in derived_inputs(spec, d)]
        # Month and weekday names go to the derived features as given (they read names and numbers).
        named = (ColumnKind.MONTH, ColumnKind.WEEKDAY)
        self.float_columns = [n for n in dict.fromkeys(needed) if kinds[n] not in (ColumnKind.DATE, *named)]
        self.date_columns = [n for n in dict.fromkeys(needed) if kinds[n] == ColumnKind.DATE]
        self.named_columns = [n for n in dict.fromkeys(needed) if kinds[n] in named]
        self.missing_tokens = missing_tokens_by_column(spec)  # read as missing, as validation does
        # Bands and month or weekday names are counted in the spelling of the validated training data.
        spelled = (ColumnKind.ORDINAL, ColumnKind.MONTH, ColumnKind.WEEKDAY)
        self.spelled = {c.name: c for c in spec.columns if c.kind in spelled}
        self.claims = self.scored = 0

    def _column(self, records: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
        values: Any = [r.get(name) for r in records]
        tokens = self.missing_tokens.get(name)
        if tokens is not None:
            values = without_tokens(values, len(values), tokens)
        if name in self.spelled:
            values = canonical_levels(self.spelled[name], values, len(values))
        return values if isinstance(values, list) else list(values)

    def add_records(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Claims as the endpoint received them (JSON-ready dicts)."""
        n = len(records)
        if n == 0:
            return
        self.claims += n
        columns: dict[str, np.ndarray] = {}
        for name in self.float_columns:
            columns[name], wrong = as_floats(self._column(records, name))
            if name in self.numeric:
                self.numeric[name].add(columns[name], wrong)
        for name in self.date_columns:
            columns[name], _ = as_days(self._column(records, name))
        for name in self.named_columns:
            columns[name] = np.asarray(self._column(records, name), dtype=object)
        for derived in self.derived:
            self.numeric[derived.name].add(derive(derived, columns, n, assembled=self.assembled))
        for name, accumulator in self.levels.items():
            accumulator.add(self._column(records, name))

    def add_scores(self, scores: Sequence[float] | np.ndarray) -> None:
        values, wrong = as_floats(scores)
        self.scored += len(values)
        if self.prediction is not None:
            self.prediction.add(values, wrong)

    def merge(self, other: DriftAccumulator) -> None:
        """Add the counts of an accumulator over other traffic (another worker's share of the files)."""
        for name, numeric in self.numeric.items():
            numeric.merge(other.numeric[name])
        for name, levels in self.levels.items():
            levels.merge(other.levels[name])
        if self.prediction is not None and other.prediction is not None:
            self.prediction.merge(other.prediction)
        self.claims += other.claims
        self.scored += other.scored

    def report(self) -> DriftReport:
        results = {name: a.result() for name, a in self.numeric.items()}
        results |= {name: a.result() for name, a in self.levels.items()}
        features = [results[name] for name in self.order]
        return DriftReport(
            model_version=self.model_version,
            claims=self.claims,
            scored=self.scored,
            features=features,
            prediction=self.prediction.result() if self.prediction is not None else None,
        )
